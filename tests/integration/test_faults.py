"""Faults survived, against the emulators: the BigQuery emulator, then PostgreSQL, stopped for
30 s in the middle of a streaming run with ``--sink gcp`` (services of the test's own, so the
shared stack stays up). After each: nothing lost (every input archived or dead-lettered, one
audit record per input in PostgreSQL and in BigQuery's ``audit_log_unique``), nothing counted
twice, no sink dead letters (the retries outlast the outage), and ``verify`` clean.
``docs/reliability.md`` tables what was injected and what came out.

Lean on purpose: 15 events/s for 60 s per scenario. The sinks' retries are sized to ride out
the outage: 20 attempts, backoff from 0.5 s doubling to 8 s, 127.5 s of waits in all before
the jitter, which shortens each wait to between half and all of it (so at least about 64 s: the
outage and the service's restart, with room).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import subprocess
import time
import uuid

import pytest

from pipelines import verify
from pipelines.io.sinks.gcp.bigquery import bigquery_client
from pipelines.local.tally import read_tally
from tests.support.faults import DedicatedServices, check_credentials, streaming_process
from tests.support.gcp_stack import bq_rows, create_emulator_audit_table, pg_rows

pytestmark = pytest.mark.integration

OUTAGE_S = 30
RATE, DURATION_S = 15, 60


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    check_credentials()  # the token server and credentials are the shared stack's
    dedicated = DedicatedServices.allocate(tmp_path_factory.mktemp("stack"))
    dedicated.up("postgres", "bigquery")
    # This process reads the stores too (and verify writes nothing): point its clients at them.
    environment = pytest.MonkeyPatch()
    for name, value in dedicated.client_env.items():
        environment.setenv(name, value)
    bigquery_client.cache_clear()
    try:
        yield dedicated
    finally:
        environment.undo()
        bigquery_client.cache_clear()
        dedicated.down("postgres", "bigquery")
        dedicated.remove_postgres_data()


def _wait_until(condition, timeout_s: float, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the pipeline exited while waiting for {what}"
        if condition():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)  # a 1-s poll that ends early if the pipeline exits
    pytest.fail(f"not seen within {timeout_s:.0f} s: {what}")


def _run_with_outage(services: DedicatedServices, tmp_path, service: str) -> dict:
    """Runs the stream; once both stores hold rows, stops ``service`` for OUTAGE_S and starts
    it again on its data; returns what the run and the stores hold afterwards."""
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    database, dataset = f"faults_{suffix}", f"local-project.faults_{suffix}"
    with psycopg.connect(services.postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    audit_url = services.postgres_url.rsplit("/", 1)[0] + f"/{database}"
    create_emulator_audit_table(dataset)  # what bqemulator's Write API can append to
    root = tmp_path / "out"
    args = [
        *("--source", "synthetic", "--rate", str(RATE), "--duration_s", str(DURATION_S)),
        *("--tick_s", "0.5", "--seed", "21", "--run_id", "fault"),
        *("--sink", "gcp", "--output_root", str(root), "--raw_root", str(root)),
        *("--bigquery_dataset", dataset, "--audit_db_url", audit_url),
        *("--early_firing_s", "5", "--sink_flush_s", "2", "--file_flush_s", "2"),
        *("--sink_max_attempts", "20", "--sink_first_backoff_s", "0.5"),
        *("--sink_max_backoff_s", "8"),
    ]
    env = {**services.client_env, "GENAI_PSEUDONYM_KEY": "test-only-pseudonym-key-0123456789"}
    log = tmp_path / "pipeline.log"
    with streaming_process(args, env, log) as process:
        _wait_until(
            lambda: (
                pg_rows(audit_url, "SELECT 1 FROM audit_log LIMIT 1")
                and bq_rows(dataset, "metrics_minute")
            ),
            120,
            process,
            "audit and metric rows",
        )
        services.down(service)
        stopped_at = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=OUTAGE_S)  # the outage: the pipeline keeps running
        assert process.poll() is None, log.read_text()[-3000:]
        services.up(service, keep_data=True)
        outage_s = time.monotonic() - stopped_at
        assert process.wait(timeout=DURATION_S + 180) == 0, log.read_text()[-3000:]
    totals = read_tally(str(root), "fault")
    audit = pg_rows(audit_url, "SELECT input_id, outcome FROM audit_log")
    verified = verify.run(
        [
            *("--sink", "gcp", "--raw_root", str(root), "--output_root", str(root)),
            *("--bigquery_dataset", dataset, "--audit_db_url", audit_url),
        ]
    )
    return {
        "outage_s": outage_s,
        "totals": totals,
        "audit": audit,
        "bigquery_audit": bq_rows(dataset, "audit_log_unique"),
        "verified": verified,
        "log": log,
    }


def _assert_nothing_lost_nothing_twice(run: dict) -> None:
    totals, audit = run["totals"], run["audit"]
    outcomes = {
        k.removeprefix("outcome."): n for k, n in totals.items() if k.startswith("outcome.")
    }
    assert totals["read"] == RATE * DURATION_S
    assert totals["read"] == sum(outcomes.values())  # every input in exactly one bucket
    assert not [k for k in totals if k.startswith("sink_dead_letter.")], totals
    assert len(audit) == totals["read"]  # one record per input, none lost in the outage
    assert len({row["input_id"] for row in audit}) == len(audit)
    counted = {}
    for row in audit:
        counted[row["outcome"]] = counted.get(row["outcome"], 0) + 1
    assert counted == outcomes
    assert sorted(r["audit_id"] for r in run["bigquery_audit"]) == sorted(
        {r["audit_id"] for r in run["bigquery_audit"]}
    )
    assert len(run["bigquery_audit"]) == totals["read"]
    assert run["verified"] == 0, "verify found differences (printed above)"
    print(  # the figures of docs/reliability.md
        f"\nfault figures: outage {run['outage_s']:.0f} s; read {totals['read']}; "
        + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items()))
        + f"; audit rows {len(audit)} (PostgreSQL), {len(run['bigquery_audit'])} (BigQuery view);"
        f" metric windows {totals.get('metrics.windows')}; verify exit {run['verified']};"
        f" at {dt.datetime.now(dt.UTC):%Y-%m-%d}"
    )


def test_the_bigquery_emulator_stopped_for_30_s_mid_stream(services, tmp_path):
    run = _run_with_outage(services, tmp_path, "bigquery")
    assert run["outage_s"] >= OUTAGE_S
    _assert_nothing_lost_nothing_twice(run)
    # The sinks did meet the outage: a BigQuery writer retried (against bqemulator the writes
    # take turns, write_api.emulator_serialized, so the one holding the turn meets it).
    assert re.search(r"write_\w+_bigquery: attempt failed", run["log"].read_text())


def test_postgresql_stopped_for_30_s_mid_stream(services, tmp_path):
    run = _run_with_outage(services, tmp_path, "postgres")
    assert run["outage_s"] >= OUTAGE_S
    _assert_nothing_lost_nothing_twice(run)
    assert "write_audit_postgres: attempt failed" in run["log"].read_text()
