"""CPU per event of each step on the Dataflow path, and the workers it takes at the design's load.

Runs the plain functions the streaming job's steps call on Dataflow (``--sink gcp``), in one
process with no runner, over synthetic gateway traffic (``pipelines.local.loadgen``: ~20% of
the texts with PII, duplicates and malformed events mixed in), and prints the CPU µs per input
event of each step:

* parse: ``parse_event``;
* redact and classify: the offline engine over every text, then ``classify_and_redact``;
* dedupe: the content digest of each event and the msgpack round trip of the event into the
  per-key state (Streaming Engine keeps the state itself off the workers);
* aggregate: the projection and the combiner's ``add_input``;
* archive: the Avro encoding of the raw archive;
* audit: building the ``AuditRecord``, its PostgreSQL row and its Write API protobuf row;
* shuffles: the msgpack round trips of the batching shuffles an event and its audit record
  cross (archive files, the two audit writers);
* dead letters: redacting the payloads of the malformed share, spread over all events.

Then the sizing: total µs times ``--runner_overhead`` over ``--utilization`` gives the vCPUs for the
design's 1,000 (average) and 5,000 (peak) events/s, and workers of ``--machine_vcpus``, with
the minimum and maximum workers to match (``docs/deploy.md`` has the reasoning).
``--runner_overhead`` (default 4) is the SDK harness's own work per element as a multiple of
the plain functions: 2.05 measured for the batch runner on this repository (the backfill's CPU
per event over its plain functions' sum, 390 / 190 µs, docs/performance.md), doubled for what
streaming adds (per-key dedupe state and timers, triggers, Pub/Sub); the local streaming run
(1,000 events/s on one core) bounds it from above. ``--utilization`` (default 0.6) is the share
of each vCPU the plan uses: headroom for the autoscaler and for catching up.

What it leaves out: network waits (BigQuery, Cloud SQL, Cloud Storage calls; the harness
threads overlap them), Pub/Sub reading and acknowledging, and the service side of Streaming
Engine (shuffle and state), which is billed per GB processed instead of vCPU.

    .venv/bin/python benchmarks/cost_per_event.py            # 20,000 events
    .venv/bin/python benchmarks/cost_per_event.py --events 50000 --machine_vcpus 4

The machine is shared and its speed moves with its host's load: the script prints the redaction
benchmark's machine check beside its figures (see docs/performance.md, Method).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.functions import archive_all, parse_all, redact_all
from pipelines.io.sinks.gcp import postgres
from pipelines.io.sinks.gcp.bigquery import _audit_encoder
from pipelines.local.loadgen import MALFORMED, EventGenerator, LoadProfile
from transforms.aggregate import _key_by_model_region, _MetricsCombineFn
from transforms.audit import audit_event
from transforms.coders import MsgpackCoder
from transforms.dedupe import content_digest
from transforms.elements import AuditRecord, EventBatch, RedactedEvent, to_record
from transforms.pii.payload import redact_payload
from transforms.pii.settings import RedactionSettings

RATES = (1_000, 5_000)  # the seed design's average and peak, events/s
BATCH = 64  # events per EventBatch, as the redaction step emits them


def _cpu(step: Callable[[], object]) -> float:
    started = time.process_time()
    step()
    return time.process_time() - started


def _coder(element_type) -> MsgpackCoder:
    from apache_beam import coders

    return coders.registry.get_coder(element_type)


def _round_trips(coder, values: Sequence) -> None:
    for value in values:
        coder.decode(coder.encode(value))


def _warm_up(event: RedactedEvent, now: dt.datetime) -> None:
    """First calls that import or build something (set-up, not per-event work)."""
    record = audit_event(event, "written", now)
    postgres._row(record)
    _audit_encoder().encode(to_record(record))
    _coder(AuditRecord).encode(record)


def measure(lines: list[bytes], malformed: list[bytes]) -> dict[str, float]:
    """CPU seconds of each step over ``lines`` (``malformed``: the rejected ones)."""
    now = dt.datetime.now(dt.UTC)
    settings = RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY")
    engine, key = settings.open()
    events: list = []
    redacted: list[RedactedEvent] = []
    audits: list[AuditRecord] = []
    steps: dict[str, float] = {}
    steps["parse"] = _cpu(lambda: events.extend(parse_all(lines, now)))
    steps["redact and classify"] = _cpu(
        lambda: redacted.extend(redact_all(events, settings, BATCH, now))
    )
    _warm_up(redacted[0], now)
    event_coder = _coder(RedactedEvent)

    def dedupe() -> None:
        for event in redacted:
            content_digest(event)
            event_coder.decode(event_coder.encode(event))

    steps["dedupe"] = _cpu(dedupe)

    def aggregate() -> None:
        combine = _MetricsCombineFn()
        accumulators: dict = {}
        for event in redacted:
            key_, usage = _key_by_model_region(event)
            acc = accumulators.get(key_)
            if acc is None:
                acc = accumulators[key_] = combine.create_accumulator()
            combine.add_input(acc, usage)

    steps["aggregate"] = _cpu(aggregate)
    steps["archive (Avro)"] = _cpu(lambda: archive_all(redacted))

    def audit() -> None:
        encoder = _audit_encoder()
        for event in redacted:
            record = audit_event(event, "written", now)
            postgres._row(record)
            encoder.encode(to_record(record))
            audits.append(record)

    steps["audit (records, PostgreSQL, Write API rows)"] = _cpu(audit)
    batches = [
        EventBatch("", tuple(redacted[i : i + BATCH])) for i in range(0, len(redacted), BATCH)
    ]

    def shuffles() -> None:
        _round_trips(_coder(EventBatch), batches)  # archive: batched per partition and shard
        for _ in range(2):  # audit: to PostgreSQL and to BigQuery
            _round_trips(_coder(AuditRecord), audits)

    steps["shuffles (coding)"] = _cpu(shuffles)
    steps["dead letters"] = _cpu(
        lambda: [redact_payload(raw, engine, key, max_bytes=1 << 20) for raw in malformed]
    )
    return steps


def sizing(us_per_event: float, runner_overhead: float, utilization: float, machine_vcpus: int):
    """(events/s, vCPUs, workers) for each rate of ``RATES``: vCPUs to run it at
    ``utilization``, and the workers of ``machine_vcpus`` that holds."""
    rows = []
    for rate in RATES:
        vcpus = rate * us_per_event * runner_overhead / 1e6 / utilization
        rows.append((rate, vcpus, max(1, math.ceil(vcpus / machine_vcpus))))
    return rows


def _machine_check() -> str:
    import random

    from benchmarks.redaction import REFERENCE_CALIBRATION, calibration_texts_per_s
    from pipelines.local.texts import make_event, new_faker

    rng, fake = random.Random(1), new_faker()
    sample = [make_event(rng, fake, pii_share=0.2) for _ in range(1000)]
    speed = calibration_texts_per_s(sample, 3)
    return (
        f"machine check {speed:,.0f} texts/s ({speed / REFERENCE_CALIBRATION:.0%} of the "
        f"{REFERENCE_CALIBRATION:,} where the targets were set)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="Synthetic events measured.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--text_chars", type=int, default=1000, help="Target size of each text.")
    parser.add_argument("--runner_overhead", type=float, default=4.0)
    parser.add_argument("--utilization", type=float, default=0.6)
    parser.add_argument("--machine_vcpus", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("GENAI_PSEUDONYM_KEY", "benchmark-only-pseudonym-key-0123456789")
    generated = EventGenerator(args.seed, LoadProfile(text_chars=args.text_chars)).batch(
        args.events, dt.datetime.now(dt.UTC)
    )
    lines = [g.payload for g in generated]
    malformed = [g.payload for g in generated if g.kind == MALFORMED]
    RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY").open()  # set-up is not per event
    print(_machine_check())
    steps = measure(lines, malformed)
    per_event = {name: seconds / len(lines) * 1e6 for name, seconds in steps.items()}
    total = sum(per_event.values())
    print(f"\nCPU µs per input event, plain functions, {len(lines):,} synthetic events:")
    for name, micros in per_event.items():
        print(f"  {name:<46} {micros:8.1f}")
    print(f"  {'total':<46} {total:8.1f}")
    print(
        f"\nsizing: x{args.runner_overhead:.2f} runner overhead, {args.utilization:.0%} target "
        f"utilisation, {args.machine_vcpus} vCPUs per worker"
    )
    rows = sizing(total, args.runner_overhead, args.utilization, args.machine_vcpus)
    for rate, vcpus, workers in rows:
        print(f"  {rate:>6,} events/s: {vcpus:5.1f} vCPUs -> {workers} workers")
    (_, _, average), (_, _, peak) = rows
    print(
        f"  autoscaling: min {max(2, average)} workers (the average, and a second one so that "
        f"losing a worker keeps the SLO), max {2 * peak} (twice the peak: catching up)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
