"""Retention of the embedded stores: exact partitions, files, records and rows deleted; a dry
run deletes nothing; a second run finds nothing; the limits of the seed design hold."""

from __future__ import annotations

import datetime as dt
import glob
import os

import pytest

from pipelines import retention
from pipelines.io.sinks.embedded.warehouse import create_warehouse, read_metrics, upsert_metric_rows
from pipelines.io.sinks.files import write_avro_files
from tests.core_inputs import event_id
from tests.factories import redacted_event
from tests.sink_factories import dead_letter, metric_row
from tests.support.pipelines import usage_error
from transforms.elements import to_record

AS_OF = dt.date(2026, 3, 1)  # raw and dead letters: before 2026-01-30; metrics: before 2025-03-01
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


@pytest.fixture
def root(tmp_path):
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


def _files(root) -> list[str]:
    paths = glob.glob(f"{root}/**/*", recursive=True) + glob.glob(f"{root}/**/.*", recursive=True)
    return sorted(os.path.relpath(p, root) for p in paths if os.path.isfile(p))


def _summary(result: retention.RetentionResult) -> tuple:
    return (
        [(p.day.isoformat(), len(p.files), p.records, len(p.leftovers)) for p in result.raw],
        [(p.day.isoformat(), len(p.files), p.records) for p in result.dead_letters],
        result.metric_rows,
    )


EXPECTED = (
    [("2026-01-28", 2, 3, 1), ("2026-01-29", 2, 3, 0)],
    [("2026-01-15", 1, 2)],
    2,
)


def test_dry_run_reports_everything_and_deletes_nothing(root, capsys):
    files_before = _files(root)
    rows_before = len(read_metrics(os.path.join(root, "warehouse.duckdb")))
    result = retention.apply_retention(root, as_of=AS_OF, dry_run=True)
    assert _summary(result) == EXPECTED
    assert _files(root) == files_before
    assert len(read_metrics(os.path.join(root, "warehouse.duckdb"))) == rows_before == 4
    printed = capsys.readouterr().out
    assert "dry run: nothing is deleted" in printed
    assert f"would delete {root}/raw/event_date=2026-01-28  2 files, 3 records" in printed
    assert "total: 2 partitions, 4 files, 6 records" in printed
    assert f"would delete {root}/dead_letter/dt=2026-01-15  1 files, 2 records" in printed
    assert "would delete 2 rows from" in printed


def test_retention_deletes_exactly_the_expired_data(root, capsys):
    result = retention.apply_retention(root, as_of=AS_OF)
    assert _summary(result) == EXPECTED
    remaining = _files(root)
    assert not [f for f in remaining if "2026-01-28" in f or "2026-01-29" in f]
    assert not os.path.exists(os.path.join(root, "raw", "event_date=2026-01-28"))
    assert not os.path.exists(os.path.join(root, "dead_letter", "dt=2026-01-15"))
    kept = sorted({f.split("/")[1] for f in remaining if "/" in f})
    assert kept == [
        "dt=2026-01-30",
        "dt=2026-02-27",
        "event_date=2026-01-30",
        "event_date=2026-02-28",
    ]
    rows = read_metrics(os.path.join(root, "warehouse.duckdb"))
    assert sorted(rows["window_start"].dt.strftime("%Y-%m-%d %H:%M")) == [
        "2025-03-01 00:00",
        "2026-02-01 00:00",
    ]
    assert "deleted 2 rows from" in capsys.readouterr().out
    # Idempotent: nothing is left to delete.
    assert _summary(retention.apply_retention(root, as_of=AS_OF)) == ([], [], 0)


def test_retention_periods_are_configurable(root):
    result = retention.apply_retention(
        root,
        as_of=AS_OF,
        raw_retention_days=1,
        dead_letter_retention_days=1,
        metrics_retention_days=28,
        dry_run=True,
    )
    assert _summary(result) == (
        [
            ("2026-01-28", 2, 3, 1),
            ("2026-01-29", 2, 3, 0),
            ("2026-01-30", 1, 1, 0),
        ],  # 2026-02-28 is one day old: kept
        [("2026-01-15", 1, 2), ("2026-01-30", 1, 1), ("2026-02-27", 1, 1)],
        3,  # before 2026-02-01
    )


def test_the_command(root, capsys):
    assert retention.run(["--output_root", root, "--as_of", "2026-03-01", "--dry_run"]) == 0
    assert "total: 2 partitions, 4 files, 6 records" in capsys.readouterr().out
    assert retention.run(["--output_root", root, "--as_of", "2026-03-01"]) == 0
    assert not os.path.exists(os.path.join(root, "raw", "event_date=2026-01-29"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--raw_retention_days", "31"], "--raw_retention_days must be between 1 and 30"),
        (["--dead_letter_retention_days", "0"], "--dead_letter_retention_days must be between"),
        (["--metrics_retention_days", "0"], "--metrics_retention_days must be >= 1"),
        (["--as_of", "2026-02-30"], "--as_of must be a date"),
        (["--output_root", "gs://bucket/out"], "--output_root must be a local directory"),
    ],
)
def test_invalid_options_fail_with_a_clear_message(args, message, capsys):
    assert message in usage_error(retention.run, args, capsys)
