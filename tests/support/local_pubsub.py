"""The streaming pipeline as a command on the embedded default, reading the Pub/Sub emulator
through the local Pub/Sub source: a topic and subscription of one test, publishing with ground
truth (message ids), running and stopping the pipeline process, and reading its outputs back
from disk (Avro files, SQLite, DuckDB) without the pipeline's own readers."""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import fastavro
import pandas as pd
import pytest

from pipelines.local.loadgen import EventGenerator, LoadProfile
from tests.support.gcp_run import metric_key, metric_sums, sums
from tests.support.gcp_stack import unavailable

__all__ = [
    "PROFILE",
    "Pipeline",
    "Published",
    "Topic",
    "archived",
    "audit_rows",
    "dead_letters",
    "emulator_project",
    "expected_metrics",
    "generate",
    "malformed_ids",
    "metric_rows",
    "pipeline",
    "publish",
    "publishing",
    "stored_metrics",
    "summary_figure",
    "topic",
    "valid_event_ids",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
# Valid, late (within the allowed lateness), malformed and PII-carrying events; no published
# copies unless a test makes them.
PROFILE = LoadProfile(
    duplicate_share=0.0, late_share=0.05, malformed_share=0.05, pii_share=0.3, text_pool=40
)


def emulator_project() -> str:
    """The project of the local Pub/Sub emulator (the only service these tests use), once it
    answers; else the tests are skipped (or fail with ``CI=true``)."""
    host, project = os.environ.get("PUBSUB_EMULATOR_HOST"), os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not host or not project:
        unavailable("PUBSUB_EMULATOR_HOST or GOOGLE_CLOUD_PROJECT not set")
    address, _, port = host.rpartition(":")
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex((address, int(port))) != 0:
            unavailable("the Pub/Sub emulator does not answer")
    return project


class Topic(NamedTuple):
    topic: str
    subscription: str


@contextlib.contextmanager
def topic(project: str) -> Iterator[Topic]:
    """A topic and a subscription (10 s ack deadline) of one test, deleted after it."""
    from google.cloud import pubsub_v1

    suffix = uuid.uuid4().hex[:10]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    name = Topic(
        publisher.topic_path(project, f"it-local-{suffix}"),
        subscriber.subscription_path(project, f"it-local-{suffix}"),
    )
    publisher.create_topic(name=name.topic)
    subscriber.create_subscription(
        name=name.subscription, topic=name.topic, ack_deadline_seconds=10
    )
    try:
        yield name
    finally:
        subscriber.delete_subscription(subscription=name.subscription)
        publisher.delete_topic(topic=name.topic)


class Published(NamedTuple):
    input_id: str  # pubsub:<message id>
    payload: bytes
    document: dict | None  # None: malformed


def generate(n: int, seed: int) -> list:
    """``n`` generated messages (``PROFILE``), event times now."""
    return EventGenerator(seed, PROFILE).batch(n, dt.datetime.now(dt.UTC))


def publish(topic_path: str, generated: list) -> list[Published]:
    """Publishes each message (with its attributes); returns them with their message ids."""
    from pipelines.local.publish import publish_messages, publisher_client

    futures = publish_messages(publisher_client(), topic_path, [g.payload for g in generated])
    return [
        Published(f"pubsub:{future.result(timeout=30)}", g.payload, g.document)
        for g, future in zip(generated, futures, strict=True)
    ]


@contextlib.contextmanager
def publishing(
    topic_path: str, seed: int, per_tick: int = 10, tick_s: float = 0.25
) -> Iterator[list[Published]]:
    """Publishes ``per_tick`` generated messages every ``tick_s`` from a thread while the
    block runs; the list (filled as it goes) holds what was published."""
    generator = EventGenerator(seed, PROFILE)
    published: list[Published] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(tick_s):
            published.extend(
                publish(topic_path, generator.batch(per_tick, dt.datetime.now(dt.UTC)))
            )

    thread = threading.Thread(target=loop, name="publishing", daemon=True)
    thread.start()
    try:
        yield published
    finally:
        stop.set()
        thread.join(timeout=60)


# --- the pipeline as a command -----------------------------------------------------------------


class Pipeline:
    """One ``python -m pipelines.streaming --source pubsub`` process; its output in ``log``."""

    def __init__(self, args: list[str], log: Path):
        env = dict(os.environ)
        env.setdefault("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
        self.log = log
        self._out = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.streaming", *args],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the pipeline exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.output().splitlines()[-40:])

    def kill(self) -> None:
        """SIGKILL: no flush, no acknowledgement, no summary."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._out.close()

    def drain(self, timeout_s: float = 90) -> str:
        """SIGINT (Ctrl-C): the source drains, the run ends by itself. Returns the output."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the pipeline did not end within {timeout_s} s of Ctrl-C:\n{self.tail()}")
        self._out.close()
        assert code == 0, f"exit code {code}:\n{self.tail()}"
        return self.output()


@contextlib.contextmanager
def pipeline(subscription: str, root: Path, log: Path, *extra: str) -> Iterator[Pipeline]:
    """Runs the streaming pipeline on ``subscription`` into ``root``; kills it if the block
    leaves it running."""
    run = Pipeline(
        [
            "--source=pubsub",
            f"--subscription={subscription}",
            f"--output_root={root}",
            "--file_flush_s=2",
            "--dedupe_shards=4",
            *extra,
        ],
        log,
    )
    try:
        yield run
    finally:
        if run.process.poll() is None:
            run.kill()


def wait_until(check: Callable[[], str | None], run: Pipeline, timeout_s: float) -> None:
    """Polls ``check`` (None when satisfied, else what is missing) until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    missing = "never checked"
    while time.monotonic() < deadline:
        run.check_alive()
        missing = check()
        if missing is None:
            return
        time.sleep(0.5)
    pytest.fail(f"not satisfied after {timeout_s:.0f} s: {missing}\n{run.tail()}")


def summary_figure(output: str, pattern: str) -> int:
    """A number of the run summary (``pattern`` has one group; thousands separators allowed)."""
    match = re.search(pattern, output)
    assert match, f"{pattern!r} not in the output:\n{output[-3000:]}"
    return int(match.group(1).replace(",", ""))


# --- the outputs, read from disk ---------------------------------------------------------------


def audit_rows(root: Path) -> list[dict]:
    path = root / "audit.sqlite"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        con.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in con.execute("SELECT * FROM audit_log")]
        except sqlite3.OperationalError:
            return []  # not created yet


def _avro_records(pattern: str) -> list[dict]:
    records = []
    for path in glob.glob(pattern, recursive=True):
        with open(path, "rb") as handle:
            records += list(fastavro.reader(handle))
    return records


def archived(root: Path) -> list[dict]:
    """Every record of the raw archive (a redelivered event may be there twice); ids as
    text (the schema's ``uuid`` logical type reads as ``uuid.UUID``)."""
    records = _avro_records(str(root / "raw" / "**" / "part-*.avro"))
    return [{**r, "event_id": str(r["event_id"])} for r in records]


def dead_letters(root: Path) -> list[dict]:
    return _avro_records(str(root / "dead_letter" / "**" / "part-*.avro"))


def metric_rows(root: Path) -> pd.DataFrame:
    import duckdb

    with contextlib.closing(duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)) as db:
        return db.sql("SELECT * FROM metrics_minute").df()


def expected_metrics(published: list[Published], window_s: int = 60) -> dict[tuple, dict]:
    """The sums of ``metrics_minute`` computed with pandas from the deduplicated valid input:
    (window_start, model, region) -> sums."""
    documents = {}
    for message in published:
        if message.document is not None:
            documents.setdefault(message.document["event_id"], message.document)
    frame = pd.DataFrame(list(documents.values()))
    frame["window_start"] = pd.to_datetime(frame["event_time"], utc=True).dt.floor(f"{window_s}s")
    return metric_sums(frame)


def stored_metrics(root: Path) -> dict[tuple, dict]:
    """``metrics_minute`` as (window_start, model, region) -> sums (each key once)."""
    out = {}
    for row in metric_rows(root).to_dict("records"):
        key = metric_key(row)
        assert key not in out, f"metrics_minute holds {key} twice"
        out[key] = sums(row)
    return out


def valid_event_ids(published: list[Published]) -> set[str]:
    return {m.document["event_id"] for m in published if m.document is not None}


def malformed_ids(published: list[Published]) -> set[str]:
    return {m.input_id for m in published if m.document is None}
