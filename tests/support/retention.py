"""The embedded stores the retention tests run on: raw archive and dead-letter partitions of
known ages, a leftover of an interrupted write, and metric rows in the warehouse."""

from __future__ import annotations

import datetime as dt
import os

from pipelines.io.sinks.embedded.warehouse import create_warehouse, upsert_metric_rows
from pipelines.io.sinks.files import write_avro_files
from tests.support.core_inputs import event_id
from tests.support.factories import redacted_event
from tests.support.sink_factories import dead_letter, metric_row
from transforms.elements import to_record

__all__ = ["embedded_store"]

UTC = dt.UTC


def _archive(root, day: str, region: str, ids: list[int], max_records: int = 10) -> None:
    noon = dt.datetime.fromisoformat(f"{day}T12:00:00+00:00")
    records = [
        to_record(redacted_event(event_id=event_id(n), event_time=noon, region=region)) for n in ids
    ]
    directory = os.path.join(root, "raw", f"event_date={day}", f"region={region}")
    write_avro_files(
        directory,
        records,
        schema_name="redacted_event",
        id_field="event_id",
        max_records=max_records,
    )


def _dead_letters(root, day: str, ids: list[str]) -> None:
    failed_at = dt.datetime.fromisoformat(f"{day}T08:00:00+00:00")
    records = [to_record(dead_letter(dead_letter_id=i * 64, failed_at=failed_at)) for i in ids]
    write_avro_files(
        os.path.join(root, "dead_letter", f"dt={day}"),
        records,
        schema_name="dead_letter",
        id_field="dead_letter_id",
        max_records=10,
    )


def embedded_store(tmp_path) -> str:
    """Writes the stores under ``tmp_path / "out"`` and returns that root."""
    root = str(tmp_path / "out")
    _archive(root, "2026-01-28", "us", [1, 2])
    _archive(root, "2026-01-28", "eu", [3])
    _archive(root, "2026-01-29", "us", [4, 5, 6], max_records=2)  # two files
    _archive(root, "2026-01-30", "us", [7])  # exactly 30 days: kept
    _archive(root, "2026-02-28", "eu", [8])
    leftover = os.path.join(root, "raw/event_date=2026-01-28/region=us/.part-x.avro.tmp-0f")
    with open(leftover, "wb") as handle:  # an interrupted write
        handle.write(b"partial")
    _dead_letters(root, "2026-01-15", ["a", "b"])
    _dead_letters(root, "2026-01-30", ["c"])
    _dead_letters(root, "2026-02-27", ["d"])
    db = os.path.join(root, "warehouse.duckdb")
    create_warehouse(db)
    starts = [
        dt.datetime(2025, 1, 1, tzinfo=UTC),  # deleted
        dt.datetime(2025, 2, 28, 23, 59, tzinfo=UTC),  # deleted: before 2025-03-01 00:00
        dt.datetime(2025, 3, 1, tzinfo=UTC),  # kept
        dt.datetime(2026, 2, 1, tzinfo=UTC),  # kept
    ]
    upsert_metric_rows(db, [metric_row(window_start=s) for s in starts])
    return root
