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
import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import streaming
from pipelines.local.loadgen import DUPLICATE, LATE, MALFORMED, EventGenerator, LoadProfile
from pipelines.local.tally import read_tally
from schemas.contract import parsed_schema
from tests.support.pipelines import local_pipeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = 5
SCENARIO = LoadProfile(
    duplicate_share=0.1, late_share=0.05, malformed_share=0.06, pii_share=0.3, text_pool=60
)
# Filler keeps the subscription non-empty: valid, on-time events without PII, so that every
# late, duplicate, malformed and PII-carrying message of a test is one of its scenario's.
FILLER = LoadProfile(
    duplicate_share=0.0, late_share=0.0, malformed_share=0.0, pii_share=0.0, text_pool=20
)
STACK_VARIABLES = (
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GENAI_AUDIT_DB_URL",
)
METRIC_COLUMNS = ["request_count", "token_sum", "prompt_token_sum", "completion_token_sum"]


# --- the stack -----------------------------------------------------------------------------


class Stack(NamedTuple):
    project: str
    admin_db_url: str


def _unavailable(what: str) -> None:
    message = (
        f"the local Google Cloud stack is not available: {what}. Start it with "
        "`make stack-up` and export what it prints, or run `make test`."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {message}")
    pytest.skip(f"INTEGRATION TESTS SKIPPED: {message}")


def _tcp_open(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack() -> Stack:
    missing = [name for name in STACK_VARIABLES if not os.environ.get(name)]
    if missing:
        _unavailable(f"{', '.join(missing)} not set")
    if os.environ.get("NO_GCE_CHECK") != "true":
        _unavailable("NO_GCE_CHECK=true is not set (clients would probe the metadata server)")
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    if not _tcp_open(os.environ["PUBSUB_EMULATOR_HOST"]):
        _unavailable("the Pub/Sub emulator does not answer")
    if not _http_ok(f"{os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/b?project={project}"):
        _unavailable("the Cloud Storage emulator does not answer")
    if not _http_ok(
        f"{os.environ['BIGQUERY_EMULATOR_HOST']}/bigquery/v2/projects/{project}/datasets"
    ):
        _unavailable("the BigQuery emulator does not answer")
    if not Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]).exists():
        _unavailable("the fake service-account key is missing")
    import psycopg

    try:
        psycopg.connect(os.environ["GENAI_AUDIT_DB_URL"], connect_timeout=3).close()
    except psycopg.OperationalError:
        _unavailable("PostgreSQL does not answer")
    return Stack(project, os.environ["GENAI_AUDIT_DB_URL"])


class Resources(NamedTuple):
    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str
    bucket: str
    dataset: str
    audit_db_url: str
    output_root: str


@pytest.fixture
def resources(stack, tmp_path) -> Resources:
    """Fresh topics, subscriptions, bucket, dataset name and database for one test."""
    import psycopg
    from google.cloud import pubsub_v1, storage

    suffix = uuid.uuid4().hex[:10]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    paths = {}
    for kind in ("events", "dead-letters"):
        topic = publisher.topic_path(stack.project, f"it-{kind}-{suffix}")
        subscription = subscriber.subscription_path(stack.project, f"it-{kind}-{suffix}")
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic)
        paths[kind] = (topic, subscription)
    bucket = f"it-{suffix}"
    storage.Client(project=stack.project).create_bucket(bucket)
    database = f"it_{suffix}"
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    audit_db_url = stack.admin_db_url.rsplit("/", 1)[0] + f"/{database}"
    return Resources(
        topic=paths["events"][0],
        subscription=paths["events"][1],
        dead_letter_topic=paths["dead-letters"][0],
        dead_letter_subscription=paths["dead-letters"][1],
        bucket=bucket,
        dataset=f"{stack.project}.it_{suffix}",
        audit_db_url=audit_db_url,
        output_root=str(tmp_path / "out"),
    )


