"""The audit store's connection seam: one function, ``connect_audit_db``, returns a psycopg 3
(DB-API) connection for ``--audit_db_url``, whatever the store is.

* ``cloudsql://IAM_USER@PROJECT:REGION:INSTANCE/DATABASE`` (what Terraform passes): Cloud SQL
  for PostgreSQL through the Cloud SQL Python Connector, IAM database authentication (the
  worker's own credentials, an OAuth token bound into the connector's ephemeral client
  certificate: no password exists), private IP by default (``?ip_type=psc`` or ``public``
  otherwise), TLS 1.3 to the instance's server-side proxy (port 3307). ``IAM_USER`` is the
  database user of the worker service account, its e-mail without ``.gserviceaccount.com``.
* ``postgresql://`` (or ``postgres://``) URL: psycopg directly. The local stack and tests use it,
  with password or trust authentication; a password may only come from a reference below.

``--audit_db_url`` is a reference resolved on the worker, so a secret never travels in job
parameters or logs: ``env:NAME`` (a variable holding the URL), ``file:PATH`` (a file holding
it), or a literal ``cloudsql://`` or password-less ``postgresql://`` URL.
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import parse_qs

__all__ = [
    "CLOUDSQL_SCHEME",
    "CloudSqlInstance",
    "connect_audit_db",
    "describe_db_url",
    "parse_cloudsql_url",
    "resolve_db_url",
]

CLOUDSQL_SCHEME = "cloudsql://"
IP_TYPES = ("private", "psc", "public")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# PROJECT (optionally domain-scoped, "example.com:project"), REGION, INSTANCE.
_CONNECTION_NAME = re.compile(
    r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]:[a-z]+-[a-z]+[0-9]+"
    r":[a-z][a-z0-9-]{0,97}\Z"
)
_DATABASE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}\Z")
_USER = re.compile(r"[A-Za-z0-9._%+=-]+(?:@[A-Za-z0-9.-]+)?\Z")


class CloudSqlInstance(NamedTuple):
    """A ``cloudsql://`` reference: what the connector needs."""

    connection_name: str  # PROJECT:REGION:INSTANCE
    database: str
    user: str  # IAM database user
    ip_type: str = "private"


def parse_cloudsql_url(url: str) -> CloudSqlInstance:
    """The parts of ``cloudsql://IAM_USER@PROJECT:REGION:INSTANCE/DATABASE[?ip_type=T]``.

    Raises ValueError naming the part that is wrong (never the whole URL).
    """
    if not url.startswith(CLOUDSQL_SCHEME):
        raise ValueError(f"--audit_db_url: a Cloud SQL reference starts with {CLOUDSQL_SCHEME}")
    rest, _, query = url[len(CLOUDSQL_SCHEME) :].partition("?")
    authority, slash, database = rest.partition("/")
    user, at, connection_name = authority.rpartition("@")
    if not (slash and at):
        raise ValueError(
            "--audit_db_url must be cloudsql://IAM_USER@PROJECT:REGION:INSTANCE/DATABASE"
        )
    if not _USER.match(user) or ":" in user:
        raise ValueError("--audit_db_url: the IAM database user is not valid (no password here)")
    if not _CONNECTION_NAME.match(connection_name):
        raise ValueError("--audit_db_url: the instance must be PROJECT:REGION:INSTANCE")
    if not _DATABASE.match(database):
        raise ValueError("--audit_db_url: the database name is not valid")
    parameters = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = set(parameters) - {"ip_type"}
    ip_type = parameters.get("ip_type", ["private"])
    if unknown or len(ip_type) != 1 or ip_type[0] not in IP_TYPES:
        raise ValueError(f"--audit_db_url: the only parameter is ip_type, one of {IP_TYPES}")
    return CloudSqlInstance(connection_name, database, user, ip_type[0])


def resolve_db_url(reference: str) -> str:
    """The URL ``reference`` points at (``env:NAME``, ``file:PATH`` or a URL), checked.

    Raises ValueError (or OSError for an unreadable file) with a message that never contains
    the URL.
    """
    if reference.startswith("env:"):
        name = reference[len("env:") :]
        url = os.environ.get(name, "")
        if not url:
            raise ValueError(f"--audit_db_url: environment variable {name} is not set")
    elif reference.startswith("file:"):
        with open(reference[len("file:") :], encoding="utf-8") as handle:
            url = handle.read().strip()
    else:
        url = reference
        if url.startswith(_POSTGRES_SCHEMES) and ":" in url.split("://", 1)[1].rpartition("@")[0]:
            raise ValueError(
                "--audit_db_url: a password cannot be a flag value; use env:NAME or file:PATH"
            )
    if url.startswith(CLOUDSQL_SCHEME):
        parse_cloudsql_url(url)
    elif not url.startswith(_POSTGRES_SCHEMES):
        raise ValueError(
            "--audit_db_url must resolve to a cloudsql:// reference or a postgresql:// URL"
        )
    return url


def describe_db_url(reference: str) -> str:
    """``reference`` safe for logs: the reference itself, or a URL without its credentials."""
    if reference.startswith(("env:", "file:")):
        return reference
    scheme, _, rest = reference.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


@cache
def _cloud_sql_connector(ip_type: str):
    """One connector per process and IP type (it keeps each instance's certificate and
    metadata, refreshed lazily: connections are long-lived, so a background refresh loop would
    only add work)."""
    from google.cloud.sql.connector import Connector

    return Connector(ip_type=ip_type, enable_iam_auth=True, refresh_strategy="LAZY")


def connect_audit_db(url: str, *, connector: Any = None, **options: Any):
    """A new psycopg connection to the audit store ``url`` (already resolved).

    Args:
      url: a ``cloudsql://`` reference or a ``postgresql://`` URL (``resolve_db_url``).
      connector: the Cloud SQL connector to use (default: this process's); tests pass one
        aimed at a stand-in of the Cloud SQL Admin API.
      options: psycopg connection options (``connect_timeout``, ``options``, ...).
    """
    import psycopg

    if not url.startswith(CLOUDSQL_SCHEME):
        return psycopg.connect(url, **options)
    instance = parse_cloudsql_url(url)
    connector = connector or _cloud_sql_connector(instance.ip_type)
    timeout = options.pop("connect_timeout", None)
    extra = {} if timeout is None else {"timeout": timeout}
    return connector.connect(
        instance.connection_name,
        "psycopg",
        user=instance.user,
        db=instance.database,
        enable_iam_auth=True,
        ip_type=instance.ip_type,
        **extra,
        **options,
    )
