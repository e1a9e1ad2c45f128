"""Reconciliation and re-pricing: streaming metrics are approximate (events beyond the allowed
lateness are missing, a duplicate beyond the dedupe TTL is counted twice); a backfill over the
raw archive makes them equal to a pandas computation over the deduplicated input, replaces
only the keys of the days it reads, changes nothing when re-run, and re-prices with a new
price table."""

from __future__ import annotations

import json
from decimal import Decimal

import duckdb
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines import backfill
from pipelines.io.sinks.embedded import WriteEmbedded
from tests.core_inputs import T0_S, document
from tests.support.pipelines import TestPipeline
from transforms.analyze import AnalyzeEvents, CoreConfig

DAY_S = 86_400
PRICES = {  # model -> (USD per 1k prompt tokens, per 1k completion tokens)
    "test-1": {"gpt-4o-mini": ("0.0002", "0.0008"), "gemini-2.5-pro": ("0.001", "0.01")},
    "test-2": {"gpt-4o-mini": ("0.0004", "0.0016"), "gemini-2.5-pro": ("0.002", "0.02")},
}
METRIC_COLUMNS = ["request_count", "token_sum", "prompt_token_sum", "completion_token_sum"]


def write_price_table(path, version: str) -> str:
    models = {
        model: [{"effective_from": "2026-01-01", "prompt_per_1k": p, "completion_per_1k": c}]
        for model, (p, c) in PRICES[version].items()
    }
    path.write_text(json.dumps({"version": version, "currency": "USD", "models": models}))
    return str(path)


def streaming_config(price_table: str) -> CoreConfig:
    # Dedupe forgets an id 120 s (event time) after it arrived; windows take late events for
    # 600 s after they end. A copy 330 s later is written again but still counted.
    return CoreConfig(
        window_size_s=60,
        allowed_lateness_s=600,
        early_firing_s=30,
        dedupe_ttl_s=120,
        dedupe_shards=4,
        price_table=price_table,
    )


# (watermark in seconds after T0, or an event: (n, offset_s, changes))
SCRIPT = [
    ("watermark", 0),
    ("event", (1, 5, {})),
    ("event", (2, 10, {})),
    ("event", (2, 10, {})),  # redelivered within the TTL: a duplicate, not counted
    ("event", (3, 70, {})),
    ("event", (4, 15, {"model": "gemini-2.5-pro", "region": "eu"})),
    ("watermark", 200),  # [0, 60) and [60, 120) fire on time; ids 1-4 are forgotten
    ("event", (5, 30, {})),  # late within the lateness: a LATE pane
    ("watermark", 400),
    ("event", (3, 70, {})),  # redelivered after the TTL: written and counted again
    ("watermark", 1000),  # [0, 60) and [60, 120) have expired (end + 600 s)
    ("event", (6, 20, {})),  # beyond the allowed lateness: archived, in no streaming row
    ("event", (7, DAY_S + 5, {})),  # the next day
]


def inputs() -> list[dict]:
    return [document(n, offset_s, **changes) for kind, (n, offset_s, changes) in _events()]


def _events():
    return [(kind, value) for kind, value in SCRIPT if kind == "event"]


def run_streaming(root: str, price_table: str) -> None:
    stream = TestStream()
    for kind, value in SCRIPT:
        if kind == "watermark":
            stream = stream.advance_watermark_to(T0_S + value)
        else:
            n, offset_s, changes = value
            payload = json.dumps(document(n, offset_s, **changes)).encode()
            stream = stream.add_elements([TimestampedValue(payload, T0_S)])
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(options=options)
    outputs = (
        p | stream.advance_watermark_to_infinity() | AnalyzeEvents(streaming_config(price_table))
    )
    _ = outputs | WriteEmbedded(root)
    p.run().wait_until_finish()


def reconcile(root: str, start: str, end: str, price_table: str, run_id: str) -> None:
    args = ["--input_format", "avro", "--input", root, "--output_root", root]
    args += ["--start_date", start, "--end_date", end, "--regions", "us,eu"]
    assert backfill.run([*args, "--price_table", price_table, "--run_id", run_id]) == 0


def metrics(root: str) -> pd.DataFrame:
    with duckdb.connect(f"{root}/warehouse.duckdb", read_only=True) as db:
        frame = db.execute("SELECT * FROM metrics_minute").df()
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True).dt.as_unit("ns")
    return frame.set_index(["window_start", "model", "region"]).sort_index()


def window(offset_s: int) -> pd.Timestamp:
    return pd.Timestamp(T0_S + offset_s, unit="s", tz="UTC")


def truth(version: str) -> pd.DataFrame:
    """The exact metrics, by pandas, over the input deduplicated by event_id."""
    frame = pd.DataFrame(inputs()).drop_duplicates("event_id")
    frame["window_start"] = (
        pd.to_datetime(frame["event_time"], utc=True).dt.floor("60s").dt.as_unit("ns")
    )
    expected = frame.groupby(["window_start", "model", "region"]).agg(
        request_count=("event_id", "size"),
        token_sum=("token_count", "sum"),
        prompt_token_sum=("prompt_tokens", "sum"),
        completion_token_sum=("completion_tokens", "sum"),
    )
    costs = []
    for (_, model, _), row in expected.iterrows():
        prompt, completion = (Decimal(p) for p in PRICES[version][model])
        cost = (row["prompt_token_sum"] * prompt + row["completion_token_sum"] * completion) / 1000
        costs.append(float(cost.quantize(Decimal("1e-9"))))
    expected["estimated_cost_usd"] = costs
    return expected.astype({c: "int64" for c in METRIC_COLUMNS})


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = tmp_path_factory.mktemp("reconcile")
    prices = write_price_table(root / "prices-1.yaml", "test-1")
    run_streaming(str(root), prices)
    return str(root), prices, metrics(str(root))


def test_streaming_metrics_are_approximate(streamed):
    _, _, streamed_rows = streamed
    expected = truth("test-1")
    counts = streamed_rows["request_count"].to_dict()
    assert counts == {
        (window(0), "gemini-2.5-pro", "eu"): 1,
        (window(0), "gpt-4o-mini", "us"): 3,  # event 6 came after the lateness: 4 in truth
        (window(60), "gpt-4o-mini", "us"): 2,  # event 3 twice, after the TTL: 1 in truth
        (window(DAY_S), "gpt-4o-mini", "us"): 1,
    }
    assert expected["request_count"].to_dict() == {
        (window(0), "gemini-2.5-pro", "eu"): 1,
        (window(0), "gpt-4o-mini", "us"): 4,
        (window(60), "gpt-4o-mini", "us"): 1,
        (window(DAY_S), "gpt-4o-mini", "us"): 1,
    }
    # token_count is 10 n: 10 + 20 + 50 streamed against 10 + 20 + 50 + 60; 30 twice against once
    assert streamed_rows["token_sum"].tolist() == [40, 80, 60, 70]
    assert expected["token_sum"].tolist() == [40, 140, 30, 70]
    assert set(streamed_rows["source"]) == {"streaming"}
    assert set(streamed_rows["price_table_version"]) == {"test-1"}


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


def test_reconciliation_by_date_needs_windows_within_a_day():
    dates = ["--start_date=2026-01-27", "--end_date=2026-01-27"]
    options = backfill.BackfillOptions(
        ["--input_format=avro", "--input=x", *dates, "--window_size_s=7"]
    )
    assert any("--window_size_s must divide a day" in p for p in backfill.validate(options))
