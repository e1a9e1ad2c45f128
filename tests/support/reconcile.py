"""The reconciliation scenario: a scripted stream (TestStream) whose streaming metrics are
approximate (an event beyond the allowed lateness, a duplicate beyond the dedupe TTL), written
to the embedded stores, and the exact metrics pandas computes from its input."""

from __future__ import annotations

import json
from decimal import Decimal

import duckdb
import pandas as pd
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines.io.sinks.embedded import WriteEmbedded
from tests.support.core_inputs import T0_S, document
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


def streamed_store(tmp_path_factory) -> tuple[str, str, pd.DataFrame]:
    """Runs the scripted stream into a fresh root: (root, price table path, its metrics)."""
    root = tmp_path_factory.mktemp("reconcile")
    prices = write_price_table(root / "prices-1.yaml", "test-1")
    run_streaming(str(root), prices)
    return str(root), prices, metrics(str(root))
