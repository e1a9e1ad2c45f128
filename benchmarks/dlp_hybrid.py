"""Benchmark: what the DLP engines send to Cloud DLP, and the quota and volume that implies.

Corpus: the one ``benchmarks/redaction.py`` uses (``--events`` synthetic gateway events of two
~1 KB texts, ~20% of events with PII, every text with hard negatives). Both engines run
against the in-process fake of DeidentifyContent (``tests/support/dlp_fake.py``; DLP has no
emulator), which enforces DLP's per-request limits and records every request, in batches of
``--batch-events`` events per engine call, as ``RedactPii`` calls the engine with up to
``--redaction_batch_size`` events (fewer when a bundle ends first).

Prints, for ``dlp`` (every text with the inspect template) and ``hybrid`` (the texts the
offline engine found something in with the template, every other text for names and street
addresses only): the share of texts and of bytes sent to DLP (and the share sent for names
and addresses only), the requests made and their mean size, and projected from these, the
requests per minute and GB per 30-day month at 1,000 and 5,000 events/s, to compare with DLP's
documented quotas: 600 requests/min per region through the global endpoint, 100/min per
region through a regional (REP) endpoint, 10,000/min per project. Bytes are UTF-8 bytes of
the texts sent (the offline engine's output: its placeholders are slightly longer than most
values they replace).

    python benchmarks/dlp_hybrid.py [--events 5000] [--seed 1] [--batch-events 64 232 1856]
        [--price-per-gb USD]
"""

from __future__ import annotations

import argparse
import pathlib
import random
import statistics
import sys
from collections.abc import Sequence

# The fake lives with the tests (it is test tooling, not shipped code).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from pipelines.local.texts import make_event, new_faker
from tests.support.dlp_fake import DEIDENTIFY_TEMPLATE, INSPECT_TEMPLATE, PROJECT, FakeDlp
from transforms.pii.dlp import DlpEngine, HybridEngine
from transforms.pii.ratelimit import RateLimiter

SECONDS_PER_MONTH = 30 * 24 * 3600
QUOTAS = (
    ("per region, global endpoint", 600),
    ("per region, REP endpoint", 100),
    ("per project", 10_000),
)


def run_engine(engine_class, texts_per_call: list[list[str]]) -> dict[str, float]:
    """Runs one engine over the batches against a fresh fake; returns what it sent."""
    with FakeDlp() as fake:
        engine = engine_class(
            project=PROJECT,
            inspect_template=INSPECT_TEMPLATE,
            deidentify_template=DEIDENTIFY_TEMPLATE,
            endpoint=fake.endpoint,
            limiter=RateLimiter(60_000_000),
        )
        for texts in texts_per_call:
            engine.redact(texts)
        stats = engine.stats
        rejected = sum(r.status != "OK" for r in fake.requests)
        sizes = [r.request_bytes for r in fake.requests]
    return {
        "texts": stats.texts,
        "bytes": stats.bytes,
        "texts_sent": stats.texts_sent,
        "names_texts_sent": stats.names_texts_sent,
        "bytes_sent": stats.bytes_sent,
        "requests": stats.requests,
        "rejected": rejected,
        "mean_request_bytes": statistics.mean(sizes) if sizes else 0.0,
        "max_request_bytes": max(sizes, default=0),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pii-share", type=float, default=0.2)
    parser.add_argument("--batch-events", type=int, nargs="+", default=[64, 232, 1856])
    parser.add_argument(
        "--price-per-gb",
        type=float,
        help="USD per GB of content-method de-identification, to print a monthly cost.",
    )
    args = parser.parse_args(argv)

    rng, fake = random.Random(args.seed), new_faker()
    events = [make_event(rng, fake, pii_share=args.pii_share) for _ in range(args.events)]
    texts = [t for e in events for t in (e.prompt.text, e.response.text)]
    bytes_per_event = sum(len(t.encode()) for t in texts) / len(events)
    print(
        f"corpus: {len(events)} events, {bytes_per_event:,.0f} bytes of text per event, "
        f"seed {args.seed}, pii share {args.pii_share}"
    )
    quotas = "; ".join(f"{quota:,}/min {name}" for name, quota in QUOTAS)
    print(f"documented quotas: {quotas}")
    for label, engine_class in (("dlp", DlpEngine), ("hybrid", HybridEngine)):
        print()
        for batch_events in args.batch_events:
            calls = [
                texts[i : i + 2 * batch_events] for i in range(0, len(texts), 2 * batch_events)
            ]
            sent = run_engine(engine_class, calls)
            if batch_events == args.batch_events[0]:
                print(
                    f"{label}: sends {sent['texts_sent'] / sent['texts']:.1%} of texts "
                    f"({sent['names_texts_sent'] / sent['texts']:.1%} for names and addresses "
                    f"only), {sent['bytes_sent'] / sent['bytes']:.1%} of bytes "
                    f"({sent['bytes_sent']:,} of {sent['bytes']:,})"
                )
            per_event = sent["requests"] / len(events)
            projections = []
            for rate in (1_000, 5_000):
                per_minute = per_event * rate * 60
                gb_month = sent["bytes_sent"] / len(events) * rate * SECONDS_PER_MONTH / 1e9
                cost = f" (${gb_month * args.price_per_gb:,.0f})" if args.price_per_gb else ""
                projections.append(
                    f"{rate:,}/s: {per_minute:,.0f} req/min, {gb_month:,.0f} GB/month{cost}"
                )
            print(
                f"  {batch_events:>5} events per call: {sent['requests']:>4} requests "
                f"({sent['rejected']} rejected), mean {sent['mean_request_bytes'] / 1e3:,.0f} KB, "
                f"max {sent['max_request_bytes'] / 1e3:,.0f} KB | " + " | ".join(projections)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
