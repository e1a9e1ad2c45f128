"""One run of the streaming pipeline on the local Google Cloud stand-ins, for the integration
tests: publishing a scenario with its ground truth (plus a trickle of filler so the pipeline
never idles), running the pipeline until the sinks hold what the ground truth says, reading the
sinks back with the official clients, and the checks the tests share. How a bounded run works
on the DirectRunner is in ``tests/integration/test_gcp_end_to_end.py``."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import streaming
from pipelines.local.loadgen import DUPLICATE, LATE, MALFORMED, EventGenerator, LoadProfile
from pipelines.local.tally import read_tally
from schemas.contract import parsed_schema
from tests.support.gcp_stack import Resources, bq_rows, pg_rows, unavailable
from tests.support.pipelines import local_pipeline

__all__ = [
    "Run",
    "assert_archive",
    "assert_bigquery_audit",
    "assert_counting_identity",
    "assert_no_pii",
    "closed_rows",
    "expected_events",
    "metric_key",
    "metric_sums",
    "pipeline_args",
    "running",
    "scenario",
    "sha256",
    "stack_command",
    "sums",
    "wait_for",
]


ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 5
SCENARIO = LoadProfile(
    duplicate_share=0.1, late_share=0.05, malformed_share=0.06, pii_share=0.3, text_pool=60
)
# Filler keeps the subscription non-empty: valid, on-time events without PII, so that every
# late, duplicate, malformed and PII-carrying message of a test is one of its scenario's.
FILLER = LoadProfile(
    duplicate_share=0.0, late_share=0.0, malformed_share=0.0, pii_share=0.0, text_pool=20
)
METRIC_COLUMNS = ["request_count", "token_sum", "prompt_token_sum", "completion_token_sum"]


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
    return metric_sums(expected_events(messages, cutoff))


def metric_sums(events: pd.DataFrame) -> dict[tuple, dict]:
    """(window_start, model, region) -> the sums of ``METRIC_COLUMNS`` over ``events`` (one
    row per event, with a ``window_start`` column)."""
    table = (
        events.groupby(["window_start", "model", "region"])
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
    """(event_id, outcome) of the valid messages: written once, duplicate for later copies
    (one audit row per message: a set, so several duplicates of an id are one entry)."""
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
    copy of an event id) or dead-lettered, with exactly one audit row per message (its input
    identity, ``pubsub:<message id>``)."""
    before = run.before
    copies = collections.Counter(m.document["event_id"] for m in before if m.kind != MALFORMED)
    malformed = collections.Counter(sha256(m.payload) for m in before if m.kind == MALFORMED)
    rows = [r for r in seen.pg_audit if r["event_id"] in copies or r["outcome"] == "dead_lettered"]
    outcomes = collections.Counter(r["outcome"] for r in rows)
    assert outcomes["written"] == len(copies)
    assert outcomes["duplicate"] == sum(n - 1 for n in copies.values())
    assert outcomes["dead_lettered"] == sum(malformed.values())
    letters = {d["dead_letter_id"]: d for d in seen.dead_letters if d["step"] == "parse"}
    assert {d["payload_sha256"] for d in letters.values()} == set(malformed)
    assert all(r["input_id"].startswith("pubsub:") for r in rows)
    assert len(rows) == len({r["input_id"] for r in rows}) == len({r["audit_id"] for r in rows})


def assert_bigquery_audit(run: Run, seen: Observed) -> None:
    """BigQuery's audit_log_unique view holds PostgreSQL's audit rows, one per audit_id (one
    per input), for every message published before the cutoff (later filler rows are still on
    their way when the run is cancelled, to either store). The append-only table repeats a
    record only when its batch was sent again (insert ids dedupe retries in BigQuery on a
    best-effort basis; the emulator not at all): the copies are of one input."""
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
    inputs: dict[str, set] = collections.defaultdict(set)
    for row in table:
        inputs[row["audit_id"]].add(row["input_id"])
    assert all(len(ids) == 1 for ids in inputs.values())


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


# --- a service of the stack, stopped and started again ---------------------------------------


def stack_command(*args: str) -> None:
    if not os.environ.get("LOCAL_STACK_DIR"):
        unavailable("LOCAL_STACK_DIR is not set, so the stack was not started by local_stack")
    subprocess.run(
        [sys.executable, "-m", "tests.stack.local_stack", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
