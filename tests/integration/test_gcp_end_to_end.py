"""Integration: the streaming pipeline on the local Google Cloud stand-ins, end to end.

Pub/Sub emulator -> ``pipelines.streaming --source pubsub --sink gcp`` on the DirectRunner ->
Cloud Storage emulator (raw archive, dead letters), bqemulator (metrics, audit), PostgreSQL
(audit) and a Pub/Sub dead-letter topic; everything checked afterwards with the official
clients (google-cloud-pubsub, -storage, -bigquery, psycopg), never through the pipeline's code.

The stack comes from ``tests/stack/local_stack.py`` (``make test`` starts it). Without it these
tests are skipped with a loud reason, or fail when ``CI=true``.

How a bounded run works on the DirectRunner: its Pub/Sub read blocks its single executor thread
for 30 s whenever the subscription is empty, and its watermark is the wall clock. So a test
publishes its scenario (event times near now, plus late, duplicate, malformed and PII-carrying
events), keeps a trickle of valid filler events flowing so the pipeline never idles, polls the
sinks until they hold what the ground truth says (or a deadline passes), then cancels the
pipeline. Metrics are compared for the windows that closed before the check; audit rows for
every message published before that point.
"""

from __future__ import annotations

import collections
import logging
import time

import numpy as np
import pytest

from pipelines.local.loadgen import LATE, MALFORMED
from tests.support.gcp_run import (
    Run,
    assert_archive,
    assert_bigquery_audit,
    assert_counting_identity,
    assert_no_pii,
    closed_rows,
    expected_events,
    metric_key,
    pipeline_args,
    running,
    scenario,
    sha256,
    stack_command,
    wait_for,
)
from tests.support.gcp_stack import bq_rows, pg_rows

pytestmark = pytest.mark.integration


def test_pubsub_to_gcp_end_to_end(resources):
    """Duplicates, late, malformed and PII-carrying events through every Google Cloud sink."""
    run = Run(resources, seed=21)
    with running(pipeline_args(resources)) as result, run.publisher.filler(seed=22):
        messages = scenario(run.generator)
        run.publisher.publish(messages)
        run.close_windows()
        wait_for(result, lambda: run.missing(run.observe()), timeout_s=120)
    seen = run.observe()
    assert run.missing(seen) is None

    # metrics_minute equals the pandas computation over the deduplicated valid input (checked
    # by missing()), one row per key, percentiles within the sketch's 1% of exact quantiles.
    keys = [metric_key(row) for row in seen.metrics]
    assert len(keys) == len(set(keys)), "metrics_minute holds a key twice"
    stored = {metric_key(row): row for row in seen.metrics}
    for key, group in expected_events(run.publisher.snapshot(), run.cutoff).groupby(
        ["window_start", "model", "region"]
    ):
        latencies = np.sort(group["latency_ms"].to_numpy())
        for q, column in ((0.5, "latency_p50_ms"), (0.99, "latency_p99_ms")):
            low = np.quantile(latencies, q, method="lower")
            high = np.quantile(latencies, q, method="higher")
            assert low * 0.99 <= stored[key][column] <= high * 1.01, (key, column)
    late = {m.document["event_id"] for m in messages if m.kind == LATE}
    assert late and late <= set(expected_events(messages, run.cutoff)["event_id"])

    # Audit: one row per event and outcome, the same rows in PostgreSQL and BigQuery.
    assert_counting_identity(run, seen)
    assert_bigquery_audit(run, seen)

    # Dead letters: one per malformed message with its reason, in Cloud Storage and on the
    # topic; the payload is redacted.
    by_sha = {d["payload_sha256"]: d for d in seen.dead_letters}
    for message in messages:
        if message.kind == MALFORMED:
            letter = by_sha[sha256(message.payload)]
            assert letter["reason"] == message.malformation
            assert letter["payload_state"] in ("redacted", "omitted")
    assert {m.attributes["reason"] for m in seen.topic_messages} == {
        m.malformation for m in messages if m.kind == MALFORMED
    }
    assert_archive(run, seen)
    assert_no_pii(run, seen)


