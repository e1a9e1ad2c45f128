"""Offline checks of terraform/: formatting and the properties the design promises (retention,
partitioning, dead-letter policy, IAM, drain). ``terraform validate`` needs the providers from
the registry: ``make terraform-validate`` runs it where they are (docs/deploy.md).

Length (over 600 lines): one test per promise of the design about terraform/, all over the
same parsed configuration."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlglot

from pipelines.io.sinks.embedded.audit import AUDIT_TABLE
from pipelines.io.sinks.gcp import bigquery, dead_letter_table
from pipelines.io.sinks.gcp.audit_db import parse_cloudsql_url, resolve_db_url
from pipelines.io.sinks.metrics_commit import FRESHNESS_THRESHOLDS_S
from pipelines.io.sinks.warehouse_tables import TABLES
from pipelines.retention import MINUTE_RETENTION_DAYS
from pipelines.views import BASE_VIEW_NAMES, VIEW_NAMES, bigquery_view_sql
from schemas.bigquery_files import (
    PUBSUB_SCHEMA_FILE,
    TABLE_SCHEMAS,
    render_pubsub_schema,
    render_table_schema,
    write_table_schemas,
)
from schemas.contract import bigquery_schema, load_schema
from tests.support.terraform_config import (
    ROOT,
    TERRAFORM_DIR,
    block,
    blocks,
    dynamic_block,
    dynamic_for_each,
    load,
)
from transforms.pii.engine import DLP_ONLY_INFO_TYPES, INFO_TYPES

TF = load()
PROVIDERS = ("google", "google-beta")
DAY_MS = 86_400_000


def _terraform() -> str:
    found = shutil.which("terraform") or (
        "/usr/local/bin/terraform" if Path("/usr/local/bin/terraform").exists() else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("terraform is required in CI (terraform fmt -check)")
        pytest.skip("terraform is not installed")
    return found


def test_terraform_fmt_check():
    result = subprocess.run(
        [_terraform(), "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


# --- shape -------------------------------------------------------------------------------------


def test_module_shape_variables_typed_and_described_outputs_described():
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= set(TF.files)
    for name, spec in TF.variables.items():
        assert spec.get("type"), f"variable {name} has no type"
        assert spec.get("description"), f"variable {name} has no description"
    for name, spec in TF.outputs.items():
        assert spec.get("description"), f"output {name} has no description"


def test_providers_are_pinned_with_an_upper_bound():
    required = block(TF.terraform[0], "required_providers")
    for provider in PROVIDERS:
        spec = required[provider]
        assert spec["source"] == f"hashicorp/{provider}"
        assert re.fullmatch(r">= [0-9.]+, < [0-9.]+", spec["version"]), spec["version"]


# --- storage and retention ---------------------------------------------------------------------


def _delete_age(bucket: dict) -> str:
    (rule,) = blocks(bucket, "lifecycle_rule")
    assert block(rule, "action")["type"] == "Delete"
    return block(rule, "condition")["age"]


@pytest.mark.parametrize(
    ("bucket", "variable"),
    [("raw", "raw_retention_days"), ("dead_letter", "dead_letter_retention_days")],
)
def test_data_buckets_delete_after_30_days_and_keep_no_hidden_copies(bucket, variable):
    body = TF.resource("google_storage_bucket", "data")
    assert body["for_each"] == "${local.data_buckets}"
    assert _delete_age(body) == "${each.value.retention_days}"
    age = TF.locals["data_buckets"][bucket]["retention_days"]
    assert age == f"${{var.{variable}}}"
    assert TF.default_of(age) == 30
    # The variable cannot be raised past the 30 days of the seed design.
    (validation,) = TF.variables[variable]["validation"]
    assert f"var.{variable} <= 30" in validation["condition"]
    assert body["uniform_bucket_level_access"] is True
    assert body["public_access_prevention"] == "enforced"
    assert body["force_destroy"] is False
    assert block(body, "versioning")["enabled"] is False
    assert block(body, "soft_delete_policy")["retention_duration_seconds"] == 0
    # CMEK is optional: an encryption block only when kms_key_name is set (default null).
    assert "var.kms_key_name == null ? []" in dynamic_for_each(body, "encryption")
    assert TF.variables["kms_key_name"]["default"] is None


def test_dead_letter_bucket_is_restricted_to_the_worker_and_named_readers():
    bindings = TF.of_type("google_storage_bucket_iam_member")
    on_dead_letters = {
        name: b
        for name, b in bindings.items()
        if 'google_storage_bucket.data["dead_letter"]' in b["bucket"]
        or b.get("for_each") == "${local.worker_buckets}"
    }
    assert set(on_dead_letters) == {"dead_letter_readers", "worker_object_admin"}
    assert on_dead_letters["dead_letter_readers"]["role"] == "roles/storage.objectViewer"
    assert on_dead_letters["dead_letter_readers"]["for_each"] == "${toset(var.dead_letter_readers)}"
    assert TF.variables["dead_letter_readers"]["default"] == []


# --- BigQuery ----------------------------------------------------------------------------------


def test_metrics_minute_partitioned_by_hour_clustered_and_kept_30_days():
    table = TF.resource("google_bigquery_table", "metrics_minute")
    partitioning = block(table, "time_partitioning")
    assert (partitioning["type"], partitioning["field"]) == ("HOUR", "window_start")
    assert partitioning["expiration_ms"] == "${var.metrics_minute_retention_days * local.day_ms}"
    assert TF.variables["metrics_minute_retention_days"]["default"] == MINUTE_RETENTION_DAYS == 30
    # Hourly partitions: at most 4,000 per table.
    (validation,) = TF.variables["metrics_minute_retention_days"]["validation"]
    assert "var.metrics_minute_retention_days <= 160" in validation["condition"]
    assert TF.locals["day_ms"] == DAY_MS
    assert table["clustering"] == ["model", "region"]
    assert table["deletion_protection"] is True
    # The sink creates a missing table with the same layout.
    sink = bigquery.metrics_table("p.d")
    assert (sink.time_partitioning.type_, sink.time_partitioning.field) == ("HOUR", "window_start")
    assert sink.clustering_fields == table["clustering"]


@pytest.mark.parametrize("name", ["metrics_rollup", "freshness_minute", "usage_hourly"])
def test_aggregate_tables_are_kept_a_year_as_the_sink_creates_them(name):
    tables = TF.resource("google_bigquery_table", "aggregates")
    assert tables["for_each"] == "${local.aggregate_tables}"
    spec = TF.locals["aggregate_tables"][name]
    partitioning = block(tables, "time_partitioning")
    assert partitioning["type"] == "DAY"
    assert partitioning["expiration_ms"] == (
        "${var.metrics_partition_expiration_days * local.day_ms}"
    )
    assert TF.variables["metrics_partition_expiration_days"]["default"] == 365
    assert tables["deletion_protection"] is True
    sink = bigquery.warehouse_table("p.d", next(t for t in TABLES if t.name == name))
    assert sink.time_partitioning.field == spec["field"]
    assert sink.time_partitioning.expiration_ms == 365 * DAY_MS
    assert sink.clustering_fields == spec["clustering"]


@pytest.mark.parametrize("table", sorted(TABLE_SCHEMAS))
def test_tables_read_the_generated_schema_files(table):
    columns = {
        f["name"] for f in json.loads((TERRAFORM_DIR / "schemas" / f"{table}.json").read_text())
    }
    if table in TF.locals["aggregate_tables"]:
        body = TF.resource("google_bigquery_table", "aggregates")
        assert body["schema"] == '${file("${path.module}/schemas/${each.key}.json")}'
        spec = TF.locals["aggregate_tables"][table]
        field, clustering = spec["field"], spec["clustering"] or []
    else:
        (body,) = [
            b for b in TF.of_type("google_bigquery_table").values() if b.get("table_id") == table
        ]
        assert body["schema"] == f'${{file("${{path.module}}/schemas/{table}.json")}}'
        field, clustering = block(body, "time_partitioning")["field"], body["clustering"]
    assert (TERRAFORM_DIR / "schemas" / f"{table}.json").is_file()
    # Partition and clustering columns exist in the schema the table is created with.
    assert field in columns
    assert set(clustering) <= columns


def test_schema_files_are_exactly_what_the_contract_derives_today():
    files = {p.stem for p in (TERRAFORM_DIR / "schemas").glob("*.json")}
    assert files == set(TABLE_SCHEMAS)
    assert (TERRAFORM_DIR / "schemas" / PUBSUB_SCHEMA_FILE).read_text("utf-8") == (
        render_pubsub_schema()
    ), "terraform/schemas/gateway_event.pubsub.avsc is stale: make schemas"
    for table, schema in TABLE_SCHEMAS.items():
        text = (TERRAFORM_DIR / "schemas" / f"{table}.json").read_text("utf-8")
        assert json.loads(text) == bigquery_schema(schema), (
            f"terraform/schemas/{table}.json is stale: python -m schemas.bigquery_files "
            "terraform/schemas"
        )
        assert text == render_table_schema(table)


def test_schema_files_name_the_sinks_tables_and_fit_bigquery_limits():
    assert set(TABLE_SCHEMAS) == {t.name for t in TABLES} | {
        AUDIT_TABLE,
        dead_letter_table.DEAD_LETTER_TABLE,
    }
    assert {t.name: t.schema for t in TABLES} == {
        name: schema
        for name, schema in TABLE_SCHEMAS.items()
        if name not in (AUDIT_TABLE, dead_letter_table.DEAD_LETTER_TABLE)
    }

    def walk(fields):
        for field in fields:
            yield field
            yield from walk(field.get("fields", []))

    for schema in TABLE_SCHEMAS.values():
        for field in walk(bigquery_schema(schema)):
            assert len(field.get("description", "")) <= 1024, field["name"]
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,299}", field["name"])


def test_generator_writes_the_files(tmp_path):
    written = write_table_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        [*(f"{t}.json" for t in TABLE_SCHEMAS), PUBSUB_SCHEMA_FILE]
    )
    for path in written:
        assert path.read_text("utf-8") == (TERRAFORM_DIR / "schemas" / path.name).read_text("utf-8")


def _terraform_view_query(name: str, dataset: str) -> str:
    """What Terraform's replace(file(...), "{dataset}", dataset_ref) gives for view ``name``."""
    resource = "base_views" if name in BASE_VIEW_NAMES else "views"
    views = TF.resource("google_bigquery_table", resource)
    expression = block(views, "view")["query"]
    match = re.fullmatch(
        r'\$\{replace\(file\("\$\{path\.module\}/\.\./(.+)/\$\{each\.key\}\.sql"\), "(.+)", '
        r"local\.dataset_ref\)\}",
        expression,
    )
    assert match, expression
    directory, placeholder = match.groups()
    return (ROOT / directory / f"{name}.sql").read_text("utf-8").replace(placeholder, dataset)


