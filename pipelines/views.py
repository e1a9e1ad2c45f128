"""The metric views, defined once for both warehouses.

Each view is one file, ``pipelines/sql/<view>.sql``, in BigQuery Standard SQL with a
``{dataset}`` placeholder for the dataset that holds the tables. They read the rollups
(``metrics_rollup``), ``freshness_minute`` and ``usage_hourly``, which are kept a year, not the
minute rows (kept ``--minute_retention_days``). Each hourly and daily pair selects from one
``*_by_period`` view that computes both grains, so each definition is written once.

``bigquery_view_sql`` gives a view's BigQuery DDL (the Google Cloud sink creates the views with
it, and Terraform reads the same files); ``duckdb_view_sql`` translates that DDL to DuckDB with
sqlglot, for the embedded warehouse. A test runs every view on both.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import sqlglot
from sqlglot import exp

__all__ = ["BASE_VIEW_NAMES", "VIEW_NAMES", "bigquery_view_sql", "duckdb_view_sql"]

# Views with a grain column (hour or day) that the hourly and daily views select from: created
# first, since a view can only name views that exist.
BASE_VIEW_NAMES: tuple[str, ...] = (
    "metrics_by_period",
    "latency_percentiles_by_period",
    "policy_flag_rates_by_period",
    "model_utilization_by_period",
    "freshness_slo_by_period",
    "usage_by_user_by_period",
    "usage_by_model_version_by_period",
)
VIEW_NAMES: tuple[str, ...] = (
    *BASE_VIEW_NAMES,
    "metrics_hourly",
    "metrics_daily",
    "latency_percentiles_hourly",
    "latency_percentiles_daily",
    "policy_flag_rates_hourly",
    "policy_flag_rates_daily",
    "model_utilization_hourly",
    "model_utilization_daily",
    "freshness_slo_hourly",
    "freshness_slo_daily",
    "usage_by_user_hourly",
    "usage_by_user_daily",
    "usage_by_model_version_hourly",
    "usage_by_model_version_daily",
    "top_users_daily",
)
_DATASET_PLACEHOLDER = "{dataset}"
# Stands in for {dataset} while translating to DuckDB, then removed: DuckDB views name tables
# unqualified, so they resolve in the database file they live in, whatever it is attached as.
_DUCKDB_DATASET_MARKER = "__dataset__"


def _view_body(name: str) -> str:
    if name not in VIEW_NAMES:
        raise ValueError(f"unknown view {name!r}; known: {', '.join(VIEW_NAMES)}")
    return resources.files("pipelines").joinpath("sql", f"{name}.sql").read_text("utf-8")


def bigquery_view_sql(name: str, dataset: str) -> str:
    """Returns ``CREATE OR REPLACE VIEW`` of view ``name`` in BigQuery Standard SQL.

    Args:
        name: one of ``VIEW_NAMES`` (a file stem of ``pipelines/sql``).
        dataset: what qualifies the tables, e.g. ``my-project.genai`` (no backticks).
    """
    body = _view_body(name).replace(_DATASET_PLACEHOLDER, dataset)
    return f"CREATE OR REPLACE VIEW `{dataset}.{name}` AS\n{body}"


@cache
def duckdb_view_sql(name: str) -> str:
    """Returns the DuckDB ``CREATE OR REPLACE VIEW`` of ``name``, translated by sqlglot."""
    (statement,) = sqlglot.parse(bigquery_view_sql(name, _DUCKDB_DATASET_MARKER), read="bigquery")
    assert statement is not None
    for table in statement.find_all(exp.Table):
        if table.db == _DUCKDB_DATASET_MARKER:
            table.set("db", None)
    return statement.sql(dialect="duckdb", comments=False)
