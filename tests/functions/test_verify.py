"""``verify``'s comparisons as plain functions: metric rows against the rows recomputed from
the archive (counts exactly, sketches by content), and the audit log against the archive."""

from __future__ import annotations

import datetime as dt

from pipelines.io.sinks.files import write_avro_files
from pipelines.io.sinks.warehouse_tables import METRICS, table_record
from pipelines.verify import Difference, archive_partitions, audit_differences, metric_differences
from tests.support.factories import redacted_event
from tests.support.sink_factories import T0, metric_row
from transforms import sketches
from transforms.elements import to_record


def stored(row):
    return table_record(METRICS, row)


def users(*keys: str) -> bytes:
    sketch = sketches.new_users()
    for key in keys:
        sketches.add_user(sketch, key)
    return sketches.serialize_users(sketch)


def test_equal_rows_have_no_difference_whatever_the_pane_and_emission():
    row = metric_row()
    pane = row._replace(pane_index=4, pane_timing="LATE", emitted_at=T0, source="streaming")
    assert metric_differences([row], [stored(pane)]) == []


def test_counts_sketch_bins_maps_and_missing_rows_are_differences():
    row = metric_row(latencies_ms=(100.0, 200.0), policy_flag_counts={"pii": 1})
    other_window = metric_row(window_start=T0 + dt.timedelta(minutes=1))
    lost = metric_row(window_start=T0 + dt.timedelta(minutes=2))
    changed = row._replace(
        request_count=1,
        latency_sketch_bins=metric_row(latencies_ms=(100.0, 900.0)).latency_sketch_bins,
        policy_flag_counts={"pii": 2},
    )
    found = metric_differences([row, lost], [stored(changed), stored(other_window)])
    key = "2026-01-27T10:00:00Z gemini-2.5-pro europe-west1"
    assert Difference(key, "request_count: stored 1, archive 2") in found
    assert [d.what.split(":")[0] for d in found if d.key == key] == [
        "request_count",
        "latency_sketch_bins",
        "policy_flag_counts",
    ]
    assert (
        Difference(
            "2026-01-27T10:01:00Z gemini-2.5-pro europe-west1",
            "a row of 2 events the archive lacks",
        )
        in found
    )
    assert (
        Difference(
            "2026-01-27T10:02:00Z gemini-2.5-pro europe-west1",
            "no row (the archive holds 2 events)",
        )
        in found
    )


def test_users_are_compared_by_content_not_by_bytes_or_estimate():
    many = [f"user-{i}" for i in range(3000)]
    direct = users(*many)
    halves = sketches.merge_users(
        [
            sketches.deserialize_users(users(*many[::2])),
            sketches.deserialize_users(users(*many[1::2])),
        ]
    )
    merged = sketches.serialize_users(halves)
    assert merged != direct  # other bytes (and estimator) for the same users
    row = metric_row(users_hll=direct)
    assert metric_differences([row], [stored(row._replace(users_hll=merged))]) == []
    fewer = stored(row._replace(users_hll=users(*many[1:])))
    (difference,) = metric_differences([row], [fewer])
    assert "distinct users" in difference.what


def test_cost_is_compared_only_under_the_same_price_table():
    row = metric_row(estimated_cost_usd=1.0, price_table_version="v1")
    assert (
        metric_differences(
            [row], [stored(row._replace(estimated_cost_usd=2.0, price_table_version="v0"))]
        )
        == []
    )
    (difference,) = metric_differences([row], [stored(row._replace(estimated_cost_usd=2.0))])
    assert difference.what == "estimated_cost_usd: stored 2.0, archive 1.0"


def test_fields_a_row_predates_are_not_compared():
    row = metric_row(unsplit_token_sum=5, latest_event_time=T0)
    old = stored(row._replace(unsplit_token_sum=None, latest_event_time=None))
    assert metric_differences([row], [old]) == []


def test_audit_differences():
    archived = [
        ("f#0", "2026-01-27", "us"),
        ("f#9", "2026-01-27", "us"),
        (None, "2026-01-27", "us"),
    ]
    records = {"f#0": "written", "f#9": "duplicate", "g#1": "written"}
    assert audit_differences(archived, records, ["f#0", "f#9", "g#1"]) == [
        Difference("input f#9", "archived, but its audit record says duplicate"),
        Difference("input g#1", "audited written, not archived"),
    ]
    assert audit_differences(archived[:1], {}, []) == [
        Difference("input f#0", "archived, no audit record")
    ]


def test_the_partitions_verified_are_those_the_archive_holds(tmp_path):
    for day, region in (("2026-01-27", "us"), ("2026-01-28", "eu/x"), ("2026-02-01", "us")):
        noon = dt.datetime.fromisoformat(f"{day}T12:00:00+00:00")
        directory = tmp_path / "raw" / f"event_date={day}" / f"region={region.replace('/', '%2F')}"
        record = to_record(redacted_event(event_time=noon, region=region))
        write_avro_files(
            str(directory),
            [record],
            schema_name="redacted_event",
            id_field="event_id",
            max_records=9,
        )
    root = str(tmp_path)
    assert archive_partitions(root, None, None, None) == [
        ("2026-01-27", "us"),
        ("2026-01-28", "eu/x"),
        ("2026-02-01", "us"),
    ]
    january = archive_partitions(root, dt.date(2026, 1, 1), dt.date(2026, 1, 31), ["us"])
    assert january == [("2026-01-27", "us")]
