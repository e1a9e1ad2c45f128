"""Reconciliation and re-pricing end to end: a backfill over the raw archive of the streamed
scenario (``tests/support/reconcile.py``) makes the metrics equal to a pandas computation over
the deduplicated input, replaces only the keys of the days it reads, changes nothing when
re-run, and re-prices with a new price table. ``verify`` lists the windows the stream left
approximate until the reconciliation of their day."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines import backfill
from tests.support.reconcile import (
    DAY_S,
    METRIC_COLUMNS,
    metrics,
    streamed_store,
    truth,
    window,
    write_price_table,
)
from tests.support.verify import assert_verified, verify_output


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    return streamed_store(tmp_path_factory)


def reconcile(root: str, start: str, end: str, price_table: str, run_id: str) -> None:
    args = ["--input_format", "avro", "--input", root, "--output_root", root]
    args += ["--start_date", start, "--end_date", end, "--regions", "us,eu"]
    assert backfill.run([*args, "--price_table", price_table, "--run_id", run_id]) == 0


def test_verify_lists_what_streaming_left_approximate(streamed, capsys):
    """Runs first (the other tests reconcile the store). What verify expects of a streaming
    run: an event archived beyond the allowed lateness is in no pane (id 6, in the first
    minute), and a copy after the dedupe TTL is counted twice (id 3); other windows agree."""
    root, *_ = streamed
    code, printed = verify_output(
        root, capsys, "--start_date", "2026-01-27", "--end_date", "2026-01-28"
    )
    assert code == 1
    lines = [line.strip() for line in printed.splitlines() if line.startswith("    ")]
    first_minute = f"{window(0):%Y-%m-%dT%H:%M:%SZ} gpt-4o-mini us"
    second_minute = f"{window(60):%Y-%m-%dT%H:%M:%SZ} gpt-4o-mini us"
    assert f"{first_minute}: request_count: stored 3, archive 4" in lines
    assert f"{second_minute}: request_count: stored 2, archive 1" in lines
    assert all(line.startswith((first_minute, second_minute)) for line in lines), lines


def test_reconciliation_makes_the_metrics_exact_and_rerunning_changes_nothing(streamed, tmp_path):
    root, prices, streamed_rows = streamed
    expected = truth("test-1")

    # The first day only: its keys become exact; the next day keeps its streaming row.
    reconcile(root, "2026-01-27", "2026-01-27", prices, "reconcile-day-1")
    after_day_1 = metrics(root)
    first_day = after_day_1.index.get_level_values("window_start") < window(DAY_S)
    pd.testing.assert_frame_equal(
        after_day_1.loc[first_day, METRIC_COLUMNS], expected.loc[first_day, METRIC_COLUMNS]
    )
    assert after_day_1["source"].tolist() == ["backfill", "backfill", "backfill", "streaming"]
    next_day_key = (window(DAY_S), "gpt-4o-mini", "us")
    compared = ["request_count", "token_sum", "emitted_at", "pane_index", "source"]
    assert after_day_1.loc[next_day_key, compared].equals(streamed_rows.loc[next_day_key, compared])

    # Both days: every row equals the pandas computation, costs included.
    reconcile(root, "2026-01-27", "2026-01-28", prices, "reconcile-both")
    reconciled = metrics(root)
    pd.testing.assert_frame_equal(
        reconciled[[*METRIC_COLUMNS, "estimated_cost_usd"]], expected, check_exact=True
    )
    assert set(reconciled["source"]) == {"backfill"}
    # gemini (n=4): (28 * 0.001 + 12 * 0.01) / 1000; gpt-4o-mini, ids 1, 2, 5, 6 (n sums to
    # 14): (98 * 0.0002 + 42 * 0.0008) / 1000; id 3: (21 * 0.0002 + 9 * 0.0008) / 1000; id 7.
    assert reconciled["estimated_cost_usd"].tolist() == [0.000148, 0.0000532, 0.0000114, 0.0000266]
    assert reconciled["pane_timing"].tolist() == ["ON_TIME"] * 4

    # Re-running is a no-op: the same rows, emitted_at included.
    reconcile(root, "2026-01-27", "2026-01-28", prices, "reconcile-again")
    pd.testing.assert_frame_equal(metrics(root), reconciled)
    assert_verified(root, "--price_table", prices)


def test_a_backfill_with_a_new_price_table_reprices_the_range(streamed, tmp_path):
    root, prices, _ = streamed
    reconcile(root, "2026-01-27", "2026-01-28", prices, "before-repricing")
    before = metrics(root)
    new_prices = write_price_table(tmp_path / "prices-2.yaml", "test-2")
    reconcile(root, "2026-01-27", "2026-01-27", new_prices, "repricing")
    after = metrics(root)
    first_day = after.index.get_level_values("window_start") < window(DAY_S)
    assert after["price_table_version"].tolist() == ["test-2", "test-2", "test-2", "test-1"]
    expected = truth("test-2")
    assert after.loc[first_day, "estimated_cost_usd"].tolist() == (
        expected.loc[first_day, "estimated_cost_usd"].tolist()
    )
    # Twice the test-1 prices: twice the cost, the same tokens.
    assert after["estimated_cost_usd"].tolist() == [0.000296, 0.0001064, 0.0000228, 0.0000266]
    pd.testing.assert_frame_equal(after[METRIC_COLUMNS], before[METRIC_COLUMNS])
    assert (after.loc[first_day, "emitted_at"] > before.loc[first_day, "emitted_at"]).all()
