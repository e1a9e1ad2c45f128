"""Reconciliation by date: the backfill's validation of the window size."""

from __future__ import annotations

from pipelines import backfill


def test_reconciliation_by_date_needs_windows_within_a_day():
    dates = ["--start_date=2026-01-27", "--end_date=2026-01-27"]
    options = backfill.BackfillOptions(
        ["--input_format=avro", "--input=x", *dates, "--window_size_s=7"]
    )
    assert any("--window_size_s must divide a day" in p for p in backfill.validate(options))
