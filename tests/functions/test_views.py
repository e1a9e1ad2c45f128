"""The hourly and daily views on hand-computed examples, in DuckDB (the same SQL runs in
BigQuery: tests/integration/test_gcp_sinks.py): the freshness SLO, usage per user and per model
version, the top users, the hourly metrics. Periods are UTC whatever the session time zone."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from pipelines.io.sinks.embedded import warehouse
from pipelines.io.sinks.embedded.warehouse import upsert_records
from pipelines.io.sinks.warehouse_tables import FRESHNESS
from tests.functions.test_metrics_commit import _usage
from tests.support.sink_factories import T0, metric_row

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "w.duckdb")
    warehouse.create_warehouse(path)
    return path


def _freshness(db, rows: list[tuple[dt.timedelta, int, int]]) -> None:
    records = [
        {"window_start": T0 + at, "latency_s": s, "events": n, "computed_at": T0}
        for at, s, n in rows
    ]
    with duckdb.connect(db) as con:
        upsert_records(con, FRESHNESS, records)


def _query(db, sql: str, time_zone: str = "UTC") -> list[tuple]:
    with duckdb.connect(db, read_only=True) as con:
        con.execute(f"SET TimeZone = '{time_zone}'")
        return con.sql(sql).fetchall()


def test_freshness_slo_per_hour_and_day(db):
    minute = dt.timedelta(minutes=1)
    _freshness(
        db,
        [
            # 10:00-11:00: 100 events, 90 visible in under 120 s: 90%, missed.
            (dt.timedelta(0), 10, 50),
            (minute, 119, 40),  # 119 s: within
            (minute, 120, 5),  # 120 s: not within (visible in 120 s or more)
            (2 * minute, 700, 5),
            # 11:00-12:00: 200 events, all within: met.
            (HOUR, 5, 200),
        ],
    )
    hourly = _query(
        db,
        "SELECT hour, events, events_within_slo, slo_compliance, slo_met, freshness_p50_s, "
        "freshness_p99_s, freshness_max_s FROM freshness_slo_hourly ORDER BY hour",
        time_zone="Asia/Kolkata",  # +05:30: hours must still be UTC hours
    )
    assert [(h.astimezone(dt.UTC) - T0, *rest) for h, *rest in hourly] == [
        # Nearest rank: p50 is the 50th event (10 s), p99 the 99th (700 s).
        (dt.timedelta(0), 100, 90, 0.9, False, 10, 700, 700),
        (HOUR, 200, 200, 1.0, True, 5, 5, 5),
    ]
    daily = _query(
        db,
        "SELECT day, events, events_within_slo, slo_compliance, slo_target, slo_met "
        "FROM freshness_slo_daily",
        time_zone="Asia/Tokyo",
    )
    assert daily == [(T0.date(), 300, 290, pytest.approx(290 / 300), 0.99, False)]


def test_usage_per_user_and_model_version_and_top_users(db):
    rows = [
        _usage(user_key="ann", estimated_cost_usd=1.0, token_sum=100),
        _usage(user_key="ann", hour_start=T0 + HOUR, estimated_cost_usd=2.0, token_sum=200),
        _usage(user_key="ann", model_version="002", estimated_cost_usd=0.5, token_sum=50),
        _usage(user_key="bob", estimated_cost_usd=None, token_sum=999),
        _usage(user_key="cy", estimated_cost_usd=3.0, token_sum=10),
        _usage(user_key="dee", model="other", model_version="", estimated_cost_usd=0.25),
    ]
    warehouse.upsert_usage_rows(db, rows)
    by_user = _query(
        db,
        "SELECT user_key, request_count, token_sum, estimated_cost_usd, unpriced_rows, models "
        "FROM usage_by_user_daily ORDER BY user_key",
    )
    assert by_user == [
        ("ann", 6, 350, 3.5, 0, 1),
        ("bob", 2, 999, None, 1, 1),
        ("cy", 2, 10, 3.0, 0, 1),
        ("dee", 2, 600, 0.25, 0, 1),
    ]
    hourly = _query(
        db, "SELECT hour, user_key, request_count FROM usage_by_user_hourly ORDER BY ALL"
    )
    assert [(h - T0, u, n) for h, u, n in hourly] == [
        (dt.timedelta(0), "ann", 4),
        (dt.timedelta(0), "bob", 2),
        (dt.timedelta(0), "cy", 2),
        (dt.timedelta(0), "dee", 2),
        (HOUR, "ann", 2),
    ]
    by_version = _query(
        db,
        "SELECT model, model_version, request_count, users, latency_mean_ms "
        "FROM usage_by_model_version_daily ORDER BY ALL",
    )
    assert by_version == [
        ("gemini-2.5-pro", "001", 8, 3, 150.0),
        ("gemini-2.5-pro", "002", 2, 1, 150.0),
        ("other", "", 2, 1, 150.0),
    ]
    top = _query(db, "SELECT rank, user_key, estimated_cost_usd FROM top_users_daily ORDER BY rank")
    # By cost; a user without a price counts as 0 (ties broken by tokens).
    assert top == [(1, "ann", 3.5), (2, "cy", 3.0), (3, "dee", 0.25), (4, "bob", None)]


def test_top_users_keep_twenty_per_day(db):
    warehouse.upsert_usage_rows(
        db, [_usage(user_key=f"u{i:02}", estimated_cost_usd=float(i)) for i in range(25)]
    )
    top = _query(db, "SELECT rank, user_key FROM top_users_daily ORDER BY rank")
    assert [u for _, u in top] == [f"u{i:02}" for i in range(24, 4, -1)]


def test_hourly_metrics_and_percentiles_come_from_the_rollups(db):
    warehouse.upsert_metric_rows(
        db,
        [
            metric_row(latencies_ms=(10.0, 20.0)),
            metric_row(window_start=T0 + HOUR, latencies_ms=(30.0,), region="us-central1"),
        ],
    )
    hourly = _query(
        db,
        "SELECT hour, region, window_count, request_count, distinct_users_approx "
        "FROM metrics_hourly ORDER BY hour",
    )
    assert [(h - T0, *rest) for h, *rest in hourly] == [
        (dt.timedelta(0), "europe-west1", 1, 2, 1),
        (HOUR, "us-central1", 1, 1, 1),
    ]
    (p50,) = _query(
        db,
        "SELECT latency_p50_ms FROM latency_percentiles_hourly WHERE hour = TIMESTAMP "
        f"'{(T0 + HOUR).isoformat()}'",
    )
    assert p50[0] == pytest.approx(30.0, rel=0.01)
