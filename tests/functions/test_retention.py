"""Retention of the embedded stores: exact partitions, files, records and rows deleted; a dry
run deletes nothing; a second run finds nothing; the limits of the seed design hold."""

from __future__ import annotations

import datetime as dt
import glob
import os

import duckdb
import pytest

from pipelines import retention
from pipelines.io.sinks.embedded.warehouse import read_metrics
from tests.support.retention import embedded_store

# Raw, dead letters and minute rows: before 2026-01-30; rollups and usage: before 2025-03-01.
AS_OF = dt.date(2026, 3, 1)


@pytest.fixture
def root(tmp_path):
    return embedded_store(tmp_path)


def _files(root) -> list[str]:
    paths = glob.glob(f"{root}/**/*", recursive=True) + glob.glob(f"{root}/**/.*", recursive=True)
    return sorted(os.path.relpath(p, root) for p in paths if os.path.isfile(p))


def _summary(result: retention.RetentionResult) -> tuple:
    return (
        [(p.day.isoformat(), len(p.files), p.records, len(p.leftovers)) for p in result.raw],
        [(p.day.isoformat(), len(p.files), p.records) for p in result.dead_letters],
        result.metric_rows,
        result.aggregate_rows,
    )


# Minute rows of 2025-01-01, 2025-02-28 23:59 and 2025-03-01 go (30 days); the hourly and daily
# rollups of the first two go (365 days), those of 2025-03-01 outlive their minute rows.
EXPECTED = (
    [("2026-01-28", 2, 3, 1), ("2026-01-29", 2, 3, 0)],
    [("2026-01-15", 1, 2)],
    3,
    {"metrics_rollup": 4, "freshness_minute": 0, "usage_hourly": 0},
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
    assert "would delete 3 rows from" in printed


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
    db = os.path.join(root, "warehouse.duckdb")
    rows = read_metrics(db)
    assert sorted(rows["window_start"].dt.strftime("%Y-%m-%d %H:%M")) == ["2026-02-01 00:00"]
    # The rollups of 2025-03-01 are kept a year, and still say what the minute rows said.
    rollups = read_metrics(db, "metrics_rollup").sort_values(["period_start", "grain"])
    assert [
        (r["grain"], r["period_start"].strftime("%Y-%m-%d %H:%M"), r["request_count"])
        for r in rollups.to_dict("records")
    ] == [
        ("day", "2025-03-01 00:00", 2),
        ("hour", "2025-03-01 00:00", 2),
        ("day", "2026-02-01 00:00", 2),
        ("hour", "2026-02-01 00:00", 2),
    ]
    assert "deleted 3 rows from" in capsys.readouterr().out
    # Idempotent: nothing is left to delete.
    assert _summary(retention.apply_retention(root, as_of=AS_OF)) == (
        [],
        [],
        0,
        {"metrics_rollup": 0, "freshness_minute": 0, "usage_hourly": 0},
    )


def test_minute_rows_past_retention_are_rolled_up_before_they_go(root):
    """A rollup that lags its minute rows (written before the rows were corrected, say) is
    recomputed from them before they are deleted."""
    db = os.path.join(root, "warehouse.duckdb")
    with duckdb.connect(db) as con:
        con.execute("UPDATE metrics_rollup SET request_count = 99 WHERE grain = 'hour'")
    retention.apply_retention(root, as_of=AS_OF)
    rollups = read_metrics(db, "metrics_rollup")
    kept = rollups[rollups["grain"] == "hour"].sort_values("period_start")
    # 2025-03-01's minute rows were deleted: its hour was recomputed from them first (2); the
    # hour of 2026-02-01 keeps its minute rows and was not touched (99).
    assert kept["request_count"].tolist() == [2, 99]


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
        3,  # minute rows: before 2026-01-30
        {"metrics_rollup": 6, "freshness_minute": 0, "usage_hourly": 0},  # before 2026-02-01
    )
