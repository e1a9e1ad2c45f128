"""Trace one request through the embedded stores: ``python -m pipelines.trace``.

    python -m pipelines.trace --output_root ./out --request_id R-123
    python -m pipelines.trace --output_root ./out --request_id R-123 --json

Prints everything the pipeline kept about a gateway ``request_id``: its audit trail (one record
per input and outcome: written, duplicate, dead-lettered, replayed), the redacted record it
archived (texts with ``[INFO_TYPE]`` placeholders, the pseudonymous ``user_key``) and the policy
decisions taken on it (data class, policy flags, redactions per info type, the engine and policy
versions), and for a rejected input its dead letter (reason, failing step, time; never the
payload, which stays in the access-restricted dead-letter store). The audit log says where to
look, so only the archive partitions (``event_date``, ``region``) and dead-letter dates of the
request are read. Read-only.

On Google Cloud the same trace is the table function ``trace_request`` in BigQuery
(``pipelines/sql/trace_request.sql``, created by Terraform over the archive's external table
``raw_events`` and ``audit_log_unique``): ``docs/observability.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import sys
from typing import Any, NamedTuple

import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.io.sinks.embedded import AUDIT_DB
from pipelines.launch import fail

__all__ = ["Trace", "format_trace", "run", "trace_request"]

# What a trace shows of a dead letter: never the payload (restricted), its hash and size only.
_DEAD_LETTER_FIELDS = (
    "dead_letter_id",
    "reason",
    "step",
    "error_type",
    "error_message",
    "failed_at",
    "payload_state",
    "payload_sha256",
    "payload_bytes",
    "replay_of",
    "input_id",
)
_DECISIONS = (
    "data_class",
    "policy_flags",
    "redaction_counts",
    "redaction_engine",
    "policy_version",
)


class Trace(NamedTuple):
    """What the stores hold about one request: audit records (oldest first), archived redacted
    records and dead letters (restricted fields left out), each a plain dict."""

    request_id: str
    audit: list[dict[str, Any]]
    records: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]

    @property
    def found(self) -> bool:
        return bool(self.audit or self.records)


def _audit_records(output_root: str, request_id: str) -> list[dict[str, Any]]:
    path = os.path.join(output_root, AUDIT_DB)
    if not os.path.exists(path):
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        cursor = con.execute(
            "SELECT * FROM audit_log WHERE request_id = ? ORDER BY recorded_at, audit_id",
            [request_id],
        )
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        row["redaction_counts"] = json.loads(row["redaction_counts"] or "{}")
    return rows


def _avro_records(pattern: str) -> list[dict[str, Any]]:
    (matched,) = FileSystems.match([pattern])
    records: list[dict[str, Any]] = []
    for metadata in sorted(matched.metadata_list, key=lambda m: m.path):
        with FileSystems.open(
            metadata.path, compression_type=CompressionTypes.UNCOMPRESSED
        ) as handle:
            records.extend(fastavro.reader(handle))
    return records


def _day(value: str | None) -> dt.date | None:
    """The UTC date of an audit time (ISO 8601 text ending in Z)."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC).date()


def trace_request(output_root: str, request_id: str) -> Trace:
    """Collects the trace of ``request_id`` from the stores under ``output_root``."""
    audit = _audit_records(output_root, request_id)
    partitions = sorted(
        {(_day(a["event_time"]), a["region"]) for a in audit if a["event_time"] and a["region"]}
    )
    records = []
    for day, region in partitions:
        pattern = FileSystems.join(
            output_root, "raw", f"event_date={day.isoformat()}", f"region={region}", "*.avro"
        )
        for record in _avro_records(pattern):
            if record["request_id"] == request_id:
                record["event_id"] = str(record["event_id"])
                records.append(record)
    letters = {a["dead_letter_id"]: _day(a["recorded_at"]) for a in audit if a["dead_letter_id"]}
    dead_letters = []
    for day in sorted(set(letters.values())):
        pattern = FileSystems.join(output_root, "dead_letter", f"dt={day.isoformat()}", "*.avro")
        for record in _avro_records(pattern):
            if record["dead_letter_id"] in letters:
                dead_letters.append({f: record.get(f) for f in _DEAD_LETTER_FIELDS})
    # A dead letter is stored at least once per id (docs/data-contract.md): show each once.
    unique = list({d["dead_letter_id"]: d for d in dead_letters}.values())
    return Trace(request_id, audit, sorted(records, key=lambda r: r["event_time"]), unique)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def format_trace(trace: Trace) -> str:
    """The trace for a person: the audit trail, then each record and its policy decisions,
    then the dead letters."""
    if not trace.found:
        return f"request {trace.request_id}: nothing found (not in the audit log)"
    lines = [f"request {trace.request_id}", "", "audit trail (oldest first):"]
    for a in trace.audit:
        detail = f" reason={a['reason']}" if a["reason"] else ""
        lines.append(
            f"  {a['recorded_at']}  {a['outcome']:<14} event {a['event_id']}  "
            f"input {a['input_id']}{detail}"
        )
    for record in trace.records:
        lines += [
            "",
            f"archived record (event {record['event_id']}):",
            f"  event_time {_plain(record['event_time'])}  ingested_at "
            f"{_plain(record.get('ingested_at'))}  processed_at {_plain(record['processed_at'])}",
            f"  model {record['model']} {record.get('model_version') or ''}  region "
            f"{record['region']}  user_key {record['user_key']}",
            f"  latency {record['latency_ms']} ms  tokens {record['token_count']}",
            "  policy decisions: "
            + ", ".join(f"{name}={_plain(record[name])}" for name in _DECISIONS),
            f"  prompt:   {record.get('prompt')}",
            f"  response: {record.get('response')}",
        ]
    for letter in trace.dead_letters:
        lines += ["", f"dead letter {letter['dead_letter_id']}:"]
        lines += [f"  {name}: {_plain(letter[name])}" for name in _DEAD_LETTER_FIELDS[1:]]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.trace", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output_root", default="./out", help="Root of the embedded outputs.")
    parser.add_argument("--request_id", default="", help="The gateway request_id to trace.")
    parser.add_argument(
        "--json", action="store_true", help="Print the trace as JSON instead of text."
    )
    return parser


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problems = []
    if not args.request_id:
        problems.append("--request_id is required")
    if not os.path.isdir(args.output_root):
        problems.append(f"--output_root {args.output_root} is not a directory")
    if problems:
        fail(problems)
    trace = trace_request(args.output_root, args.request_id)
    if args.json:
        print(json.dumps(_plain(trace._asdict()), indent=1, sort_keys=True))
    else:
        print(format_trace(trace))
    return 0 if trace.found else 1


if __name__ == "__main__":
    sys.exit(run())