def test_redelivered_messages_change_nothing(resources):
    """Every message published twice (a second copy of all of them): once the first copies are
    in, the second copies change no metric row; each event is written once, and every copy is
    an input of its own with one audit record: written for the first, duplicate for the rest."""
    run = Run(resources, seed=31)
    with running(pipeline_args(resources)) as result, run.publisher.filler(seed=32):
        messages = scenario(run.generator)
        run.publisher.publish(messages)
        run.close_windows()
        wait_for(result, lambda: run.missing(run.observe()), timeout_s=120)
        first = closed_rows(bq_rows(resources.dataset, "metrics_minute"), run.cutoff)

        run.publisher.publish(messages)  # the second copies
        copies = collections.Counter(
            m.document["event_id"] for m in messages if m.kind != MALFORMED
        )
        malformed = [m for m in messages if m.kind == MALFORMED]

        def redelivery_audited() -> str | None:
            for store, rows in (
                ("PostgreSQL", pg_rows(resources.audit_db_url, "SELECT * FROM audit_log")),
                ("BigQuery", bq_rows(resources.dataset, "audit_log_unique")),
            ):
                duplicates = collections.Counter(
                    r["event_id"] for r in rows if r["outcome"] == "duplicate"
                )
                lacking = [i for i, n in copies.items() if duplicates[i] < 2 * n - 1]
                if lacking:
                    return f"{store}: {len(lacking)} events' second copies not audited"
                dead = sum(1 for r in rows if r["outcome"] == "dead_lettered")
                if dead < 2 * len(malformed):
                    return f"{store}: {2 * len(malformed) - dead} malformed copies not audited"
            return None

        wait_for(result, redelivery_audited, timeout_s=90)
        # Proving a negative: give a wrongly counted redelivery time to reach BigQuery (an
        # early firing, 2 s, plus a flush, 1 s) before comparing.
        time.sleep(4)
        seen = run.observe()

    after = sorted(closed_rows(seen.metrics, run.cutoff), key=metric_key)
    assert after == sorted(first, key=metric_key)  # every column, emitted_at included
    assert run.missing(seen) is None  # still the pandas computation over the unique events
    for event_id, n in copies.items():
        outcomes = sorted(r["outcome"] for r in seen.pg_audit if r["event_id"] == event_id)
        assert outcomes == ["duplicate"] * (2 * n - 1) + ["written"], (event_id, outcomes)
    dead = [r for r in seen.pg_audit if r["outcome"] == "dead_lettered"]
    assert len(dead) == 2 * len(malformed)  # each copy of a malformed payload is an input
    assert_archive(run, seen)
    assert_bigquery_audit(run, seen)
    assert_no_pii(run, seen)


def _bigquery_dead_lettered(caplog) -> bool:
    return any(
        "bigquery" in r.getMessage() and "dead-lettered after" in r.getMessage()
        for r in caplog.records
    )


def test_bigquery_outage_is_retried_then_dead_lettered_nothing_lost(resources, caplog):
    """BigQuery stops for part of the run: writes are retried, then either land or become dead
    letters with their rows; every row is in exactly one place and PostgreSQL is complete."""
    caplog.set_level(logging.WARNING, logger="pipelines.io.sinks.batches")
    run = Run(resources, seed=41, sink_failures_allowed=True)
    with running(pipeline_args(resources)) as result, run.publisher.filler(seed=42):
        first = scenario(run.generator, batches=1)
        run.publisher.publish(first)
        wait_for(result, lambda: None if bq_rows(resources.dataset, "audit_log") else "no rows", 60)
        stack_command("down", "bigquery")
        try:
            rest = scenario(run.generator, batches=2)
            run.publisher.publish(rest)
            # Down until a batch has used up its retries (3 attempts, backoff <= 2 s): at least
            # 10 s, and longer when the writes the outage met were still being retried then
            # (BigQuery writes of the emulator take turns, so how many fail is timing).
            # A slow machine may take minutes to reach a write, so wait up to 4 minutes and
            # say so if it never came. (Runs that saw one retry in the whole outage had a
            # Storage Write API call retried inside the client for up to a day: write_api.py
            # now passes retry=None.)
            time.sleep(10)
            deadline = time.monotonic() + 230
            while not _bigquery_dead_lettered(caplog) and time.monotonic() < deadline:
                time.sleep(1)
            exhausted = _bigquery_dead_lettered(caplog)
        finally:
            stack_command("up", "bigquery", "--keep-data")
        assert exhausted, "no BigQuery write used up its retries during a 4-minute outage"
        run.close_windows()
        wait_for(result, lambda: run.missing(run.observe()), timeout_s=150)
    seen = run.observe()
    assert run.missing(seen) is None  # each row in BigQuery or dead-lettered, none lost

    retried = [r for r in caplog.records if "bigquery: attempt failed" in r.getMessage()]
    assert retried, "no BigQuery write was retried"
    failed_audit = run.sink_failures(seen, "write_audit_bigquery")
    failed_metrics = run.sink_failures(seen, "write_metrics_bigquery")
    # Which BigQuery writer the outage exhausts is timing: the audit, metrics or usage one.
    failed_usage = run.sink_failures(seen, "write_usage_bigquery")
    assert failed_audit or failed_metrics or failed_usage, (
        "the outage outlasted the retries, yet no dead letter"
    )
    for letter in seen.dead_letters:
        if letter["reason"] == "sink_failed:bigquery":
            assert letter["error_message"].endswith("after 3 attempt(s)")
    # The dead-lettered audit rows are the ones BigQuery lacks (a row is in one place, unless
    # BigQuery applied a request whose response was lost), and all are in PostgreSQL.
    pg_ids = {row["audit_id"] for row in seen.pg_audit}
    assert {row["audit_id"] for row in failed_audit} <= pg_ids
    assert {row["audit_id"] for row in seen.bq_audit} <= pg_ids
    assert_counting_identity(run, seen)
    assert_archive(run, seen)
    on_topic = {m.attributes["dead_letter_id"] for m in seen.topic_messages}
    assert on_topic == {d["dead_letter_id"] for d in seen.dead_letters}
    assert_no_pii(run, seen)
