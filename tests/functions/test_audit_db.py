"""The audit store's connection seam (pipelines/io/sinks/gcp/audit_db.py): references, the
cloudsql:// form Terraform passes, and which driver path a URL takes."""

from __future__ import annotations

import pytest

from pipelines.io.sinks.gcp import audit_db
from pipelines.io.sinks.gcp.audit_db import (
    CloudSqlInstance,
    connect_audit_db,
    describe_db_url,
    parse_cloudsql_url,
    resolve_db_url,
)
from pipelines.io.sinks.gcp.postgres import is_transient_connection_error

IAM_URL = "cloudsql://genai-dataflow@my-project.iam@my-project:europe-west1:genai-audit/audit"


def test_references_resolve_on_the_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_URL_TEST", "postgresql://u@h:5432/db")
    assert resolve_db_url("env:AUDIT_URL_TEST") == "postgresql://u@h:5432/db"
    path = tmp_path / "url"
    path.write_text("postgresql://u:secret@h/db\n")
    assert resolve_db_url(f"file:{path}") == "postgresql://u:secret@h/db"
    path.write_text(IAM_URL + "\n")
    assert resolve_db_url(f"file:{path}") == IAM_URL
    assert resolve_db_url(IAM_URL) == IAM_URL
    with pytest.raises(ValueError, match="NOT_SET_VARIABLE is not set"):
        resolve_db_url("env:NOT_SET_VARIABLE")
    for bad in ("mysql://u:secret@h/db", "postgresql://u:secret@h/db"):
        with pytest.raises(ValueError, match="--audit_db_url") as caught:
            resolve_db_url(bad)  # a password in a flag value: refused
        assert "secret" not in str(caught.value)


def test_cloudsql_reference_names_instance_database_and_iam_user():
    assert parse_cloudsql_url(IAM_URL) == CloudSqlInstance(
        "my-project:europe-west1:genai-audit", "audit", "genai-dataflow@my-project.iam", "private"
    )
    assert parse_cloudsql_url(
        "cloudsql://u@example.com:my-project:us-central1:db-1/audit?ip_type=psc"
    ) == CloudSqlInstance("example.com:my-project:us-central1:db-1", "audit", "u", "psc")


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("cloudsql://my-project:europe-west1:audit/audit", "IAM_USER@"),
        ("cloudsql://u@my-project:europe-west1:audit", "IAM_USER@"),
        ("cloudsql://u:pw@my-project:europe-west1:audit/audit", "user"),
        ("cloudsql://u@my-project:audit/audit", "PROJECT:REGION:INSTANCE"),
        ("cloudsql://u@My-Project:europe-west1:audit/audit", "PROJECT:REGION:INSTANCE"),
        ("cloudsql://u@my-project:europe-west1:audit/a b", "database"),
        ("cloudsql://u@my-project:europe-west1:audit/audit?ip_type=wifi", "ip_type"),
        ("cloudsql://u@my-project:europe-west1:audit/audit?password=x", "ip_type"),
    ],
)
def test_malformed_cloudsql_references_name_the_part(url, part):
    with pytest.raises(ValueError, match=part) as caught:
        resolve_db_url(url)
    assert "pw" not in str(caught.value)


def test_descriptions_carry_no_credentials():
    assert describe_db_url("postgresql://u:secret@h:5/db") == "postgresql://h:5/db"
    assert describe_db_url(IAM_URL) == "cloudsql://my-project:europe-west1:genai-audit/audit"
    assert describe_db_url("env:X") == "env:X"


class _RecordingConnector:
    def __init__(self):
        self.calls = []

    def connect(self, instance, driver, **kwargs):
        self.calls.append((instance, driver, kwargs))
        return "connection"


def test_cloudsql_goes_through_the_connector_with_iam_auth_and_psycopg():
    connector = _RecordingConnector()
    conn = connect_audit_db(
        IAM_URL, connector=connector, connect_timeout=10, options="-c statement_timeout=1"
    )
    assert conn == "connection"
    assert connector.calls == [
        (
            "my-project:europe-west1:genai-audit",
            "psycopg",
            {
                "user": "genai-dataflow@my-project.iam",
                "db": "audit",
                "enable_iam_auth": True,
                "ip_type": "private",
                "timeout": 10,
                "options": "-c statement_timeout=1",
            },
        )
    ]


def test_postgresql_urls_go_to_psycopg(monkeypatch):
    import psycopg

    seen = []
    monkeypatch.setattr(psycopg, "connect", lambda url, **kw: seen.append((url, kw)) or "pg")
    assert connect_audit_db("postgresql://u@h/db", connect_timeout=3) == "pg"
    assert seen == [("postgresql://u@h/db", {"connect_timeout": 3})]


def test_one_connector_per_process_and_ip_type(monkeypatch):
    from google.cloud.sql import connector as module

    made = []
    monkeypatch.setattr(module, "Connector", lambda **kwargs: made.append(kwargs) or object())
    audit_db._cloud_sql_connector.cache_clear()
    try:
        first = audit_db._cloud_sql_connector("private")
        assert audit_db._cloud_sql_connector("private") is first
        assert audit_db._cloud_sql_connector("psc") is not first
    finally:
        audit_db._cloud_sql_connector.cache_clear()
    assert made == [
        {"ip_type": "private", "enable_iam_auth": True, "refresh_strategy": "LAZY"},
        {"ip_type": "psc", "enable_iam_auth": True, "refresh_strategy": "LAZY"},
    ]


def test_connection_failures_through_the_connector_are_retried():
    import ssl

    import aiohttp

    def response_error(status):
        return aiohttp.ClientResponseError(None, (), status=status)

    assert is_transient_connection_error(ConnectionRefusedError())
    assert is_transient_connection_error(ssl.SSLError())
    assert is_transient_connection_error(TimeoutError())
    assert is_transient_connection_error(response_error(503))
    assert is_transient_connection_error(response_error(429))
    assert not is_transient_connection_error(response_error(403))  # a missing role: not retried
    assert not is_transient_connection_error(ValueError())
