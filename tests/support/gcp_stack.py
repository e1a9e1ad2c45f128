"""The local Google Cloud stand-ins for the integration tests (``tests/stack/local_stack.py``
starts them; ``make test`` does it for you): checking that they answer, fresh resources on them
for one test, and reading BigQuery and PostgreSQL with the official clients.

Without the stack the integration tests are skipped with a loud reason, or fail when
``CI=true``.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest

from pipelines.io.sinks.gcp.write_api import emulator_serialized

__all__ = [
    "Resources",
    "Stack",
    "bq_rows",
    "check_stack",
    "create_emulator_audit_table",
    "create_resources",
    "pg_rows",
    "unavailable",
]


STACK_VARIABLES = (
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GENAI_AUDIT_DB_URL",
)


class Stack(NamedTuple):
    project: str
    admin_db_url: str


def unavailable(what: str) -> None:
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


def check_stack() -> Stack:
    """The stack from the environment ``make stack-up`` prints, once every service answers."""
    missing = [name for name in STACK_VARIABLES if not os.environ.get(name)]
    if missing:
        unavailable(f"{', '.join(missing)} not set")
    if os.environ.get("NO_GCE_CHECK") != "true":
        unavailable("NO_GCE_CHECK=true is not set (clients would probe the metadata server)")
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    if not _tcp_open(os.environ["PUBSUB_EMULATOR_HOST"]):
        unavailable("the Pub/Sub emulator does not answer")
    if not _http_ok(f"{os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/b?project={project}"):
        unavailable("the Cloud Storage emulator does not answer")
    if not _http_ok(
        f"{os.environ['BIGQUERY_EMULATOR_HOST']}/bigquery/v2/projects/{project}/datasets"
    ):
        unavailable("the BigQuery emulator does not answer")
    if not Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]).exists():
        unavailable("the fake service-account key is missing")
    import psycopg

    try:
        psycopg.connect(os.environ["GENAI_AUDIT_DB_URL"], connect_timeout=3).close()
    except psycopg.OperationalError:
        unavailable("PostgreSQL does not answer")
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


def create_resources(stack: Stack, tmp_path: Path) -> Resources:
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
    dataset = f"{stack.project}.it_{suffix}"
    create_emulator_audit_table(dataset)
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
        dataset=dataset,
        audit_db_url=audit_db_url,
        output_root=str(tmp_path / "out"),
    )


def create_emulator_audit_table(dataset: str) -> None:
    """Creates ``dataset`` and its ``audit_log`` as bqemulator's Storage Write API can take it.

    bqemulator 1.4.0's Write API builds the target table's Arrow schema without the sub-fields
    of RECORD columns (``grpc_api/write_servicer._table_arrow_schema``), so every append to a
    table with one fails ("STRUCT with no fields"). ``audit_log`` has one, the map
    ``redaction_counts``; here it is created without it (the emulator ignores the proto field
    the rows still carry), and the sink, which creates tables only when missing, keeps it.
    Everything else is the contract's table. BigQuery itself takes the full table: the encoding
    of the map is checked by decoding it in tests/functions/test_write_api.py.
    """
    from google.cloud import bigquery

    from pipelines.io.sinks.gcp.bigquery import audit_table

    client = bigquery.Client(project=dataset.split(".")[0])
    table = audit_table(dataset)
    table.schema = [f for f in table.schema if f.field_type != "RECORD"]
    with emulator_serialized():  # bqemulator deadlocks on DDL beside an append
        client.create_dataset(bigquery.Dataset(dataset), exists_ok=True)
        client.create_table(table, exists_ok=True)


def bq_rows(dataset: str, relation: str) -> list[dict]:
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    client = bigquery.Client(project=dataset.split(".")[0])
    try:
        with emulator_serialized():  # bqemulator deadlocks on a query beside an append
            query = client.query(f"SELECT * FROM `{dataset}.{relation}`")
            return [dict(row) for row in query.result()]
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
