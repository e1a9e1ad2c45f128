"""Retention beyond the embedded store: separate roots for the archive and the dead letters
(any FileSystems path, gs:// included), and BigQuery tables, without a service (a fake
client). Against the emulators: tests/integration/test_gcp_replay_retention.py."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from types import SimpleNamespace

import pytest

from pipelines import retention
from tests.support.pipelines import usage_error
from tests.support.retention import embedded_store

AS_OF = dt.date(2026, 3, 1)


class _FakeBigQuery:
    """Counts rows by the query's table and records what ran."""

    def __init__(self, counts: dict[str, int]):
        self.counts = counts
        self.queries = []

    def query(self, sql, job_config=None):
        (parameter,) = job_config.query_parameters
        self.queries.append((sql, parameter.value))
        table = sql.split("`")[1]
        return SimpleNamespace(result=lambda: [(self.counts.get(table, 0),)])


def test_roots_and_bigquery_tables_each_their_own(tmp_path, capsys):
    store = embedded_store(tmp_path)
    dead = tmp_path / "restricted"
    shutil.move(os.path.join(store, "dead_letter"), dead / "dead_letter")
    client = _FakeBigQuery(
        {"p.d.metrics_minute": 7, "p.d.metrics_rollup": 4, "p.r.dead_letters": 3}
    )
    result = retention.apply_retention(
        str(tmp_path / "unused"),
        as_of=AS_OF,
        raw_root=store,
        dead_letter_root=str(dead),
        bigquery_dataset="p.d",
        dead_letter_table="p.r.dead_letters",
        client=client,
    )
    assert [p.day.isoformat() for p in result.raw] == ["2026-01-28", "2026-01-29"]
    assert [p.day.isoformat() for p in result.dead_letters] == ["2026-01-15"]
    assert (result.metric_rows, result.dead_letter_rows) == (7, 3)
    assert result.aggregate_rows == {"metrics_rollup": 4, "freshness_minute": 0, "usage_hourly": 0}
    statements = [(sql.split()[0], sql.split("`")[1], cutoff) for sql, cutoff in client.queries]
    year = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)  # --metrics_retention_days 365
    month = dt.datetime(2026, 1, 30, tzinfo=dt.UTC)  # --minute_retention_days 30, dead letters
    assert statements == [
        ("SELECT", "p.d.metrics_rollup", year),
        ("DELETE", "p.d.metrics_rollup", year),
        ("SELECT", "p.d.freshness_minute", year),  # nothing to delete: no DELETE
        ("SELECT", "p.d.usage_hourly", year),
        ("SELECT", "p.d.metrics_minute", month),
        ("DELETE", "p.d.metrics_minute", month),
        ("SELECT", "p.r.dead_letters", month),
        ("DELETE", "p.r.dead_letters", month),
    ]
    # Each table by its partitioning column: whole partitions.
    columns = {sql.split("`")[1]: sql.split("`")[3] for sql, _ in client.queries}
    assert columns == {
        "p.d.metrics_rollup": "period_start",
        "p.d.freshness_minute": "window_start",
        "p.d.usage_hourly": "hour_start",
        "p.d.metrics_minute": "window_start",
        "p.r.dead_letters": "failed_at",
    }
    assert all("< @cutoff" in sql for sql, _ in client.queries)  # whole day partitions
    printed = capsys.readouterr().out
    assert "deleted 7 rows from BigQuery p.d.metrics_minute" in printed
    assert "deleted 3 rows from BigQuery p.r.dead_letters" in printed
    assert "deleted 4 rows from BigQuery p.d.metrics_rollup" in printed


def test_a_dry_run_counts_and_deletes_nothing_in_bigquery(tmp_path):
    client = _FakeBigQuery({"p.d.metrics_minute": 2})
    result = retention.apply_retention(
        str(tmp_path), as_of=AS_OF, bigquery_dataset="p.d", dry_run=True, client=client
    )
    assert result.metric_rows == 2
    assert [sql.split()[0] for sql, _ in client.queries] == ["SELECT"] * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output_root", "gs://b/x"], "--output_root must be a local directory"),
        (["--bigquery_dataset", "nodot"], "--bigquery_dataset must be PROJECT.DATASET"),
        (["--dead_letter_table", "p.d"], "--dead_letter_table must be PROJECT.DATASET.TABLE"),
    ],
)
def test_invalid_google_cloud_flags(args, message, capsys):
    assert message in usage_error(retention.run, args, capsys)


def test_gs_roots_are_accepted_with_bigquery(monkeypatch):
    seen = {}
    monkeypatch.setattr(retention, "apply_retention", lambda root, **kw: seen.update(kw))
    assert (
        retention.run(
            [
                "--raw_root=gs://b/raw",
                "--dead_letter_root=gs://b/dl",
                "--bigquery_dataset=my-project.d",
                "--dead_letter_table=my-project.r.dead_letters",
                "--output_root=gs://b/ignored",
            ]
        )
        == 0
    )
    assert (seen["raw_root"], seen["dead_letter_root"]) == ("gs://b/raw", "gs://b/dl")
    assert seen["dead_letter_table"] == "my-project.r.dead_letters"
