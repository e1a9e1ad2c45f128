"""Synthetic gateway traffic: a library, a CLI and a rate-limited streaming source.

Events look like the gateway's: realistic prompts and responses (``pipelines.local.texts``), a
share of them carrying PII, plus the dirt production sends: exact duplicates (redeliveries),
late events (event time minutes in the past), and malformed events of every dead-letter kind
(their payloads carry PII too, to prove dead letters are redacted).

CLI::

    python -m pipelines.local.loadgen --events 10000 --output events.jsonl [--seed 7]
    python -m pipelines.local.loadgen --pubsub_topic projects/P/topics/T --rate 1000 \
        --duration_s 120 --burst_factor 5 --burst_every_s 60 --burst_s 10

The first writes JSON lines (one event per line) for ``pipelines.backfill``. The second
publishes to Pub/Sub in real time: ``--rate`` messages/s, ``--burst_factor`` times that for
``--burst_s`` seconds every ``--burst_every_s`` seconds, each message with attributes
``event_id`` and ``event_time`` (``pipelines.io.sources.pubsub``). In a local streaming run,
``--source synthetic`` (``pipelines.local.source``) serves the same traffic at a fixed rate for a
fixed duration, then ends.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import uuid
from typing import NamedTuple

import msgspec

__all__ = ["EventGenerator", "Generated", "LoadProfile", "main"]

VALID = "valid"
DUPLICATE = "duplicate"
LATE = "late"
MALFORMED = "malformed"

MODELS = ("gpt-4o-mini", "gpt-4o", "gemini-2.5-flash", "gemini-2.5-pro", "claude-sonnet-4")
REGIONS = ("us", "eu", "asia")
TENANTS = ("acme", "globex", "initech-eu")
FLAGS = ("pii_redacted", "content_filtered", "jailbreak_suspected", "prompt_injection_suspected")
# One of each dead-letter reason the parser knows, as (reason, mutation of a valid document).
MALFORMATIONS = (
    "invalid_json",
    "missing_field:user_id",
    "bad_type:latency_ms",
    "negative_value:token_count",
    "bad_timestamp",
    "unsupported_schema_version:2",
    "event_time_in_future",
)


class LoadProfile(NamedTuple):
    """Shares are fractions of the events emitted (0..1); ``late_by_s`` bounds how far in the
    past a late event's time is; ``text_chars`` is the target size of each text."""

    duplicate_share: float = 0.05
    late_share: float = 0.02
    late_by_s: tuple[int, int] = (120, 900)
    malformed_share: float = 0.01
    pii_share: float = 0.2
    text_chars: int = 1000
    text_pool: int = 400


