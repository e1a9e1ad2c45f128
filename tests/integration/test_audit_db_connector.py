"""Integration: the audit store through the Cloud SQL Python Connector, the path Terraform
configures (cloudsql://IAM_USER@PROJECT:REGION:INSTANCE/DATABASE, IAM authentication, private
IP), against a stand-in of Cloud SQL (its Admin API and server-side proxy,
tests/stack/fake_cloudsql.py) in front of the local PostgreSQL. The same seam with a
postgresql:// URL is what every other integration test uses."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest

from tests.support.gcp_stack import pg_rows
from tests.support.sink_factories import audit_record

pytestmark = pytest.mark.integration


@pytest.fixture
def iam_database(stack):
    """A database owned by a role named like a Cloud SQL IAM service-account user."""
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    role, database = f"it-{suffix}@local-project.iam", f"it_iam_{suffix}"
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'CREATE DATABASE {database} OWNER "{role}"')
    yield role, database
    with psycopg.connect(stack.admin_db_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_audit_rows_reach_postgres_through_the_connector(stack, iam_database, monkeypatch):
    from google.cloud.sql.connector import Connector

    from pipelines.io.sinks.gcp import audit_db, postgres
    from tests.stack.fake_cloudsql import FakeCloudSql

    role, database = iam_database
    admin = urlsplit(stack.admin_db_url)
    with FakeCloudSql(
        "local-project", "europe-west1", "it-audit", (admin.hostname, admin.port)
    ) as fake:
        connector = Connector(
            ip_type="private",
            enable_iam_auth=True,
            sqladmin_api_endpoint=fake.admin_endpoint,
            refresh_strategy="lazy",
        )
        try:
            url = audit_db.resolve_db_url(f"cloudsql://{role}@{fake.connection_name}/{database}")
            with audit_db.connect_audit_db(url, connector=connector, connect_timeout=10) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (role,)
                postgres.create_audit_table(conn)
                first = [audit_record(event_id=f"evt-{i}") for i in range(3)]
                assert postgres.insert_audit_rows(conn, first) == 3
            # The sink's own path: its process-wide connector is the one aimed at the fake.
            monkeypatch.setattr(audit_db, "_cloud_sql_connector", lambda ip_type: connector)
            sink = postgres.AuditInsertSink(url)
            sink.setup()
            sink.write([*first, audit_record(event_id="evt-3")])  # a replay plus one new
        finally:
            connector.close()
    # IAM authentication: the connector sent its OAuth token with the key to be certified,
    # and every connection went through the proxy's mutual TLS.
    assert fake.ephemeral_requests and all(r["access_token"] for r in fake.ephemeral_requests)
    assert fake.proxied_connections >= 2
    owner_url = stack.admin_db_url.rsplit("/", 1)[0] + f"/{database}"
    rows = pg_rows(owner_url, "SELECT event_id FROM audit_log ORDER BY event_id")
    assert [r["event_id"] for r in rows] == ["evt-0", "evt-1", "evt-2", "evt-3"]
