"""Offline checks of terraform/: formatting, validation (when the providers exist) and the
properties the design promises (retention, partitioning, dead-letter policy, IAM, drain)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.io.sinks.embedded.audit import AUDIT_TABLE
from pipelines.io.sinks.embedded.warehouse import METRICS_TABLE
from pipelines.views import VIEW_NAMES, bigquery_view_sql
from schemas.bigquery_files import TABLE_SCHEMAS, render_table_schema, write_table_schemas
from schemas.contract import bigquery_schema
from tests.support.terraform_config import (
    ROOT,
    TERRAFORM_DIR,
    block,
    blocks,
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


def _provider_dirs() -> list[Path]:
    """Directories holding both providers unpacked (a mirror, cache or initialized directory)."""
    home = Path.home()
    candidates = [
        TERRAFORM_DIR / ".terraform" / "providers",
        Path(os.environ.get("TF_PLUGIN_CACHE_DIR", "/nonexistent")),
        home / ".terraform.d" / "plugins",
        Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share")) / "terraform" / "plugins",
        Path("/usr/local/share/terraform/plugins"),
        Path("/usr/share/terraform/plugins"),
    ]
    return [
        d
        for d in candidates
        if all((d / "registry.terraform.io" / "hashicorp" / p).is_dir() for p in PROVIDERS)
    ]


def test_terraform_validate(tmp_path):
    terraform = _terraform()
    plugin_dirs = _provider_dirs()
    if not plugin_dirs:
        pytest.skip(
            "the google and google-beta Terraform providers are not installed here (no registry "
            "access); README 'Deploy to Google Cloud' shows how to run terraform validate"
        )
    # A copy keeps .terraform/ out of the repository; file() reads ../templates and ../pipelines.
    work = tmp_path / "repo"
    shutil.copytree(TERRAFORM_DIR, work / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
    shutil.copytree(ROOT / "templates", work / "templates")
    shutil.copytree(ROOT / "pipelines" / "sql", work / "pipelines" / "sql")
    chdir = f"-chdir={work / 'terraform'}"
    init = subprocess.run(
        [
            terraform,
            chdir,
            "init",
            "-backend=false",
            "-input=false",
            f"-plugin-dir={plugin_dirs[0]}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    validate = subprocess.run(
        [terraform, chdir, "validate", "-no-color"], capture_output=True, text=True, check=False
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr


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


def test_metrics_minute_partitioned_by_day_clustered_and_expires_after_365_days():
    table = TF.resource("google_bigquery_table", "metrics_minute")
    partitioning = block(table, "time_partitioning")
    assert (partitioning["type"], partitioning["field"]) == ("DAY", "window_start")
    assert partitioning["expiration_ms"] == (
        "${var.metrics_partition_expiration_days * local.day_ms}"
    )
    assert TF.variables["metrics_partition_expiration_days"]["default"] * DAY_MS == 365 * DAY_MS
    assert TF.locals["day_ms"] == DAY_MS
    assert table["clustering"] == ["model", "region"]
    assert table["deletion_protection"] is True


@pytest.mark.parametrize("table", sorted(TABLE_SCHEMAS))
def test_tables_read_the_generated_schema_files(table):
    (body,) = [b for b in TF.of_type("google_bigquery_table").values() if b["table_id"] == table]
    assert body["schema"] == f'${{file("${{path.module}}/schemas/{table}.json")}}'
    assert (TERRAFORM_DIR / "schemas" / f"{table}.json").is_file()
    # Partition and clustering columns exist in the schema the table is created with.
    columns = {
        f["name"] for f in json.loads((TERRAFORM_DIR / "schemas" / f"{table}.json").read_text())
    }
    assert block(body, "time_partitioning")["field"] in columns
    assert set(body["clustering"]) <= columns


def test_schema_files_are_exactly_what_the_contract_derives_today():
    files = {p.stem for p in (TERRAFORM_DIR / "schemas").glob("*.json")}
    assert files == set(TABLE_SCHEMAS)
    for table, schema in TABLE_SCHEMAS.items():
        text = (TERRAFORM_DIR / "schemas" / f"{table}.json").read_text("utf-8")
        assert json.loads(text) == bigquery_schema(schema), (
            f"terraform/schemas/{table}.json is stale: python -m schemas.bigquery_files "
            "terraform/schemas"
        )
        assert text == render_table_schema(table)


def test_schema_files_name_the_sinks_tables_and_fit_bigquery_limits():
    assert set(TABLE_SCHEMAS) == {METRICS_TABLE, AUDIT_TABLE}

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
    assert sorted(p.name for p in written) == sorted(f"{t}.json" for t in TABLE_SCHEMAS)
    for path in written:
        assert path.read_text("utf-8") == (TERRAFORM_DIR / "schemas" / path.name).read_text("utf-8")


def _terraform_view_query(name: str, dataset: str) -> str:
    """What Terraform's replace(file(...), "{dataset}", dataset_ref) gives for view ``name``."""
    views = TF.resource("google_bigquery_table", "views")
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
    assert TF.locals["view_names"] == list(VIEW_NAMES)
    assert TF.resource("google_bigquery_table", "views")["for_each"] == "${toset(local.view_names)}"
    for name in VIEW_NAMES:
        expected = bigquery_view_sql(name, "p.d").split("\n", 1)[1]  # body after CREATE ... AS
        assert _terraform_view_query(name, "p.d") == expected


def test_audit_view_is_the_pipelines_sql_on_the_audit_table():
    view = TF.resource("google_bigquery_table", "audit_log_unique")
    assert view["table_id"] == "audit_log_unique"
    assert "pipelines/sql/audit_log_unique.sql" in block(view, "view")["query"]
    assert view["depends_on"] == ["${google_bigquery_table.audit_log}"]


def test_materialized_views_are_non_incremental_copies_of_daily_views():
    mv = TF.resource("google_bigquery_table", "materialized_views")
    definition = block(mv, "materialized_view")
    assert definition["allow_non_incremental_definition"] is True
    assert definition["enable_refresh"] is True
    assert (
        definition["query"] == block(TF.resource("google_bigquery_table", "views"), "view")["query"]
    )
    assert mv["max_staleness"] == "${var.materialized_view_max_staleness}"
    assert mv["table_id"] == "${each.key}_mv"
    defaults = set(TF.variables["materialized_views"]["default"])
    assert defaults <= set(VIEW_NAMES) - {"freshness"}


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
                    for k in ("subscription", "bucket", "dataset_id", "secret_id", "repository")
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


def test_data_access_audit_logs_for_storage_and_bigquery():
    assert set(TF.locals["data_access_audited_services"]) == {
        "storage.googleapis.com",
        "bigquery.googleapis.com",
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


def test_alert_on_metric_freshness_against_the_2_minute_slo():
    assert TF.variables["freshness_slo_s"]["default"] == 120
    metrics = set()
    for condition in _conditions("metric_freshness"):
        threshold = block(condition, "condition_threshold")
        assert threshold["threshold_value"] == "${var.freshness_slo_s}"
        assert threshold["filter"].startswith("${local.dataflow_job_filter}")
        metrics.add(re.search(r"dataflow\.googleapis\.com/job/(\w+)", threshold["filter"]).group(1))
    assert metrics == {"data_watermark_age", "system_lag"}
    assert "${var.streaming_job_name}" in TF.locals["dataflow_job_filter"]


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
