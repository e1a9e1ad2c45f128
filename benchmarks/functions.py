"""The per-event work of a backfill with no runner: a floor under any pipeline's CPU per event.

Runs the plain functions the backfill's DoFns call, in one process, in a loop, over a JSON-lines
file of gateway events, and prints the CPU time per input event of each step:

* parse: ``parse_event`` on every line, once (the backfill parses twice: its first pass
  chooses the copy of each duplicated id to write);
* redact and classify: the redaction engine over every text (batches of
  ``--redaction_batch_size``), then ``classify_and_redact`` (the user pseudonym included), as
  the redaction step does;
* archive: ``avro_record`` and the fastavro writer with the archive's schema and codec, into
  memory (no file I/O);
* audit: ``audit_event`` and ``insert_audit_records`` into a SQLite file in a temporary
  directory, 10,000 rows per transaction as the backfill's writer does.

Left out: the first pass's second parse of every line, deduplication, metrics, dead letters
and all of the runner's own work (coding elements between steps, bundles, start-up). Every
valid event is archived and audited as written here, duplicates too, which the backfill audits
without archiving (about 5% of the events, ~2 µs per event of the archive step), far less than
what is left out. So the backfill cannot use less CPU per event than the total printed, and two
cores' time divided by it bounds the events/s of a backfill on two cores of this machine at its
present speed.

    python -m pipelines.local.loadgen --events 50000 --text_chars 440 --output events.jsonl
    python benchmarks/functions.py --input events.jsonl

``benchmarks/pipeline.py`` runs it on the events it generates for the backfill.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import fastavro

from pipelines.io.sinks.embedded.audit import create_audit_log, insert_audit_records
from pipelines.io.sinks.files import AVRO_CODEC, avro_record
from schemas.contract import parsed_schema
from transforms.audit import audit_event
from transforms.classify import DEFAULT_POLICY_PATH, load_policy
from transforms.deadletter import InvalidEvent
from transforms.elements import Event, RedactedEvent
from transforms.parse import ParseLimits, parse_event
from transforms.pii.engine import RedactionError, redact_each
from transforms.pii.settings import RedactionSettings
from transforms.redact import classify_and_redact, texts_of

_T = TypeVar("_T")
_AUDIT_ROWS_PER_FLUSH = 10_000  # pipelines.io.sinks.embedded.audit.DEFAULT_MAX_BUFFERED_ROWS
_ARCHIVE_RECORDS_PER_FILE = 10_000  # pipelines.io.sinks.files.DEFAULT_MAX_RECORDS


def _timed(step: Callable[[], _T]) -> tuple[_T, float]:
    started = time.process_time()
    result = step()
    return result, time.process_time() - started


def parse_all(lines: list[bytes], now: dt.datetime) -> list[Event]:
    limits = ParseLimits(now=now)
    events = []
    for raw in lines:
        with contextlib.suppress(InvalidEvent):  # the backfill dead-letters these
            events.append(parse_event(raw, now=now, limits=limits))
    return events


def redact_all(
    events: list[Event], settings: RedactionSettings, batch_size: int, now: dt.datetime
) -> list[RedactedEvent]:
    """Redacts and classifies ``events`` as the redaction step does (events whose texts fail
    are left out: the step dead-letters them)."""
    engine, key = settings.open()
    policy = load_policy(DEFAULT_POLICY_PATH)
    redacted = []
    for start in range(0, len(events), batch_size):
        part = events[start : start + batch_size]
        texts = [texts_of(e) for e in part]
        outcomes = redact_each(engine, [t for each in texts for t in each])
        position = 0
        for event, own in zip(part, texts, strict=True):
            results = outcomes[position : position + len(own)]
            position += len(own)
            if any(isinstance(r, RedactionError) for r in results):
                continue
            redacted.append(
                classify_and_redact(
                    event,
                    results,
                    key=key,
                    policy=policy,
                    engine_name=engine.name,
                    processed_at=now,
                )
            )
    return redacted


def archive_file(events: list[RedactedEvent]) -> bytes:
    """One archive file of ``events``, as the archive writer encodes it."""
    out = io.BytesIO()
    records = [avro_record(e) for e in events]
    fastavro.writer(out, parsed_schema("redacted_event"), records, codec=AVRO_CODEC, strict=True)
    return out.getvalue()


def archive_all(events: list[RedactedEvent]) -> int:
    """Encodes ``events`` as files of 10,000 records; returns their total size in bytes."""
    return sum(
        len(archive_file(events[start : start + _ARCHIVE_RECORDS_PER_FILE]))
        for start in range(0, len(events), _ARCHIVE_RECORDS_PER_FILE)
    )


def audit_all(events: list[RedactedEvent], db_path: str, now: dt.datetime) -> int:
    create_audit_log(db_path)
    inserted = 0
    for start in range(0, len(events), _AUDIT_ROWS_PER_FLUSH):
        records = [
            audit_event(e, "written", now) for e in events[start : start + _AUDIT_ROWS_PER_FLUSH]
        ]
        inserted += insert_audit_records(db_path, records)
    return inserted


def measure(lines: list[bytes], settings: RedactionSettings, batch_size: int) -> dict[str, float]:
    """CPU seconds of each step over ``lines``, in the order they run."""
    now = dt.datetime.now(dt.UTC)
    events, parse_s = _timed(lambda: parse_all(lines, now))
    redacted, redact_s = _timed(lambda: redact_all(events, settings, batch_size, now))
    _, archive_s = _timed(lambda: archive_all(redacted))
    with tempfile.TemporaryDirectory(prefix="genai-functions-") as tmp:
        db_path = os.path.join(tmp, "audit.sqlite")
        _, audit_s = _timed(lambda: audit_all(redacted, db_path, now))
    return {
        "parse": parse_s,
        "redact and classify": redact_s,
        "archive (Avro)": archive_s,
        "audit (SQLite)": audit_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="JSON-lines file of gateway events.")
    parser.add_argument(
        "--events", type=int, default=0, help="Measure the first N lines only (0: all)."
    )
    parser.add_argument("--redaction_batch_size", type=int, default=64)
    parser.add_argument("--cores", type=int, default=2, help="Cores the bound is printed for.")
    args = parser.parse_args()
    try:
        lines = Path(args.input).read_bytes().splitlines()
    except OSError as error:
        raise SystemExit(f"--input {args.input}: {error.strerror}") from None
    if args.events > 0:
        lines = lines[: args.events]
    if not lines:
        raise SystemExit(f"{args.input}: no events")
    settings = RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY")
    os.environ.setdefault("GENAI_PSEUDONYM_KEY", "benchmark-only-pseudonym-key-0123456789")
    settings.open()  # the engine's set-up (pattern compilation) is not per-event work
    steps = measure(lines, settings, args.redaction_batch_size)
    total = sum(steps.values())
    per_event = {name: s / len(lines) * 1e6 for name, s in steps.items()}
    print(
        f"plain functions, one process, no runner, over {len(lines):,} events "
        "(CPU µs per input event):"
    )
    print("  " + ", ".join(f"{name} {us:,.1f}" for name, us in per_event.items()))
    bound = args.cores / (total / len(lines))
    print(
        f"  total {total / len(lines) * 1e6:,.1f} µs per event: at most {bound:,.0f} events/s on "
        f"{args.cores} cores at this machine's present speed, before any runner cost"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