def test_views_are_the_pipelines_sql_with_the_dataset_filled_in():
    # The base views first: the hourly and daily views name them.
    assert TF.locals["base_view_names"] == list(BASE_VIEW_NAMES)
    assert TF.locals["base_view_names"] + TF.locals["view_names"] == list(VIEW_NAMES)
    base = TF.resource("google_bigquery_table", "base_views")
    views = TF.resource("google_bigquery_table", "views")
    assert base["for_each"] == "${toset(local.base_view_names)}"
    assert views["for_each"] == "${toset(local.view_names)}"
    assert views["depends_on"] == ["${google_bigquery_table.base_views}"]
    for name in VIEW_NAMES:
        expected = bigquery_view_sql(name, "p.d").split("\n", 1)[1]  # body after CREATE ... AS
        assert _terraform_view_query(name, "p.d") == expected


def test_audit_view_is_the_pipelines_sql_on_the_audit_table():
    view = TF.resource("google_bigquery_table", "audit_log_unique")
    assert view["table_id"] == "audit_log_unique"
    assert "pipelines/sql/audit_log_unique.sql" in block(view, "view")["query"]
    assert view["depends_on"] == ["${google_bigquery_table.audit_log}"]


def test_the_archive_is_an_external_table_and_trace_request_joins_it_to_the_audit_log():
    raw = TF.resource("google_bigquery_table", "raw_events")
    external = block(raw, "external_data_configuration")
    assert external["source_format"] == "AVRO"
    assert external["source_uris"] == ['gs://${google_storage_bucket.data["raw"].name}/raw/*']
    assert block(external, "avro_options")["use_avro_logical_types"] is True
    # No hive partitioning: BigQuery refuses partition keys that are also columns of the files,
    # and the archive's files hold event_date and region (docs/observability.md).
    fields = {f["name"] for f in load_schema("redacted_event")["fields"]}
    assert {"event_date", "region"} <= fields
    assert "hive_partitioning_options" not in external
    routine = TF.resource("google_bigquery_routine", "trace_request")
    assert routine["routine_type"] == "TABLE_VALUED_FUNCTION"
    assert [a["name"] for a in blocks(routine, "arguments")] == [
        "wanted_request_id",
        "first_day",
        "last_day",
    ]
    assert "pipelines/sql/trace_request.sql" in routine["definition_body"]
    sql = (ROOT / "pipelines" / "sql" / "trace_request.sql").read_text()
    assert "`{dataset}.audit_log_unique`" in sql and "`{dataset}.raw_events`" in sql
    sqlglot.parse_one(
        sql.replace("{dataset}", "p.d")
        .replace("wanted_request_id", "'R-1'")
        .replace("first_day", "DATE '2026-01-01'")
        .replace("last_day", "DATE '2026-01-31'"),
        read="bigquery",
    )
    readers = TF.resource("google_storage_bucket_iam_member", "trace_readers")
    assert readers["bucket"] == '${google_storage_bucket.data["raw"].name}'
    assert readers["role"] == "roles/storage.objectViewer"
    assert TF.variables["trace_readers"]["default"] == []