# --- publishing with ground truth ----------------------------------------------------------


class Published(NamedTuple):
    payload: bytes
    kind: str
    document: dict | None
    malformation: str | None
    at: float  # wall-clock time of the publish


class Publisher:
    """Publishes generated messages with their attributes and remembers them (ground truth)."""

    def __init__(self, topic: str):
        from pipelines.local.publish import publish_messages, publisher_client

        self._topic = topic
        self._publisher = publisher_client()
        self._publish_messages = publish_messages
        self._lock = threading.Lock()
        self.messages: list[Published] = []
        self.pii_values: set[str] = set()

    def publish(self, generated) -> None:
        payloads = [g.payload for g in generated]
        futures = self._publish_messages(self._publisher, self._topic, payloads)
        now = time.time()
        records = [Published(g.payload, g.kind, g.document, g.malformation, now) for g in generated]
        for future in futures:
            future.result(timeout=30)
        with self._lock:
            self.messages += records

    @contextlib.contextmanager
    def filler(self, seed: int, per_tick: int = 1, tick_s: float = 0.25) -> Iterator[None]:
        """Publishes valid events of a second generator in a thread while the block runs."""
        generator = EventGenerator(seed, FILLER)
        self.pii_values |= generator.pii_values
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(tick_s):
                self.publish(generator.batch(per_tick, dt.datetime.now(dt.UTC)))

        thread = threading.Thread(target=loop, name="filler", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)

    def before(self, moment: float) -> list[Published]:
        with self._lock:
            return [m for m in self.messages if m.at < moment]

    def snapshot(self) -> list[Published]:
        with self._lock:
            return list(self.messages)


def scenario(generator: EventGenerator, batches: int = 3, per_batch: int = 80) -> list:
    messages = []
    for _ in range(batches):
        messages += generator.batch(per_batch, dt.datetime.now(dt.UTC))
    kinds = collections.Counter(m.kind for m in messages)
    assert kinds[DUPLICATE] and kinds[LATE] and kinds[MALFORMED], kinds  # the mix is there
    return messages


# --- running the pipeline ------------------------------------------------------------------


def pipeline_args(r: Resources, *extra: str) -> list[str]:
    return [
        "--source=pubsub",
        f"--subscription={r.subscription}",
        "--sink=gcp",
        f"--raw_root=gs://{r.bucket}/archive",
        f"--dead_letter_root=gs://{r.bucket}/restricted",
        f"--dead_letter_topic={r.dead_letter_topic}",
        f"--bigquery_dataset={r.dataset}",
        f"--audit_db_url={r.audit_db_url}",
        f"--output_root={r.output_root}",
        "--run_id=it",
        f"--window_size_s={WINDOW_S}",
        "--early_firing_s=2",
        "--dedupe_shards=4",
        "--sink_flush_s=1",
        "--file_flush_s=2",
        "--sink_max_attempts=3",
        "--sink_first_backoff_s=0.5",
        "--sink_max_backoff_s=2",
        *extra,
    ]


@contextlib.contextmanager
def running(args: list[str]) -> Iterator[Any]:
    """Runs the streaming pipeline until the block ends, then cancels it."""
    options = PipelineOptions(args)
    options.view_as(StandardOptions).streaming = True
    view = options.view_as(streaming.StreamingOptions)
    assert streaming.validate(view) == []
    pipeline = local_pipeline(options)
    streaming.build(pipeline, view)
    result = pipeline.run()
    try:
        yield result
    finally:
        result.cancel()


def wait_for(
    result, check: Callable[[], str | None], timeout_s: float, every_s: float = 1.0
) -> None:
    """Polls ``check`` (None when satisfied, else what is missing) until ``timeout_s``; stops
    with the pipeline's error if it failed meanwhile."""
    from apache_beam.runners.runner import PipelineState

    deadline = time.monotonic() + timeout_s
    missing = "never checked"
    while time.monotonic() < deadline:
        if result.state == PipelineState.FAILED:
            result.wait_until_finish()  # raises the pipeline's error
        missing = check()
        if missing is None:
            return
        time.sleep(every_s)
    pytest.fail(f"not satisfied after {timeout_s:.0f} s: {missing}")


