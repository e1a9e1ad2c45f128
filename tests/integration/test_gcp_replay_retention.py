"""Integration: dead letters on Google Cloud, queried, replayed and expired. A backfill with the
Google Cloud sinks dead-letters events to Cloud Storage and to the BigQuery dead-letter table;
the dead-letter replay re-submits them from the table and from the gs:// files through the
Google Cloud sinks; retention then deletes the gs:// partitions and the BigQuery rows past
their age. Everything against the local stand-ins (tests/stack/local_stack.py)."""

from __future__ import annotations

import collections
import datetime as dt
import json
import uuid

import pytest

from tests.support.core_inputs import document
from tests.support.gcp_stack import bq_rows, pg_rows

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _line(n: int, when: dt.datetime, **changes) -> bytes:
    stamp = when.isoformat().replace("+00:00", "Z")
    return json.dumps(document(n, event_time=stamp, **changes)).encode()


def _gcs_objects(bucket: str, prefix: str) -> list[str]:
    from google.cloud import storage

    return sorted(b.name for b in storage.Client().list_blobs(bucket, prefix=prefix))


def test_dead_letters_replayed_from_bigquery_and_gcs_then_expired(resources, tmp_path, capsys):
    from pipelines import backfill, replay, retention

    r = resources
    table = f"{r.dataset.split('.')[0]}.it_restricted_{uuid.uuid4().hex[:8]}.dead_letters"
    sinks = [
        "--sink=gcp",
        f"--raw_root=gs://{r.bucket}/archive",
        f"--dead_letter_root=gs://{r.bucket}/restricted",
        f"--dead_letter_table={table}",
        f"--bigquery_dataset={r.dataset}",
        f"--audit_db_url={r.audit_db_url}",
        f"--output_root={r.output_root}",
        "--sink_max_attempts=2",
        "--sink_first_backoff_s=0.2",
        "--sink_max_backoff_s=0.5",
    ]
    ahead = NOW + dt.timedelta(hours=1)  # the gateway's clock ran ahead
    lines = [
        _line(1, NOW - dt.timedelta(minutes=5)),
        _line(2, ahead),
        _line(3, ahead, region="eu"),
        _line(4, NOW, schema_version="2.0"),
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(x + b"\n" for x in lines))
    assert backfill.run(["--input", str(source), "--run_id", "ingest", *sinks]) == 0

    dataset, name = table.rsplit(".", 1)
    stored = collections.Counter(row["reason"] for row in bq_rows(dataset, name))
    assert stored == {"event_time_in_future": 2, "unsupported_schema_version:2": 1}
    assert _gcs_objects(r.bucket, "restricted/dead_letter/dt=")

    day = NOW.date().isoformat()
    dates = ["--start_date", day, "--end_date", (NOW.date() + dt.timedelta(days=1)).isoformat()]

    def run_replay(run_id: str, *args: str) -> replay.ReplayReport:
        assert replay.run([*sinks, *dates, "--run_id", run_id, *args]) == 0
        tally = (tmp_path / "out" / "runs" / f"{run_id}.json").read_text()
        return replay.replay_report(json.loads(tally))

    # From the table: the clock-skew rejects, with the fix as a flag.
    report = run_replay(
        "from-table",
        "--replay_from",
        "table",
        "--reason",
        "event_time_in_future",
        "--max_clock_skew_s",
        "7200",
        "--skip_reconcile",
    )
    assert (report.replayed, report.submitted, report.written) == (2, 2, 2)
    assert report.balanced and report.archived == {
        (ahead.date().isoformat(), "eu"): 1,
        (ahead.date().isoformat(), "us"): 1,
    }
    audit = pg_rows(r.audit_db_url, "SELECT outcome, event_id FROM audit_log")
    assert collections.Counter(row["outcome"] for row in audit)["replayed"] == 2
    archived = _gcs_objects(r.bucket, "archive/raw/")
    assert any("region=eu" in name for name in archived)

    # From the gs:// files: a major version without a converter fails again, the same way:
    # the same id, so nothing new is stored.
    report = run_replay("from-files", "--reason", "unsupported_schema_version:", "--skip_reconcile")
    assert (report.submitted, report.written, report.new_dead_letters) == (1, 0, 0)
    assert report.failed_again == {"unsupported_schema_version:2": 1}
    assert len(bq_rows(dataset, name)) >= 3  # appended again (at least once), same ids
    assert {row["dead_letter_id"] for row in bq_rows(dataset, name)} == {
        row["dead_letter_id"] for row in bq_rows(dataset, name) if row["reason"] in stored
    }

    # Retention as of a day far enough ahead: everything is past its age.
    as_of = (NOW.date() + dt.timedelta(days=400)).isoformat()
    expire = [
        "--as_of",
        as_of,
        f"--raw_root=gs://{r.bucket}/archive",
        f"--dead_letter_root=gs://{r.bucket}/restricted",
        f"--bigquery_dataset={r.dataset}",
        f"--dead_letter_table={table}",
        f"--output_root={r.output_root}",
    ]
    metric_rows = len(bq_rows(r.dataset, "metrics_minute"))
    assert metric_rows >= 1  # the valid event's window
    capsys.readouterr()
    assert retention.run([*expire, "--dry_run"]) == 0
    printed = capsys.readouterr().out
    assert f"would delete {metric_rows} rows from BigQuery {r.dataset}.metrics_minute" in printed
    assert _gcs_objects(r.bucket, "archive/raw/") == archived  # a dry run deletes nothing
    assert retention.run(expire) == 0
    assert _gcs_objects(r.bucket, "archive/raw/") == []
    assert _gcs_objects(r.bucket, "restricted/dead_letter/") == []
    assert bq_rows(dataset, name) == [] and bq_rows(r.dataset, "metrics_minute") == []
    capsys.readouterr()
    assert retention.run(expire) == 0  # nothing left: a second run deletes nothing
    assert "total: 0 partitions" in capsys.readouterr().out