# --- Pub/Sub -----------------------------------------------------------------------------------


def test_subscription_dead_letters_to_a_kept_topic_after_bounded_attempts():
    subscription = TF.resource("google_pubsub_subscription", "events")
    assert subscription["topic"] == "${google_pubsub_topic.events.id}"
    policy = block(subscription, "dead_letter_policy")
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    attempts = TF.default_of(policy["max_delivery_attempts"])
    assert 5 <= attempts <= 100
    assert block(subscription, "expiration_policy")["ttl"] == ""
    # Dead letters are kept: the dead-letter topic has a subscription of its own.
    hold = TF.resource("google_pubsub_subscription", "dead_letter")
    assert hold["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert block(hold, "expiration_policy")["ttl"] == ""


def test_pubsub_service_agent_can_forward_dead_letters():
    agent = TF.locals["pubsub_service_agent"]
    assert agent == (
        "serviceAccount:service-${data.google_project.this.number}"
        "@gcp-sa-pubsub.iam.gserviceaccount.com"
    )
    publisher = TF.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert publisher["topic"] == "${google_pubsub_topic.dead_letter.name}"
    assert (publisher["role"], publisher["member"]) == (
        "roles/pubsub.publisher",
        "${local.pubsub_service_agent}",
    )
    subscriber = TF.resource(
        "google_pubsub_subscription_iam_member", "events_dead_letter_subscriber"
    )
    assert subscriber["subscription"] == "${google_pubsub_subscription.events.name}"
    assert (subscriber["role"], subscriber["member"]) == (
        "roles/pubsub.subscriber",
        "${local.pubsub_service_agent}",
    )


# --- IAM and audit logs ------------------------------------------------------------------------


def _worker_bindings() -> dict[str, tuple[str, str]]:
    """Resource address -> (role, scope) of every binding of the worker service account."""
    found = {}
    for (kind, name), body in TF.resources.items():
        if kind.endswith("_iam_member") and body.get("member") == "${local.worker_member}":
            scope = next(
                (
                    body[k]
                    for k in (
                        "subscription",
                        "topic",
                        "bucket",
                        "dataset_id",
                        "secret_id",
                        "repository",
                    )
                    if k in body
                ),
                "project",
            )
            found[f"{kind}.{name}"] = (body["role"], scope)
    return found


def test_worker_has_least_privilege_roles():
    assert set(TF.locals["worker_project_roles"]) == {
        "roles/dataflow.worker",
        "roles/bigquery.jobUser",
        "roles/cloudsql.client",
        "roles/cloudsql.instanceUser",
        "roles/dlp.user",
        "roles/dlp.inspectTemplatesReader",
        "roles/dlp.deidentifyTemplatesReader",
    }
    assert set(_worker_bindings().values()) == {
        ("${each.key}", "project"),
        ("roles/pubsub.subscriber", "${google_pubsub_subscription.events.name}"),
        ("roles/pubsub.viewer", "${google_pubsub_subscription.events.name}"),
        ("roles/storage.objectAdmin", "${each.value}"),
        ("roles/bigquery.dataEditor", "${google_bigquery_dataset.analytics.dataset_id}"),
        ("roles/bigquery.dataEditor", "${google_bigquery_dataset.restricted.dataset_id}"),
        ("roles/pubsub.publisher", "${google_pubsub_topic.pipeline_dead_letters.name}"),
        (
            "roles/secretmanager.secretAccessor",
            "${google_secret_manager_secret.pseudonym_key.secret_id}",
        ),
        ("roles/artifactregistry.reader", "${google_artifact_registry_repository.images.name}"),
    }
    assert TF.locals["worker_buckets"] == {
        "raw": '${google_storage_bucket.data["raw"].name}',
        "dead_letter": '${google_storage_bucket.data["dead_letter"].name}',
        "templates": "${google_storage_bucket.templates.name}",
    }


def test_no_basic_or_project_wide_data_roles_anywhere():
    text = "\n".join(p.read_text() for p in TERRAFORM_DIR.glob("*.tf"))
    assert not re.search(r'"roles/(owner|editor|viewer)"', text)
    project_roles = TF.locals["worker_project_roles"]
    assert not [r for r in project_roles if r.split("/")[1].split(".")[0] in ("storage", "pubsub")]
    assert "roles/bigquery.dataEditor" not in project_roles
    assert "roles/secretmanager.secretAccessor" not in project_roles


def test_data_access_audit_logs_for_storage_bigquery_and_pubsub():
    assert set(TF.locals["data_access_audited_services"]) == {
        "storage.googleapis.com",
        "bigquery.googleapis.com",
        "pubsub.googleapis.com",  # who pulled raw delivery failures
    }
    config = TF.resource("google_project_iam_audit_config", "data_access")
    assert config["for_each"] == "${toset(local.data_access_audited_services)}"
    assert {c["log_type"] for c in blocks(config, "audit_log_config")} == {
        "DATA_READ",
        "DATA_WRITE",
    }


# --- audit store, DLP --------------------------------------------------------------------------


def test_audit_store_is_postgres_15_private_backed_up_and_protected():
    instance = TF.resource("google_sql_database_instance", "audit")
    assert instance["database_version"] == "POSTGRES_15"
    assert instance["deletion_protection"] is True
    settings = block(instance, "settings")
    assert settings["deletion_protection_enabled"] is True
    network = block(settings, "ip_configuration")
    assert network["ipv4_enabled"] is False
    assert network["private_network"] == "${local.network_id}"
    backups = block(settings, "backup_configuration")
    assert backups["enabled"] is True
    assert backups["point_in_time_recovery_enabled"] is True


def test_dlp_templates_cover_the_engine_info_types_and_replace_with_the_info_type():
    assert TF.locals["dlp_info_types"] == [*INFO_TYPES, *DLP_ONLY_INFO_TYPES]
    inspect = block(
        TF.resource("google_data_loss_prevention_inspect_template", "pii"), "inspect_config"
    )
    assert dynamic_for_each(inspect, "info_types") == "${local.dlp_info_types}"
    assert inspect["include_quote"] is False
    deidentify = TF.resource("google_data_loss_prevention_deidentify_template", "pii")
    transformation = block(
        block(block(deidentify, "deidentify_config"), "info_type_transformations"),
        "transformations",
    )
    assert dynamic_for_each(transformation, "info_types") == "${local.dlp_info_types}"
    assert (
        block(transformation, "primitive_transformation")["replace_with_info_type_config"] is True
    )


# --- monitoring --------------------------------------------------------------------------------


def _conditions(policy: str) -> list[dict]:
    return blocks(TF.resource("google_monitoring_alert_policy", policy), "conditions")


def test_alert_on_backlog_age():
    (condition,) = _conditions("pubsub_backlog_age")
    threshold = block(condition, "condition_threshold")
    assert "pubsub.googleapis.com/subscription/oldest_unacked_message_age" in threshold["filter"]
    assert "${google_pubsub_subscription.events.name}" in threshold["filter"]
    assert threshold["threshold_value"] == "${var.backlog_age_threshold_s}"


def test_alert_on_dead_letter_rate_uses_the_pipeline_counters():
    (condition,) = _conditions("dead_letter_rate")
    query = block(condition, "condition_prometheus_query_language")["query"]
    assert 'metric_name=~"dead_letter[.].+"' in query
    assert 'metric_name="events_read"' in query
    assert "${var.dead_letter_ratio_threshold}" in query
    # The counters the query names are the ones the pipeline increments.
    assert 'f"dead_letter.{reason}"' in (ROOT / "transforms" / "deadletter.py").read_text()
    assert '"events_read"' in (ROOT / "transforms" / "parse.py").read_text()
    (pubsub,) = _conditions("pubsub_dead_letters")
    assert (
        "subscription/dead_letter_message_count" in block(pubsub, "condition_threshold")["filter"]
    )


def test_alert_on_pipeline_lag():
    conditions = dynamic_block(
        TF.resource("google_monitoring_alert_policy", "pipeline_lag"), "conditions"
    )
    assert set(conditions["for_each"]) == {"data_watermark_age", "system_lag"}
    threshold = block(conditions["content"][0], "condition_threshold")
    assert threshold["threshold_value"] == "${var.pipeline_lag_threshold_s}"
    assert threshold["filter"].startswith("${local.dataflow_job_filter}")
    assert "dataflow.googleapis.com/job/${conditions.key}" in threshold["filter"]
    assert "${var.streaming_job_name}" in TF.locals["dataflow_job_filter"]


def _resolved(expression: str) -> str:
    """A local's expression with the locals it names spelled out (enough to read a query)."""
    for _ in range(5):
        expression = re.sub(
            r"\$\{local\.(\w+)\}",
            lambda m: str(TF.locals[m.group(1)]) if m.group(1) in TF.locals else m.group(0),
            expression,
        )
    return expression


def _counter_names(query: str) -> set[str]:
    return set(re.findall(r'metric_name=~?\\?"([^"\\]+)\\?"', query))


def test_freshness_slo_has_fast_and_slow_burn_rate_alerts_on_the_pipeline_counters():
    assert TF.variables["freshness_slo_s"]["default"] == 120
    assert TF.variables["freshness_slo_target"]["default"] == 0.99
    # The SLO threshold can only be one the pipeline counts events against.
    (validation,) = TF.variables["freshness_slo_s"]["validation"]
    assert validation["condition"] == (
        f"${{contains({list(FRESHNESS_THRESHOLDS_S)}, var.freshness_slo_s)}}".replace("'", "")
    )
    policy = TF.resource("google_monitoring_alert_policy", "freshness_slo_burn")
    conditions = dynamic_block(policy, "conditions")
    assert conditions["for_each"] == "${local.burn_rate_windows}"
    windows = TF.locals["burn_rate_windows"]
    assert windows == {
        "fast": {"long": "1h", "short": "5m", "burn_rate": 14.4},
        "slow": {"long": "6h", "short": "30m", "burn_rate": 6},
    }
    query = block(conditions["content"][0], "condition_prometheus_query_language")["query"]
    for window in ("long", "short"):
        assert f'replace(local.freshness_bad_ratio, "WINDOW", conditions.value.{window})' in query
    assert "${local.error_budget}" in query and "${conditions.value.burn_rate}" in query
    assert TF.locals["error_budget"] == "${1 - var.freshness_slo_target}"
    ratio = _resolved(TF.locals["freshness_bad_ratio"])
    # Good events over all events, each from the counters the sinks increment at commit.
    assert _counter_names(ratio) == {
        "freshness_events",
        "freshness_events_within_${var.freshness_slo_s}s",
    }
    source = (ROOT / "pipelines" / "io" / "sinks" / "metrics_commit.py").read_text()
    assert '"freshness_events"' in source and 'f"freshness_events_within_{threshold}s"' in source
    assert "clamp_min" in ratio  # no events visible: no error, not a division by zero


def test_policy_flag_alerts_on_threshold_and_on_ratio_to_the_trailing_week():
    conditions = _conditions("policy_flag_rate")
    queries = [block(c, "condition_prometheus_query_language")["query"] for c in conditions]
    threshold, baseline = (_resolved(q) for q in queries)
    assert "${var.policy_flag_rate_threshold}" in threshold
    assert "${var.policy_flag_baseline_ratio}" in baseline and "[7d] offset 1h" in baseline
    for query in (threshold, baseline):
        assert _counter_names(query) == {"policy_flag[.].+", "requests_aggregated"}
        assert "${var.policy_flag_min_requests}" in query  # a quiet hour is not an anomaly
    source = (ROOT / "transforms" / "aggregate.py").read_text()
    assert 'f"policy_flag.{flag}"' in source and '"requests_aggregated"' in source


def test_alerts_on_redaction_sink_and_internal_failures_schema_drift_and_dlp_quota():
    occurrences = TF.resource("google_monitoring_alert_policy", "occurrences")
    assert occurrences["for_each"] == "${local.any_occurrence_alerts}"
    assert {k: v["counters"] for k, v in TF.locals["any_occurrence_alerts"].items()} == {
        "redaction_failed": "dead_letter[.]redaction_failed.*",
        "sink_failed": "dead_letter[.]sink_failed.*",
        "internal_error": "dead_letter[.]internal_error.*",
        "schema_drift": "schema_drift.*",
    }
    (condition,) = blocks(occurrences, "conditions")
    assert (
        "${each.value.counters}" in block(condition, "condition_prometheus_query_language")["query"]
    )
    # The reasons and counters they match are the pipeline's.
    assert 'f"dead_letter.{reason}"' in (ROOT / "transforms" / "deadletter.py").read_text()
    assert '"schema_drift_fields_dropped"' in (ROOT / "transforms" / "parse.py").read_text()
    assert '"sink_failed"' in (ROOT / "pipelines" / "io" / "sinks" / "batches.py").read_text()
    dlp = [
        block(c, "condition_prometheus_query_language")["query"] for c in _conditions("dlp_quota")
    ]
    assert _counter_names(dlp[0]) == {"dead_letter.redaction_failed:dlp_resource_exhausted"}
    assert _counter_names(dlp[1]) == {"dlp.retries", "dlp.requests"}
    assert "dlp_resource_exhausted" in (ROOT / "transforms" / "pii" / "dlp.py").read_text()


def test_every_alert_notifies_the_configured_channels():
    assert TF.variables["notification_channels"]["default"] == []
    for name, policy in TF.of_type("google_monitoring_alert_policy").items():
        assert policy["notification_channels"] == "${var.notification_channels}", name
        assert block(policy, "documentation")["content"], name


def test_dashboard_shows_what_the_issue_asks_for():
    tiles = TF.locals["dashboard_tiles"]
    titles = [tile["title"] for tile in tiles]
    for topic in (
        "Ingestion",
        "Backlog",
        "Lag",
        "Dead letters",
        "Freshness SLO",
        "Tokens",
        "Policy-flag rates",
        "Latency percentiles per model",
    ):
        assert any(t.startswith(topic) for t in titles), topic
    queries = {t["title"].split(":")[0]: _resolved(" ".join(t["queries"].values())) for t in tiles}
    assert "histogram_quantile(0.99" in queries["Latency percentiles per model (ms, 5 min)"]
    assert _counter_names(queries["Latency percentiles per model (ms, 5 min)"]) == {
        "latency_ms_bucket[.].+"
    }
    source = (ROOT / "transforms" / "aggregate.py").read_text()
    assert 'f"latency_ms_bucket.{model}.{bound}"' in source
    assert '"estimated_cost_micro_usd"' in source and '"tokens"' in source
    dashboard = TF.resource("google_monitoring_dashboard", "pipeline")
    assert "local.dashboard_tiles" in dashboard["dashboard_json"]


# --- the streaming job -------------------------------------------------------------------------


def test_streaming_job_drains_and_takes_only_declared_parameters():
    job = TF.resource("google_dataflow_flex_template_job", "streaming")
    assert job["on_delete"] == "drain"
    assert job["provider"] == "google-beta"
    assert job["name"] == "${var.streaming_job_name}"
    assert job["enable_streaming_engine"] is True
    assert job["ip_configuration"] == "WORKER_IP_PRIVATE"
    assert job["parameters"] == "${local.streaming_parameters}"
    assert TF.locals["streaming_parameters"] == (
        '${merge(local.launch_parameters, {source = "pubsub", subscription = '
        "google_pubsub_subscription.events.id}, var.streaming_parameters)}"
    )
    # At plan time every parameter name must be declared in the template's metadata.json.
    assert "templates/streaming/metadata.json" in TF.locals["streaming_metadata"]
    conditions = [p["condition"] for p in block(job, "lifecycle")["precondition"]]
    assert any("local.streaming_parameter_names" in c for c in conditions)


@pytest.mark.parametrize("pipeline", ["streaming", "backfill"])
def test_parameters_set_by_terraform_are_template_parameters(pipeline):
    metadata = json.loads((ROOT / "templates" / pipeline / "metadata.json").read_text())
    names = {p["name"] for p in metadata["parameters"]}
    assert set(TF.locals["template_parameters"]) <= names
    assert {"source", "subscription", "sink", "bigquery_dataset"} <= names or pipeline == "backfill"
    assert set(TF.locals["dlp_parameters"]) <= names
    assert "local.dlp_parameters" in TF.locals["launch_parameters"]


# --- issue 22: dead letters, the schema gate, the audit store's connector, sizing --------------


def test_events_topic_takes_the_generated_schema_as_its_gate():
    schema = TF.resource("google_pubsub_schema", "gateway_event")
    assert schema["type"] == "AVRO"
    assert schema["definition"] == f'${{file("${{path.module}}/schemas/{PUBSUB_SCHEMA_FILE}")}}'
    topic = TF.resource("google_pubsub_topic", "events")
    settings = next(e["schema_settings"] for e in topic["dynamic"] if "schema_settings" in e)
    assert settings["for_each"] == (
        "${var.enforce_event_schema ? [google_pubsub_schema.gateway_event.id] : []}"
    )
    assert settings["content"][0]["encoding"] == "JSON"
    assert TF.variables["enforce_event_schema"]["default"] is True


def test_gate_holds_exactly_the_required_fields_without_unions():
    gate = json.loads(render_pubsub_schema())
    contract = json.loads((ROOT / "schemas" / "avro" / "gateway_event.avsc").read_text())
    required = [f["name"] for f in contract["fields"] if "default" not in f]
    assert [f["name"] for f in gate["fields"]] == required
    assert all(isinstance(f["type"], str) for f in gate["fields"])  # plain JSON values pass


def test_delivery_failures_are_kept_a_few_days_readable_by_one_group_and_audited():
    hold = TF.resource("google_pubsub_subscription", "dead_letter")
    assert hold["message_retention_duration"] == "${var.delivery_failure_retention_days * 86400}s"
    variable = TF.variables["delivery_failure_retention_days"]
    assert variable["default"] <= 7
    assert "<= 7" in variable["validation"][0]["condition"]
    readers = TF.resource("google_pubsub_subscription_iam_member", "delivery_failure_readers")
    assert readers["member"] == "group:${var.delivery_failure_reader_group}"
    assert readers["role"] == "roles/pubsub.subscriber"
    assert TF.variables["delivery_failure_reader_group"]["default"] is None
    # Nobody else is granted anything on it.
    on_hold = [
        name
        for name, body in TF.of_type("google_pubsub_subscription_iam_member").items()
        if body["subscription"] == "${google_pubsub_subscription.dead_letter.name}"
    ]
    assert on_hold == ["delivery_failure_readers"]
    assert "pubsub.googleapis.com" in TF.locals["data_access_audited_services"]


def test_pipeline_dead_letters_have_a_topic_a_restricted_table_and_grants():
    topic = TF.resource("google_pubsub_topic", "pipeline_dead_letters")
    assert "restricted" in topic["labels"]
    subscription = TF.resource("google_pubsub_subscription", "pipeline_dead_letters")
    assert subscription["topic"] == "${google_pubsub_topic.pipeline_dead_letters.id}"
    readers = TF.resource("google_pubsub_subscription_iam_member", "pipeline_dead_letter_readers")
    assert readers["for_each"] == "${toset(var.dead_letter_readers)}"
    table = TF.resource("google_bigquery_table", "dead_letters")
    assert table["dataset_id"] == "${google_bigquery_dataset.restricted.dataset_id}"
    assert table["schema"] == '${file("${path.module}/schemas/dead_letters.json")}'
    partitioning = block(table, "time_partitioning")
    assert (partitioning["type"], partitioning["field"]) == ("DAY", "failed_at")
    assert partitioning["expiration_ms"] == "${var.dead_letter_retention_days * local.day_ms}"
    # The same table the sink creates when it is missing.
    made = dead_letter_table.dead_letter_table("my-project.d.dead_letters")
    assert table["clustering"] == made.clustering_fields
    assert made.time_partitioning.field == partitioning["field"]
    assert TF.default_of("${var.dead_letter_retention_days}") == (
        dead_letter_table.PARTITION_EXPIRATION_DAYS
    )
    viewers = TF.resource("google_bigquery_dataset_iam_member", "dead_letter_readers")
    assert viewers["role"] == "roles/bigquery.dataViewer"
    assert viewers["dataset_id"] == "${google_bigquery_dataset.restricted.dataset_id}"
    # The job writes to both.
    parameters = TF.locals["template_parameters"]
    assert parameters["dead_letter_topic"] == "${google_pubsub_topic.pipeline_dead_letters.id}"
    assert parameters["dead_letter_table"] == "${local.dead_letter_table}"


def _evaluate(expression: str, values: dict[str, str]) -> str:
    """A Terraform string template with each ``${reference}`` replaced by ``values``."""

    def value(match: re.Match) -> str:
        return values[match.group(1)]

    return re.sub(r"\$\{([^}]+)\}", value, expression)


def test_terraform_passes_an_audit_db_url_the_pipeline_accepts():
    """Terraform and the pipeline agree on the instance connection name, database and IAM
    user: the URL Terraform builds, with the values its resources would have, resolves and
    parses to exactly those resources."""
    project, region, prefix = "my-project", TF.variables["region"]["default"], "genai"
    instance = TF.resource("google_sql_database_instance", "audit")
    database = TF.resource("google_sql_database", "audit")
    account = TF.resource("google_service_account", "worker")
    account_id = account["account_id"].replace("${var.name_prefix}", prefix)
    email = f"{account_id}@{project}.iam.gserviceaccount.com"
    user = TF.resource("google_sql_user", "worker")
    assert user["type"] == "CLOUD_IAM_SERVICE_ACCOUNT"
    assert (
        user["name"] == '${trimsuffix(google_service_account.worker.email, ".gserviceaccount.com")}'
    )
    instance_name = instance["name"].replace("${var.name_prefix}", prefix)
    values = {
        "google_sql_user.worker.name": email.removesuffix(".gserviceaccount.com"),
        "google_sql_database_instance.audit.connection_name": f"{project}:{region}:{instance_name}",
        "google_sql_database.audit.name": database["name"],
    }
    assert TF.locals["template_parameters"]["audit_db_url"] == "${local.audit_db_url}"
    url = _evaluate(TF.locals["audit_db_url"], values)
    assert resolve_db_url(url) == url
    parsed = parse_cloudsql_url(url)
    assert parsed.connection_name == f"{project}:{region}:{prefix}-audit"
    assert (parsed.database, parsed.user, parsed.ip_type) == (
        "audit",
        f"{prefix}-dataflow@{project}.iam",
        "private",
    )
    # No password anywhere, and the template's regex takes it.
    assert ":" not in parsed.user
    metadata = json.loads((ROOT / "templates" / "streaming" / "metadata.json").read_text())
    (regex,) = next(p for p in metadata["parameters"] if p["name"] == "audit_db_url")["regexes"]
    assert re.fullmatch(regex, url)
    # IAM login on a private-IP instance, with the worker's two Cloud SQL roles.
    assert {"roles/cloudsql.client", "roles/cloudsql.instanceUser"} <= set(
        TF.locals["worker_project_roles"]
    )
    flags = block(block(instance, "settings"), "database_flags")
    assert (flags["name"], flags["value"]) == ("cloudsql.iam_authentication", "on")


def test_streaming_job_is_sized_by_variables():
    job = TF.resource("google_dataflow_flex_template_job", "streaming")
    assert job["machine_type"] == "${var.streaming_machine_type}"
    assert job["num_workers"] == "${var.streaming_min_workers}"
    assert job["max_workers"] == "${var.streaming_max_workers}"
    assert job["autoscaling_algorithm"] == "THROUGHPUT_BASED"
    assert job["additional_pipeline_options"] == [
        "number_of_worker_harness_threads=${var.streaming_harness_threads}"
    ]
    defaults = {
        name: TF.variables[name]["default"]
        for name in (
            "streaming_machine_type",
            "streaming_min_workers",
            "streaming_max_workers",
            "streaming_harness_threads",
        )
    }
    assert defaults["streaming_min_workers"] <= defaults["streaming_max_workers"]
    # flex_settings hands the same to `make template-run-streaming`.
    workers = TF.outputs["flex_settings"]["value"]["streaming_workers"]
    assert workers == {
        "machine_type": "${var.streaming_machine_type}",
        "num_workers": "${var.streaming_min_workers}",
        "max_workers": "${var.streaming_max_workers}",
        "harness_threads": "${var.streaming_harness_threads}",
    }