class Generated(NamedTuple):
    """One generated message: its bytes, its kind, and the document (None if malformed)."""

    payload: bytes
    kind: str
    document: dict | None
    malformation: str | None = None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventGenerator:
    """Deterministic for a seed. Texts come from a pool built once (Faker is slow), so the
    generator itself costs a few µs per event."""

    def __init__(self, seed: int = 7, profile: LoadProfile = LoadProfile()):  # noqa: B008
        from pipelines.local.texts import make_text, new_faker

        self._rng = random.Random(seed)
        self._profile = profile
        fake = new_faker()
        fake.seed_instance(seed)
        pool_rng = random.Random(seed + 1)
        self._clean = [
            make_text(pool_rng, fake, pii_share=0.0, target_chars=profile.text_chars).text
            for _ in range(profile.text_pool)
        ]
        with_pii = [
            make_text(pool_rng, fake, pii_share=1.0, target_chars=profile.text_chars)
            for _ in range(max(1, profile.text_pool // 4))
        ]
        self._pii = [t.text for t in with_pii]
        self._users = [f"user-{fake.user_name()}-{i}" for i in range(500)]
        # Ground truth for tests: every value that must never appear in an output.
        self.pii_values: frozenset[str] = frozenset(
            [span.value for t in with_pii for span in t.pii] + self._users
        )
        self._recent: list[bytes] = []

    def _text(self) -> str:
        pool = self._pii if self._rng.random() < self._profile.pii_share else self._clean
        return self._rng.choice(pool)

    def document(self, event_time: dt.datetime) -> dict:
        """A valid event document of major version 1 (as gateways write it: no version, 1,
        "1", "1.0" or "1.1", the 1.1 fields on about half of the 1.1 events)."""
        rng = self._rng
        prompt_tokens = rng.randint(20, 4000)
        completion_tokens = rng.randint(1, 2000)
        document = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "request_id": f"R-{rng.getrandbits(48):012x}",
            "user_id": rng.choice(self._users),
            "event_time": _iso(event_time),
            "model": rng.choice(MODELS),
            "model_version": rng.choice(("2024-07-18", "001", "002", None)),
            "schema_version": rng.choice((1, "1", None, "1.0", "1.1")),
            "latency_ms": round(rng.lognormvariate(6.3, 0.6), 1),
            "token_count": prompt_tokens + completion_tokens,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "policy_flags": [f for f in FLAGS if rng.random() < 0.04],
            "region": rng.choice(REGIONS),
            "prompt": self._text(),
            "response": self._text(),
        }
        if document["schema_version"] == "1.1" and rng.random() < 0.5:
            document["ttft_ms"] = round(document["latency_ms"] * rng.uniform(0.05, 0.5), 1)
            document["cached_tokens"] = rng.randint(0, prompt_tokens)
            document["tenant_id"] = rng.choice(TENANTS)
        return {k: v for k, v in document.items() if v is not None}

    def _malformed(self, now: dt.datetime) -> Generated:
        reason = self._rng.choice(MALFORMATIONS)
        document = self.document(now)
        document["prompt"] = self._rng.choice(self._pii)  # dead letters must be redacted too
        if reason == "invalid_json":
            text = json.dumps(document)
            payload = text[: self._rng.randint(len(text) // 2, len(text) - 2)].encode()
            return Generated(payload, MALFORMED, None, reason)
        if reason == "missing_field:user_id":
            document.pop("user_id")
        elif reason == "bad_type:latency_ms":
            document["latency_ms"] = str(document["latency_ms"])
        elif reason == "negative_value:token_count":
            document["token_count"] = -document["token_count"]
        elif reason == "bad_timestamp":
            document["event_time"] = now.strftime("%d/%m/%Y %H:%M")
        elif reason == "unsupported_schema_version:2":
            document["schema_version"] = "2.0"
        elif reason == "event_time_in_future":
            document["event_time"] = _iso(now + dt.timedelta(hours=2))
        return Generated(json.dumps(document).encode(), MALFORMED, None, reason)

    def batch(self, n: int, now: dt.datetime) -> list[Generated]:
        """``n`` messages "sent" at ``now``: valid, late, duplicates and malformed mixed."""
        p, rng, out = self._profile, self._rng, []
        for _ in range(n):
            roll = rng.random()
            if roll < p.duplicate_share and self._recent:
                payload = rng.choice(self._recent)
                out.append(Generated(payload, DUPLICATE, json.loads(payload)))
                continue
            roll -= p.duplicate_share
            if roll < p.malformed_share:
                out.append(self._malformed(now))
                continue
            roll -= p.malformed_share
            late = roll < p.late_share
            when = now - dt.timedelta(seconds=rng.uniform(*p.late_by_s)) if late else now
            document = self.document(when)
            # msgspec: compact UTF-8 JSON, as gateways send it, ~5x cheaper than json.dumps
            # (the generator runs inside the streaming pipeline's process).
            payload = msgspec.json.encode(document)
            out.append(Generated(payload, LATE if late else VALID, document))
            self._recent.append(payload)
            if len(self._recent) > 1000:
                del self._recent[:500]
        return out


_PROFILE_DEFAULTS = LoadProfile._field_defaults


def _publish(args: argparse.Namespace, generator: EventGenerator) -> int:
    from pipelines.local.publish import BurstProfile, publish_paced, publisher_client

    profile = BurstProfile(args.rate, args.burst_factor, args.burst_every_s, args.burst_s)
    stats = publish_paced(
        publisher_client(),
        args.pubsub_topic,
        lambda n, now: [g.payload for g in generator.batch(n, now)],
        profile,
        args.duration_s,
    )
    print(
        f"published {stats.published} messages to {args.pubsub_topic} in {stats.elapsed_s:.1f} s "
        f"(base {args.rate:g}/s, peak {stats.peak_rate:g}/s)",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.local.loadgen", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000, help="file: messages to write")
    parser.add_argument("--output", help="JSON-lines file to write ('-': stdout)")
    parser.add_argument("--pubsub_topic", help="publish to projects/P/topics/T instead")
    parser.add_argument("--rate", type=float, default=1000.0, help="pubsub: base messages/s")
    parser.add_argument("--duration_s", type=float, default=60.0, help="pubsub: how long")
    parser.add_argument(
        "--burst_factor", type=float, default=1.0, help="pubsub: rate multiplier in bursts"
    )
    parser.add_argument(
        "--burst_every_s", type=float, default=60.0, help="pubsub: a burst starts this often"
    )
    parser.add_argument("--burst_s", type=float, default=10.0, help="pubsub: burst length")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--duplicate_share", type=float, default=_PROFILE_DEFAULTS["duplicate_share"]
    )
    parser.add_argument("--late_share", type=float, default=_PROFILE_DEFAULTS["late_share"])
    parser.add_argument(
        "--malformed_share", type=float, default=_PROFILE_DEFAULTS["malformed_share"]
    )
    parser.add_argument("--pii_share", type=float, default=_PROFILE_DEFAULTS["pii_share"])
    parser.add_argument(
        "--text_chars",
        type=int,
        default=_PROFILE_DEFAULTS["text_chars"],
        help="target length of each prompt and response",
    )
    parser.add_argument("--spread_s", type=int, default=3600, help="event times span this many s")
    args = parser.parse_args(argv)
    if bool(args.output) == bool(args.pubsub_topic):
        parser.error("give exactly one of --output and --pubsub_topic")
    if args.pubsub_topic:
        from pipelines.io.sources.pubsub import is_topic_path
        from pipelines.local.publish import BurstProfile

        problems = BurstProfile(
            args.rate, args.burst_factor, args.burst_every_s, args.burst_s
        ).problems()
        if not is_topic_path(args.pubsub_topic):
            problems.append("--pubsub_topic must be projects/PROJECT/topics/TOPIC")
        if args.duration_s <= 0:
            problems.append("--duration_s must be > 0")
        if problems:
            parser.error("; ".join(problems))
    profile = LoadProfile(
        duplicate_share=args.duplicate_share,
        late_share=args.late_share,
        malformed_share=args.malformed_share,
        pii_share=args.pii_share,
        text_chars=args.text_chars,
    )
    generator = EventGenerator(args.seed, profile)
    if args.pubsub_topic:
        return _publish(args, generator)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=args.spread_s)
    out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
    with out:
        step = 100
        for i in range(0, args.events, step):
            now = start + dt.timedelta(seconds=args.spread_s * i / max(args.events, 1))
            for generated in generator.batch(min(step, args.events - i), now):
                out.write(generated.payload + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