def window_end_after(moment: float) -> float:
    """End of the metrics window that holds ``moment`` (epoch seconds)."""
    return (moment // WINDOW_S + 1) * WINDOW_S


# --- reading the sinks with the official clients -------------------------------------------


def bq_rows(dataset: str, relation: str) -> list[dict]:
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    client = bigquery.Client(project=dataset.split(".")[0])
    try:
        return [dict(row) for row in client.query(f"SELECT * FROM `{dataset}.{relation}`").result()]
    except NotFound:
        return []


def pg_rows(url: str, sql: str) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        try:
            return conn.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


class Objects:
    """Avro objects of a bucket, each downloaded once (objects are written once)."""

    def __init__(self, bucket: str):
        from google.cloud import storage

        self._client = storage.Client()
        self._bucket = self._client.bucket(bucket)
        self.by_name: dict[str, list[dict]] = {}

    def read(self, prefix: str, schema_name: str) -> dict[str, list[dict]]:
        for blob in self._client.list_blobs(self._bucket, prefix=prefix):
            if blob.name.endswith(".avro") and blob.name not in self.by_name:
                data = io.BytesIO(blob.download_as_bytes())
                records = list(fastavro.reader(data, reader_schema=parsed_schema(schema_name)))
                self.by_name[blob.name] = records
        return {k: v for k, v in self.by_name.items() if k.startswith(prefix)}


def pull_all(subscription: str, into: list) -> list:
    """Pulls (and acks) everything waiting on ``subscription``; appends it to ``into``."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    while True:
        response = subscriber.pull(
            subscription=subscription, max_messages=500, return_immediately=True, timeout=10
        )
        if not response.received_messages:
            return into
        into += [m.message for m in response.received_messages]
        subscriber.acknowledge(
            subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages]
        )


# --- expectations from the ground truth ----------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unique_valid(messages: list[Published]) -> list[dict]:
    seen: dict[str, dict] = {}
    for m in messages:
        if m.kind != MALFORMED:
            seen.setdefault(m.document["event_id"], m.document)
    return list(seen.values())


def _closed_by(frame: pd.DataFrame, cutoff: float) -> pd.DataFrame:
    end = frame["window_start"] + pd.Timedelta(seconds=WINDOW_S)
    return frame[end <= pd.Timestamp(cutoff, unit="s", tz="UTC")]


def expected_events(messages: list[Published], cutoff: float) -> pd.DataFrame:
    """The deduplicated valid events of the windows that ended by ``cutoff``."""
    frame = pd.DataFrame(unique_valid(messages))
    frame["window_start"] = pd.to_datetime(frame["event_time"], utc=True).dt.floor(f"{WINDOW_S}s")
    return _closed_by(frame, cutoff)


def expected_metrics(messages: list[Published], cutoff: float) -> dict[tuple, dict]:
    """The pandas computation of metrics_minute: (window_start, model, region) -> sums."""
    table = (
        expected_events(messages, cutoff)
        .groupby(["window_start", "model", "region"])
        .agg(
            request_count=("event_id", "size"),
            token_sum=("token_count", "sum"),
            prompt_token_sum=("prompt_tokens", "sum"),
            completion_token_sum=("completion_tokens", "sum"),
        )
        .astype("int64")
    )
    return {key: row.to_dict() for key, row in table.iterrows()}


def metric_key(row: dict) -> tuple:
    return (pd.Timestamp(row["window_start"]).tz_convert("UTC"), row["model"], row["region"])


def closed_rows(rows: list[dict], cutoff: float) -> list[dict]:
    limit = pd.Timestamp(cutoff, unit="s", tz="UTC") - pd.Timedelta(seconds=WINDOW_S)
    return [row for row in rows if pd.Timestamp(row["window_start"]) <= limit]


def sums(row: dict) -> dict:
    return {c: int(row[c]) for c in METRIC_COLUMNS}


def expected_audit(messages: list[Published]) -> set[tuple[str, str]]:
    """(event_id, outcome) of every valid message: written once, duplicate for later copies."""
    copies = collections.Counter(m.document["event_id"] for m in messages if m.kind != MALFORMED)
    out = {(event_id, "written") for event_id in copies}
    out |= {(event_id, "duplicate") for event_id, n in copies.items() if n > 1}
    return out


# --- one run, read back --------------------------------------------------------------------


class Observed(NamedTuple):
    """What the sinks hold, read with the official clients."""

    metrics: list[dict]
    pg_audit: list[dict]
    bq_audit: list[dict]
    archive: dict[str, list[dict]]
    dead_letters: list[dict]
    topic_messages: list


class Run:
    """A test's publisher, ground truth and readers; ``check`` says what is still missing.

    ``sink_failures_allowed``: rows that BigQuery refused may be dead letters instead
    (``sink_failed:bigquery``), as long as each is in exactly one of the two places.
    """

    def __init__(self, r: Resources, seed: int, sink_failures_allowed: bool = False):
        self.r = r
        self.generator = EventGenerator(seed=seed, profile=SCENARIO)
        self.publisher = Publisher(r.topic)
        self.publisher.pii_values |= self.generator.pii_values
        self.objects = Objects(r.bucket)
        self.topic_messages: list = []
        self.sink_failures_allowed = sink_failures_allowed
        self.cutoff = 0.0
        self.before: list[Published] = []

    def close_windows(self) -> None:
        """Waits for the end of the current window; messages before it are the ground truth."""
        self.cutoff = window_end_after(time.time())
        time.sleep(max(0.0, self.cutoff - time.time()) + 1)
        self.before = self.publisher.before(self.cutoff)

    def observe(self) -> Observed:
        return Observed(
            metrics=bq_rows(self.r.dataset, "metrics_minute"),
            pg_audit=pg_rows(self.r.audit_db_url, "SELECT * FROM audit_log"),
            bq_audit=bq_rows(self.r.dataset, "audit_log"),
            archive=self.objects.read("archive/raw/", "redacted_event"),
            dead_letters=[
                record
                for records in self.objects.read("restricted/dead_letter/", "dead_letter").values()
                for record in records
            ],
            topic_messages=pull_all(self.r.dead_letter_subscription, self.topic_messages),
        )

    def sink_failures(self, seen: Observed, step: str) -> list[dict]:
        return [
            json.loads(d["payload"])
            for d in seen.dead_letters
            if d["reason"] == "sink_failed:bigquery" and d["step"] == step
        ]

    def missing(self, seen: Observed) -> str | None:
        """None when every sink holds what the ground truth says; else the first gap."""
        # Metrics: the windows closed by the cutoff, exactly; filler events carry event time =
        # publish time, so later ones never fall in those windows.
        expected = expected_metrics(self.publisher.snapshot(), self.cutoff)
        stored = {metric_key(row): row for row in closed_rows(seen.metrics, self.cutoff)}
        failed: dict[tuple, dict] = {}
        for pane in self.sink_failures(seen, "write_metrics_bigquery"):
            key = metric_key(pane)
            if key not in failed or pane["pane_index"] > failed[key]["pane_index"]:
                failed[key] = pane
        if set(stored) - set(expected):
            return f"unexpected metric keys {sorted(set(stored) - set(expected))[:3]}"
        for key, sums_expected in expected.items():
            if key in stored and sums(stored[key]) == sums_expected:
                continue
            newest_failed = failed.get(key)
            if (
                self.sink_failures_allowed
                and newest_failed is not None
                and sums(newest_failed) == sums_expected
            ):
                continue
            return f"metrics of {key} are not (yet) right"
        # Audit in PostgreSQL: every event and outcome, every dead letter.
        audit = expected_audit(self.before)
        malformed = {sha256(m.payload) for m in self.before if m.kind == MALFORMED}
        pg = {(row["event_id"], row["outcome"]) for row in seen.pg_audit}
        if audit - pg:
            return f"PostgreSQL audit lacks {len(audit - pg)} of {len(audit)} rows"
        letters = {d["payload_sha256"]: d for d in seen.dead_letters}
        if malformed - set(letters):
            return f"{len(malformed - set(letters))} dead letters not in Cloud Storage yet"
        expected_dead = {letters[sha]["dead_letter_id"] for sha in malformed}
        pg_dead = {row["dead_letter_id"] for row in seen.pg_audit}
        if expected_dead - pg_dead:
            return f"PostgreSQL audit lacks {len(expected_dead - pg_dead)} dead-letter rows"
        # Audit in BigQuery: the same records (or, with an outage, dead-lettered).
        wanted = {
            row["audit_id"]
            for row in seen.pg_audit
            if (row["event_id"], row["outcome"]) in audit or row["dead_letter_id"] in expected_dead
        }
        have = {row["audit_id"] for row in seen.bq_audit}
        if self.sink_failures_allowed:
            have |= {row["audit_id"] for row in self.sink_failures(seen, "write_audit_bigquery")}
        if wanted - have:
            return f"BigQuery audit lacks {len(wanted - have)} of {len(wanted)} rows"
        # Every dead letter on the topic too; every valid event archived.
        on_topic = {m.attributes["dead_letter_id"] for m in seen.topic_messages}
        if {d["dead_letter_id"] for d in seen.dead_letters} - on_topic:
            return "dead letters not all on the topic yet"
        archived = {str(r["event_id"]) for records in seen.archive.values() for r in records}
        lacking = {d["event_id"] for d in unique_valid(self.before)} - archived
        if lacking:
            return f"{len(lacking)} events not archived yet"
        return None


# --- checks shared by the tests ------------------------------------------------------------


def assert_archive(run: Run, seen: Observed) -> None:
    """Objects at the right partition paths, valid Avro, each valid event archived once."""
    archived = collections.Counter()
    for name, records in seen.archive.items():
        match = re.fullmatch(
            r"archive/raw/event_date=(\d{4}-\d{2}-\d{2})/region=([a-z]+)/part-[0-9a-f]{32}\.avro",
            name,
        )
        assert match, name
        for record in records:
            assert fastavro.validate(record, parsed_schema("redacted_event"), raise_errors=True)
            assert (record["event_date"].isoformat(), record["region"]) == match.groups()
            archived[str(record["event_id"])] += 1
    assert archived and max(archived.values()) == 1, "an event was archived twice"
    assert set(archived) <= {d["event_id"] for d in unique_valid(run.publisher.snapshot())}
    assert {d["event_id"] for d in unique_valid(run.before)} <= set(archived)


def assert_counting_identity(run: Run, seen: Observed) -> None:
    """Every message before the cutoff ends in exactly one of written, duplicate (each extra
    copy of an event id) or dead-lettered, with one audit row per event and outcome."""
    before = run.before
    copies = collections.Counter(m.document["event_id"] for m in before if m.kind != MALFORMED)
    malformed = collections.Counter(sha256(m.payload) for m in before if m.kind == MALFORMED)
    rows = [r for r in seen.pg_audit if r["event_id"] in copies or r["outcome"] == "dead_lettered"]
    outcomes = collections.Counter(r["outcome"] for r in rows)
    assert outcomes["written"] == len(copies)
    assert outcomes["duplicate"] == sum(1 for n in copies.values() if n > 1)
    assert outcomes["dead_lettered"] == len(malformed)
    letters = {d["dead_letter_id"]: d for d in seen.dead_letters if d["step"] == "parse"}
    assert {d["payload_sha256"] for d in letters.values()} == set(malformed)
    assert len(rows) == len({(r["event_id"], r["outcome"], r["dead_letter_id"]) for r in rows})


def assert_bigquery_audit(run: Run, seen: Observed) -> None:
    """BigQuery's audit_log_unique view holds PostgreSQL's audit rows, one per audit_id, for
    every message published before the cutoff (later filler rows are still on their way when
    the run is cancelled, to either store). The append-only table may repeat a record only when
    the same record was produced again: a third copy of an event is a second ``duplicate`` with
    the same audit_id, a malformed message published twice is dead-lettered twice (insert ids
    dedupe these in BigQuery on a best-effort basis; the emulator not at all)."""
    table = bq_rows(run.r.dataset, "audit_log")
    view_ids = [row["audit_id"] for row in bq_rows(run.r.dataset, "audit_log_unique")]
    assert len(view_ids) == len(set(view_ids))
    assert set(view_ids) == {row["audit_id"] for row in table}
    event_ids = {m.document["event_id"] for m in run.before if m.kind != MALFORMED}
    malformed = {sha256(m.payload) for m in run.before if m.kind == MALFORMED}
    dead_ids = {d["dead_letter_id"] for d in seen.dead_letters if d["payload_sha256"] in malformed}
    relevant = {
        row["audit_id"]
        for row in seen.pg_audit
        if row["event_id"] in event_ids or row["dead_letter_id"] in dead_ids
    }
    stored_relevant = {
        row["audit_id"]
        for row in table
        if row["event_id"] in event_ids or row["dead_letter_id"] in dead_ids
    }
    assert relevant and stored_relevant == relevant  # the same records in both stores
    copies = collections.Counter(
        m.document["event_id"] for m in run.publisher.snapshot() if m.kind != MALFORMED
    )
    payload_copies = collections.Counter(
        sha256(m.payload) for m in run.publisher.snapshot() if m.kind == MALFORMED
    )
    sha_of = {d["dead_letter_id"]: d["payload_sha256"] for d in seen.dead_letters}
    stored = collections.Counter(row["audit_id"] for row in table)
    for row in table:
        n = stored[row["audit_id"]]
        if n == 1:
            continue
        if row["outcome"] == "duplicate":
            assert copies[row["event_id"]] > n
        else:
            assert row["outcome"] == "dead_lettered", row["outcome"]
            assert payload_copies[sha_of[row["dead_letter_id"]]] >= n


def assert_no_pii(run: Run, seen: Observed) -> None:
    leaked = sorted(
        v
        for v in run.publisher.pii_values
        if v
        in "\n".join(
            repr(part)
            for part in (
                seen.archive,
                seen.dead_letters,
                seen.metrics,
                seen.pg_audit,
                seen.bq_audit,
                [m.data for m in seen.topic_messages],
                read_tally(run.r.output_root, "it"),
            )
        )
    )
    assert not leaked, f"{len(leaked)} PII values reached an output"


# --- the sinks' functions against the real stand-ins ----------------------------------------


def test_bigquery_tables_views_and_merge_rule(stack):
    """Partitioning, clustering (set through the API) and expiry survive on the emulator; the
    MERGE keeps the newest pane per key; replays and out-of-order panes change nothing."""
    from pipelines.io.sinks.gcp import bigquery as bq
    from tests.sink_factories import metric_row

    dataset = f"{stack.project}.it_merge_{uuid.uuid4().hex[:8]}"
    client = bq.bigquery_client(stack.project)
    bq.create_bigquery_objects(client, dataset)
    bq.create_bigquery_objects(client, dataset)  # idempotent
    table = client.get_table(f"{dataset}.metrics_minute")
    assert table.time_partitioning.field == "window_start"
    assert table.time_partitioning.expiration_ms == 365 * 86_400_000
    assert table.clustering_fields == ["model", "region"]
    assert client.get_table(f"{dataset}.audit_log").time_partitioning.field == "recorded_at"

    pane0 = metric_row(pane_timing="EARLY", pane_index=0, policy_flag_counts={"pii_redacted": 1})
    pane1 = metric_row(
        latencies_ms=(5.0, 50.0, 500.0),
        pane_index=1,
        emitted_at=pane0.emitted_at + dt.timedelta(seconds=30),
    )
    other = metric_row(
        region="us-central1",
        window_start=pane0.window_start + dt.timedelta(days=1),
        policy_flag_counts={"jailbreak_suspected": 1},
    )
    assert bq.merge_metric_rows(client, dataset, [pane0, other]) == 2
    assert bq.merge_metric_rows(client, dataset, [pane1, pane0]) == 1  # newest per key first
    before = sorted(bq_rows(dataset, "metrics_minute"), key=lambda r: r["region"])
    bq.merge_metric_rows(client, dataset, [pane0, other, pane1])  # a replay of everything
    # the same pane recomputed later: same metrics, later emitted_at -> left alone
    bq.merge_metric_rows(
        client, dataset, [pane1._replace(emitted_at=pane1.emitted_at + dt.timedelta(hours=1))]
    )
    after = sorted(bq_rows(dataset, "metrics_minute"), key=lambda r: r["region"])
    assert after == before
    assert [(r["region"], r["pane_index"], r["request_count"]) for r in after] == [
        ("europe-west1", 1, 3),
        ("us-central1", 0, 2),
    ]
    assert after[0]["users_hll"] == pane1.users_hll
    assert after[0]["latency_sketch_bins"] == [
        {"index": b.index, "count": b.count} for b in pane1.latency_sketch_bins
    ]
    for view in (
        "metrics_daily",
        "latency_percentiles_daily",
        "model_utilization_daily",
        "policy_flag_rates_daily",
        "freshness",
    ):
        assert bq_rows(dataset, view), view
    daily = {r["region"]: r["request_count"] for r in bq_rows(dataset, "metrics_daily")}
    assert daily == {"europe-west1": 3, "us-central1": 2}
    (flags,) = bq_rows(dataset, "policy_flag_rates_daily")
    assert (flags["policy_flag"], flags["flag_count"], flags["flag_rate"]) == (
        "jailbreak_suspected",
        1,
        0.5,
    )

    # A dropped table: the sink's first attempt meets NotFound, the retry creates it again.
    from pipelines.io.sinks.batches import SinkRetry, write_with_retries

    client.delete_table(f"{dataset}.metrics_minute")
    sink = bq.MetricsMergeSink(dataset)
    sink.setup()
    failures = []
    retry = SinkRetry(max_attempts=3, first_backoff_s=0.1, max_backoff_s=0.1)
    assert write_with_retries(sink, [pane1], retry, failures.append) is None
    assert [type(f).__name__ for f in failures] == ["NotFound"]
    assert [r["request_count"] for r in bq_rows(dataset, "metrics_minute")] == [3]


def test_postgres_audit_inserts_are_idempotent(stack):
    import psycopg

    from pipelines.io.sinks.gcp import postgres as pg
    from tests.sink_factories import audit_record

    database = f"it_audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    url = stack.admin_db_url.rsplit("/", 1)[0] + f"/{database}"
    records = [audit_record(event_id=f"evt-{i}") for i in range(3)]
    invalid = audit_record(
        event_id=None,
        outcome="dead_lettered",
        reason="invalid_json",
        dead_letter_id="dl-1",
        audit_id="a" * 64,
        redaction_counts={},
    )
    with psycopg.connect(url) as conn:
        pg.create_audit_table(conn)
        pg.create_audit_table(conn)
        assert pg.insert_audit_rows(conn, [*records, invalid]) == 4
        # A replay, the same (event_id, outcome) under another id, the same audit_id again.
        again = [*records, invalid, records[0]._replace(audit_id="b" * 64)]
        assert pg.insert_audit_rows(conn, again) == 0
        rows = conn.execute(
            "SELECT event_id, outcome, redaction_counts FROM audit_log ORDER BY audit_id"
        ).fetchall()
    assert len(rows) == 4
    assert (None, "dead_lettered", {}) in rows


# --- the tests -----------------------------------------------------------------------------


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
    """Every message published twice (a redelivery of all of them): once the first copies are
    in, the second copies change no metric row; each event is written once and audited as
    written plus one duplicate."""
    run = Run(resources, seed=31)
    with running(pipeline_args(resources)) as result, run.publisher.filler(seed=32):
        messages = scenario(run.generator)
        run.publisher.publish(messages)
        run.close_windows()
        wait_for(result, lambda: run.missing(run.observe()), timeout_s=120)
        first = closed_rows(bq_rows(resources.dataset, "metrics_minute"), run.cutoff)

        run.publisher.publish(messages)  # the redelivery
        event_ids = {m.document["event_id"] for m in messages if m.kind != MALFORMED}

        def redelivery_audited() -> str | None:
            for store, rows in (
                ("PostgreSQL", pg_rows(resources.audit_db_url, "SELECT * FROM audit_log")),
                ("BigQuery", bq_rows(resources.dataset, "audit_log")),
            ):
                duplicates = {r["event_id"] for r in rows if r["outcome"] == "duplicate"}
                if event_ids - duplicates:
                    return f"{store}: {len(event_ids - duplicates)} redeliveries not audited"
            return None

        wait_for(result, redelivery_audited, timeout_s=90)
        # Proving a negative: give a wrongly counted redelivery time to reach BigQuery (an
        # early firing, 2 s, plus a flush, 1 s) before comparing.
        time.sleep(4)
        seen = run.observe()

    after = sorted(closed_rows(seen.metrics, run.cutoff), key=metric_key)
    assert after == sorted(first, key=metric_key)  # every column, emitted_at included
    assert run.missing(seen) is None  # still the pandas computation over the unique events
    for event_id in event_ids:
        outcomes = sorted(r["outcome"] for r in seen.pg_audit if r["event_id"] == event_id)
        assert outcomes == ["duplicate", "written"], (event_id, outcomes)
    malformed = {sha256(m.payload) for m in messages if m.kind == MALFORMED}
    dead = [r for r in seen.pg_audit if r["outcome"] == "dead_lettered"]
    assert len(dead) == len(malformed)  # each malformed payload audited once, not twice
    assert_archive(run, seen)
    assert_bigquery_audit(run, seen)
    assert_no_pii(run, seen)


def _stack_command(*args: str) -> None:
    if not os.environ.get("LOCAL_STACK_DIR"):
        _unavailable("LOCAL_STACK_DIR is not set, so the stack was not started by local_stack")
    subprocess.run(
        [sys.executable, "-m", "tests.stack.local_stack", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
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
        _stack_command("down", "bigquery")
        try:
            rest = scenario(run.generator, batches=2)
            run.publisher.publish(rest)
            time.sleep(10)  # longer than a batch's retries (3 attempts, backoff <= 2 s)
        finally:
            _stack_command("up", "bigquery", "--keep-data")
        run.close_windows()
        wait_for(result, lambda: run.missing(run.observe()), timeout_s=150)
    seen = run.observe()
    assert run.missing(seen) is None  # each row in BigQuery or dead-lettered, none lost

    retried = [r for r in caplog.records if "bigquery: attempt failed" in r.getMessage()]
    assert retried, "no BigQuery write was retried"
    failed_audit = run.sink_failures(seen, "write_audit_bigquery")
    failed_metrics = run.sink_failures(seen, "write_metrics_bigquery")
    assert failed_audit or failed_metrics, "the outage outlasted the retries, yet no dead letter"
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
