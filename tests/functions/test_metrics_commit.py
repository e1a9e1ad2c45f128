"""What a metrics commit does (pipelines/io/sinks/metrics_commit.py, ADR 0007, 0010, 0011), run
through the embedded warehouse's commit on an in-memory DuckDB: which pane a key keeps
(emission time ranks, not pane_index), the freshness of each event measured once at the first
commit counting it, and the rollups and per-minute freshness, incremented at each commit and
equal to what a recompute from the minute rows gives (BigQuery's way)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from pipelines.io.sinks.embedded.warehouse import commit_metrics, create_tables, upsert_usage_rows
from pipelines.io.sinks.metrics_commit import (
    METRICS_NOT_CONTENT,
    freshness_bucket,
    recompute_freshness,
    recompute_rollups,
    replaces,
    touched_hours,
)
from pipelines.io.sinks.warehouse_tables import METRICS, table_record
from tests.support.sink_factories import T0, metric_row
from transforms import sketches
from transforms.elements import IngestionBin, UsageRow

S0 = int(T0.timestamp())


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def con():
    with duckdb.connect() as connection:
        create_tables(connection)
        yield connection


def _stored(con, table: str = "metrics_minute") -> list[dict]:
    cursor = con.execute(f"SELECT * FROM {table} ORDER BY ALL")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _ingestion(*pairs: tuple[int, int]) -> tuple[IngestionBin, ...]:
    return tuple(IngestionBin(S0 + s, n) for s, n in pairs)


@pytest.mark.parametrize(
    ("latency_s", "bucket"),
    [
        (-3.0, 0),  # clock skew
        (0.4, 0),
        (119.99, 119),
        (120.0, 120),
        (599.9, 599),
        (600.0, 600),
        (615.0, 610),
        (3599.0, 3590),
        (3600.0, 3600),
        (3659.0, 3600),
        (7265.0, 7260),
    ],
)
def test_freshness_buckets_are_whole_seconds_then_coarser(latency_s, bucket):
    assert freshness_bucket(latency_s) == bucket


def _record(**overrides) -> dict:
    return table_record(METRICS, metric_row(**overrides))


STORED = {"pane_index": 3, "emitted_at": _at(90)}


@pytest.mark.parametrize(
    ("new", "stored", "expected"),
    [
        ({}, None, True),  # nothing stored
        # Within a source the later emission wins, whatever the pane index: a relaunched job
        # restarts pane_index at 0, not the clock.
        ({"pane_index": 0, "emitted_at": _at(150)}, STORED, True),
        ({"pane_index": 9, "emitted_at": _at(80)}, STORED, False),  # older, out of order
        ({"pane_index": 4, "emitted_at": _at(150)}, STORED, True),
        # The same pane emitted later: only a change of content replaces it (a re-run).
        ({"pane_index": 3, "emitted_at": _at(150)}, STORED, False),
        ({"pane_index": 3, "emitted_at": _at(150), "token_sum": 1}, STORED, True),
        # A backfill outranks streaming, whatever the times; never the reverse.
        ({"source": "backfill", "emitted_at": _at(10)}, STORED, True),
        ({"emitted_at": _at(500)}, {**STORED, "source": "backfill"}, False),
        # A null source (rows from before the column) counts as streaming.
        ({"emitted_at": _at(150), "pane_index": 4}, {**STORED, "source": None}, True),
    ],
)
def test_which_pane_a_key_keeps(new, stored, expected):
    stored_record = None if stored is None else _record(**stored)
    if stored is not None and "source" in stored:
        stored_record["source"] = stored["source"]
    assert replaces(_record(**new), stored_record, METRICS_NOT_CONTENT, METRICS.key) is expected


def test_freshness_is_measured_once_per_event_at_its_first_commit(con):
    first = metric_row(
        pane_index=0,
        latencies_ms=(100.0, 200.0),
        emitted_at=_at(40),
        ingestion_counts=_ingestion((10, 2)),
    )
    result = commit_metrics(con, [first], _at(40))
    assert result.visible == {30: 2}
    (row,) = _stored(con)
    assert row["freshness_counts"] == [{"latency_s": 30, "count": 2}]

    # A retry or redelivery of the same pane, later: nothing more became visible.
    assert commit_metrics(con, [first], _at(400)).visible == {}

    # The next pane adds one event ingested at 70 s; the two before keep their 30 s.
    second = metric_row(
        pane_index=1,
        latencies_ms=(100.0, 200.0, 300.0),
        emitted_at=_at(75),
        ingestion_counts=_ingestion((10, 2), (70, 1)),
    )
    assert commit_metrics(con, [second], _at(80)).visible == {10: 1}
    # An older pane arriving after it (out of order) changes nothing.
    assert commit_metrics(con, [first], _at(90)).visible == {}
    (row,) = _stored(con)
    assert (row["request_count"], row["pane_index"]) == (3, 1)
    assert row["freshness_counts"] == [
        {"latency_s": 10, "count": 1},
        {"latency_s": 30, "count": 2},
    ]

    # A relaunched job (no state) emits a pane of its own events only: its later emission
    # wins, its new event is measured, and the stored histogram keeps what was ever visible,
    # so nothing is counted twice later.
    relaunched = metric_row(
        pane_index=0,
        latencies_ms=(500.0,),
        emitted_at=_at(200),
        ingestion_counts=_ingestion((190, 1)),
    )
    assert commit_metrics(con, [relaunched], _at(205)).visible == {15: 1}
    (row,) = _stored(con)
    assert row["request_count"] == 1
    assert row["ingestion_counts"] == [
        {"epoch_s": S0 + 10, "count": 2},
        {"epoch_s": S0 + 70, "count": 1},
        {"epoch_s": S0 + 190, "count": 1},
    ]

    # A reconciliation counts every event, including one the streaming job dropped as too late
    # (ingested at 100 s): only that one becomes visible now, with its long freshness.
    backfill = metric_row(
        source="backfill",
        latencies_ms=(1.0,) * 5,
        emitted_at=_at(3700),
        ingestion_counts=_ingestion((10, 2), (70, 1), (100, 1), (190, 1)),
    )
    assert commit_metrics(con, [backfill], _at(3705)).visible == {3600: 1}
    (row,) = _stored(con)
    assert (row["source"], row["request_count"]) == ("backfill", 5)
    assert sum(b["count"] for b in row["freshness_counts"]) == 5


def test_a_batch_keeps_the_newest_pane_per_key(con):
    older = metric_row(pane_index=2, emitted_at=_at(70), ingestion_counts=_ingestion((5, 2)))
    newer = older._replace(pane_index=3, emitted_at=_at(100))
    result = commit_metrics(con, [newer, older], _at(110))
    assert [r["pane_index"] for r in result.minute_rows] == [3]
    assert result.visible == {105: 2}


def _rows_of_two_hours() -> list:
    users = sketches.new_users()
    for name in ("ann", "bob"):
        sketches.add_user(users, name)
    other = sketches.new_users()
    for name in ("bob", "cy"):
        sketches.add_user(other, name)
    common = {"emitted_at": _at(390)}
    return [
        metric_row(
            latencies_ms=(10.0, 20.0),
            policy_flag_counts={"pii_redacted": 1},
            users_hll=sketches.serialize_users(users),
            ingestion_counts=_ingestion((30, 2)),
            **common,
        ),
        metric_row(
            window_start=_at(60),
            latencies_ms=(30.0,),
            policy_flag_counts={"pii_redacted": 1, "jailbreak_suspected": 1},
            users_hll=sketches.serialize_users(other),
            estimated_cost_usd=None,
            source="backfill",
            ingestion_counts=_ingestion((100, 1)),
            **common,
        ),
        metric_row(window_start=_at(3600), latencies_ms=(40.0,), **common),  # the next hour
        metric_row(region="us-central1", latencies_ms=(50.0,), **common),  # another region
    ]


def test_rollups_merge_the_minute_rows(con):
    rows = _rows_of_two_hours()
    result = commit_metrics(con, rows, _at(400))
    rollups = {(r["grain"], r["period_start"], r["region"]): r for r in result.rollups}
    assert sorted((g, p - T0, r) for g, p, r in rollups) == [
        ("day", dt.timedelta(hours=-10), "europe-west1"),
        ("day", dt.timedelta(hours=-10), "us-central1"),
        ("hour", dt.timedelta(0), "europe-west1"),
        ("hour", dt.timedelta(0), "us-central1"),
        ("hour", dt.timedelta(hours=1), "europe-west1"),
    ]
    hour = rollups[("hour", T0, "europe-west1")]
    merged = sketches.new_latency_counts()
    for row in rows[:2]:
        sketches.merge_latency_counts(merged, sketches.from_latency_bins(row.latency_sketch_bins))
    assert (
        hour["window_count"],
        hour["request_count"],
        hour["token_sum"],
        hour["estimated_cost_usd"],
        hour["unpriced_window_count"],
        hour["backfill_window_count"],
    ) == (2, 3, 900, 0.5, 1, 1)
    assert (hour["latency_p50_ms"], hour["latency_p95_ms"], hour["latency_p99_ms"]) == (
        sketches.latency_quantiles(merged, (0.5, 0.95, 0.99))
    )
    assert hour["latency_sketch_bins"] == [
        {"index": i, "count": n} for i, n in sorted(merged.items())
    ]
    assert hour["distinct_users_approx"] == 3  # the union of {ann, bob} and {bob, cy}
    assert hour["policy_flag_counts"] == [
        {"key": "jailbreak_suspected", "value": 1},
        {"key": "pii_redacted", "value": 2},
    ]
    assert hour["freshness_counts"] == [
        {"latency_s": 300, "count": 1},
        {"latency_s": 370, "count": 2},
    ]
    day = rollups[("day", _at(-36000), "europe-west1")]
    assert (day["window_count"], day["request_count"], day["estimated_cost_usd"]) == (3, 4, 0.75)
    assert day["distinct_users_approx"] == 4  # and the next hour's user-key-0001
    assert day["period_end"] - day["period_start"] == dt.timedelta(days=1)
    # The per-minute freshness sums the models and regions of each window.
    assert [
        (r["window_start"] - T0, r["latency_s"], r["events"]) for r in result.freshness_rows
    ] == [
        (dt.timedelta(0), 370, 2),
        (dt.timedelta(minutes=1), 300, 1),
    ]
    # What was returned is what was stored.
    assert len(_stored(con, "metrics_rollup")) == 5


def test_rollups_follow_a_replaced_minute_row_and_a_repeat_changes_nothing(con):
    rows = _rows_of_two_hours()
    commit_metrics(con, rows, _at(400))
    before = _stored(con, "metrics_rollup")
    commit_metrics(con, rows, _at(900))  # a retried batch: the same rollups, recomputed
    again = _stored(con, "metrics_rollup")
    assert [{**r, "computed_at": None} for r in again] == [
        {**r, "computed_at": None} for r in before
    ]
    corrected = rows[0]._replace(emitted_at=_at(500), pane_index=1, request_count=7, token_sum=2100)
    result = commit_metrics(con, [corrected], _at(510))
    hour = next(r for r in result.rollups if r["grain"] == "hour")
    assert (hour["request_count"], hour["token_sum"]) == (7 + 1, 2100 + 300)
    day = next(r for r in result.rollups if r["grain"] == "day" and r["region"] == "europe-west1")
    assert day["request_count"] == 8 + 1  # the other hour's row is still counted, once


def _usage(**overrides) -> UsageRow:
    fields = {
        "hour_start": T0,
        "user_key": "u1",
        "model": "gemini-2.5-pro",
        "model_version": "001",
        "request_count": 2,
        "token_sum": 600,
        "prompt_token_sum": 400,
        "completion_token_sum": 200,
        "unsplit_token_sum": 0,
        "latency_ms_sum": 300.0,
        "policy_flagged_count": 1,
        "estimated_cost_usd": 0.5,
        "price_table_version": "test-1",
        "pane_timing": "EARLY",
        "pane_index": 0,
        "emitted_at": _at(300),
        "source": "streaming",
    }
    return UsageRow(**{**fields, **overrides})


def test_usage_rows_follow_the_pane_rule(tmp_path):
    db = str(tmp_path / "w.duckdb")
    with duckdb.connect(db) as connection:
        create_tables(connection)
    early = _usage()
    on_time = _usage(request_count=3, pane_timing="ON_TIME", pane_index=1, emitted_at=_at(3610))
    assert upsert_usage_rows(db, [early, on_time]) == 1  # one key: the newest pane
    assert upsert_usage_rows(db, [early]) == 0  # older: ignored
    assert upsert_usage_rows(db, [on_time._replace(emitted_at=_at(9999))]) == 0  # a replay
    relaunched = _usage(request_count=1, emitted_at=_at(4000))
    assert upsert_usage_rows(db, [relaunched]) == 1  # later emission wins (pane 0 again)
    backfill = _usage(request_count=4, source="backfill", emitted_at=_at(100))
    assert upsert_usage_rows(db, [backfill, _usage(user_key="u2")]) == 2
    with duckdb.connect(db, read_only=True) as connection:
        stored = connection.sql(
            "SELECT user_key, request_count, source FROM usage_hourly ORDER BY user_key"
        ).fetchall()
    assert stored == [("u1", 4, "backfill"), ("u2", 2, "streaming")]


def _without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "computed_at"} for r in records]


def test_incremented_rollups_equal_a_recompute_from_the_minute_rows(con):
    """The embedded warehouse increments the rollups at each commit; BigQuery and retention
    recompute them from the minute rows: after any sequence of panes the two agree."""
    rows = _rows_of_two_hours()
    commit_metrics(con, rows, _at(400))
    later = [
        rows[0]._replace(
            pane_index=1, emitted_at=_at(500), token_sum=2000, ingestion_counts=_ingestion((30, 3))
        ),
        rows[2]._replace(source="backfill", emitted_at=_at(50), estimated_cost_usd=None),
        metric_row(window_start=_at(120), latencies_ms=(70.0, 80.0), emitted_at=_at(500)),
    ]
    commit_metrics(con, later, _at(520))
    minute_rows = _stored(con)
    hours = touched_hours(minute_rows)
    recomputed = recompute_rollups(minute_rows, [], hours, _at(0))
    stored = _stored(con, "metrics_rollup")
    key = ("grain", "period_start", "model", "region")

    def ordered(records):
        return sorted(_without_time(records), key=lambda r: tuple(r[k] for k in key))

    assert ordered(stored) == ordered(recomputed)
    windows = {r["window_start"] for r in minute_rows}
    assert _without_time(_stored(con, "freshness_minute")) == _without_time(
        sorted(
            recompute_freshness(minute_rows, windows, _at(0)),
            key=lambda r: (r["window_start"], r["latency_s"]),
        )
    )
