"""Inputs of the embedded sinks and readers of what they stored, for the sink tests."""

from __future__ import annotations

import datetime as dt
import glob
import os

import fastavro

from pipelines.io.sinks.embedded.warehouse import read_metrics
from schemas.contract import parsed_schema
from tests.support.factories import redacted_event
from tests.support.sink_factories import T0
from transforms.elements import EventBatch

__all__ = [
    "archive_input",
    "check_files_written",
    "eid",
    "event_batch",
    "expected_rows",
    "part_files",
    "read_avro",
    "stored_rows",
]


def eid(name: str) -> str:
    """Returns a canonical UUID (the archive's event_id is an Avro uuid) that embeds ``name``."""
    return f"00000000-0000-4000-8000-{name.encode().hex():0>12}"


def read_avro(path: str, schema_name: str) -> list[dict]:
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        assert reader.metadata["avro.codec"] == "snappy"
        records = list(reader)
    for record in records:
        assert fastavro.validate(record, parsed_schema(schema_name), raise_errors=True)
        if schema_name == "redacted_event":
            record["event_id"] = str(record["event_id"])  # fastavro reads uuid as uuid.UUID
    return records


def part_files(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "**", "part-*.avro"), recursive=True))


def check_files_written(expected_total: int, max_records: int):
    """Matcher for the (path, count) output: counts match the files, which are all there."""

    def check(actual):
        paths = [path for path, _ in actual]
        assert len(paths) == len(set(paths)), "a file was reported twice"
        assert sum(count for _, count in actual) == expected_total
        for path, count in actual:
            with open(path, "rb") as f:
                assert sum(b.num_records for b in fastavro.block_reader(f)) == count <= max_records

    return check


def event_batch(events) -> EventBatch:
    return EventBatch("", tuple(events))


def archive_input() -> list:
    late = T0 - dt.timedelta(hours=30)  # a day earlier: a late event lands in its own date
    return [
        redacted_event(event_id=eid("e1"), region="europe-west1"),
        redacted_event(event_id=eid("e2"), region="europe-west1", policy_flags=("pii_redacted",)),
        redacted_event(event_id=eid("e3"), region="europe-west1", redaction_counts={"EMAIL": 2}),
        redacted_event(event_id=eid("e4"), region="us-central1", prompt=None, prompt_tokens=None),
        redacted_event(event_id=eid("e5"), region="us-central1", event_time=late),
        redacted_event(event_id=eid("e6"), region="eu/../west"),  # must not climb directories
    ]


COMPARED = ("pane_index", "request_count", "token_sum", "latency_p50_ms", "emitted_at")


def stored_rows(db_path: str) -> list[dict]:
    frame = read_metrics(db_path).sort_values(["window_start", "model", "region"])
    return [{k: row[k] for k in ("model", "region", *COMPARED)} for row in frame.to_dict("records")]


def expected_rows(*rows) -> list[dict]:
    return [{k: getattr(r, k) for k in ("model", "region", *COMPARED)} for r in rows]
