# The warehouse: metrics_minute (one row per window_start, model, region; hour partitions kept
# metrics_minute_retention_days), its hourly and daily rollups, the per-minute freshness, the
# hourly usage per user and model version (a year), audit_log, the views of pipelines/sql, and
# the raw archive as an external table with the trace_request table function. Table schemas are
# generated from schemas/avro (python -m schemas.bigquery_files terraform/schemas).

locals {
  bigquery_location = coalesce(var.bigquery_location, var.region)
  dataset_ref       = "${var.project_id}.${google_bigquery_dataset.analytics.dataset_id}"
  # pipelines/views.py BASE_VIEW_NAMES, then the rest of VIEW_NAMES (a test keeps them equal):
  # the hourly and daily views select from the base views, so those are created first.
  base_view_names = [
    "metrics_by_period",
    "latency_percentiles_by_period",
    "policy_flag_rates_by_period",
    "model_utilization_by_period",
    "freshness_slo_by_period",
    "usage_by_user_by_period",
    "usage_by_model_version_by_period",
  ]
  view_names = [
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
  ]
  # The tables the sinks derive from metric panes, kept a year (pipelines/io/sinks/gcp/bigquery.py
  # _LAYOUT has the same partitioning and clustering for the tables it creates when missing).
  aggregate_tables = {
    metrics_rollup = {
      description = "Hourly and daily rollups of metrics_minute per model and region (sketches merged), kept in step at each commit."
      field       = "period_start"
      clustering  = ["grain", "model", "region"]
    }
    freshness_minute = {
      description = "Events per metric window by freshness bucket (ingestion to visible), kept in step at each commit."
      field       = "window_start"
      clustering  = null
    }
    usage_hourly = {
      description = "Usage per event-time hour, pseudonymous user_key, model and model_version (newest pane per key)."
      field       = "hour_start"
      clustering  = ["user_key", "model"]
    }
  }
  day_ms = 86400000
}

resource "google_bigquery_dataset" "analytics" {
  project                    = var.project_id
  dataset_id                 = var.dataset_id
  location                   = local.bigquery_location
  description                = "GenAI gateway usage metrics (1 year) and audit log."
  delete_contents_on_destroy = false
  labels                     = var.labels

  depends_on = [google_project_service.apis]
}

# Hour partitions: each commit of the sink reads and MERGEs only the hours it touches (ADR 0007).
# Kept metrics_minute_retention_days; the rollups carry the long-term metrics. (A stack created
# with day partitions must copy the table to change them: docs/deploy.md.)
resource "google_bigquery_table" "metrics_minute" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = "metrics_minute"
  description         = "Usage metrics per minute window, model and region (newest pane per key)."
  deletion_protection = true
  schema              = file("${path.module}/schemas/metrics_minute.json")
  clustering          = ["model", "region"]
  labels              = var.labels

  time_partitioning {
    type          = "HOUR"
    field         = "window_start"
    expiration_ms = var.metrics_minute_retention_days * local.day_ms
  }
}

resource "google_bigquery_table" "aggregates" {
  for_each = local.aggregate_tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = each.key
  description         = each.value.description
  deletion_protection = true
  schema              = file("${path.module}/schemas/${each.key}.json")
  clustering          = each.value.clustering
  labels              = var.labels

  time_partitioning {
    type          = "DAY"
    field         = each.value.field
    expiration_ms = var.metrics_partition_expiration_days * local.day_ms
  }
}

resource "google_bigquery_table" "audit_log" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = "audit_log"
  description         = "One record per event and outcome (written, duplicate, dead-lettered)."
  deletion_protection = true
  schema              = file("${path.module}/schemas/audit_log.json")
  clustering          = ["event_id", "outcome"]
  labels              = var.labels

  time_partitioning {
    type          = "DAY"
    field         = "recorded_at"
    expiration_ms = var.audit_log_partition_expiration_days == null ? null : var.audit_log_partition_expiration_days * local.day_ms
  }
}

# The view SQL is written once, in BigQuery Standard SQL, with a literal {dataset} placeholder
# (pipelines/views.py translates the same files for DuckDB). It is not template syntax (${...}),
# so it is filled with replace() rather than templatefile().
resource "google_bigquery_table" "base_views" {
  for_each = toset(local.base_view_names)

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = each.key
  deletion_protection = false
  labels              = var.labels

  view {
    query          = replace(file("${path.module}/../pipelines/sql/${each.key}.sql"), "{dataset}", local.dataset_ref)
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.metrics_minute, google_bigquery_table.aggregates]
}

resource "google_bigquery_table" "views" {
  for_each = toset(local.view_names)

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = each.key
  deletion_protection = false
  labels              = var.labels

  view {
    query          = replace(file("${path.module}/../pipelines/sql/${each.key}.sql"), "{dataset}", local.dataset_ref)
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.base_views]
}

# audit_log is append-only (streaming inserts are at least once): this view shows one row per
# audit record (pipelines/sql/audit_log_unique.sql, the view the pipeline also creates).
resource "google_bigquery_table" "audit_log_unique" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = "audit_log_unique"
  deletion_protection = false
  labels              = var.labels

  view {
    query          = replace(file("${path.module}/../pipelines/sql/audit_log_unique.sql"), "{dataset}", local.dataset_ref)
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.audit_log]
}

# The raw archive (redacted events, Avro) as an external table: BigQuery reads the files where
# they are, so it always holds what the bucket holds, for the bucket's 30 days. No hive
# partitioning: the archive's partition keys (event_date, region) are also columns of its files,
# which BigQuery's hive partitioning does not allow, so a query reads every file of the archive
# (docs/observability.md: cost per trace, and the layout change that would prune it).
resource "google_bigquery_table" "raw_events" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = "raw_events"
  description         = "The redacted raw archive (schemas/avro/redacted_event.avsc), read from gs://${google_storage_bucket.data["raw"].name}/raw/."
  deletion_protection = false
  labels              = var.labels

  external_data_configuration {
    source_format = "AVRO"
    autodetect    = false
    source_uris   = ["gs://${google_storage_bucket.data["raw"].name}/raw/*"]

    avro_options {
      use_avro_logical_types = true
    }
  }
}

# trace_request(request_id, first_day, last_day): a request's audit trail joined to its redacted
# record and policy decisions (pipelines/sql/trace_request.sql; python -m pipelines.trace is the
# embedded equivalent).
resource "google_bigquery_routine" "trace_request" {
  project         = var.project_id
  dataset_id      = google_bigquery_dataset.analytics.dataset_id
  routine_id      = "trace_request"
  routine_type    = "TABLE_VALUED_FUNCTION"
  language        = "SQL"
  description     = "Everything kept about one gateway request_id: audit trail, redacted record, policy decisions."
  definition_body = replace(file("${path.module}/../pipelines/sql/trace_request.sql"), "{dataset}", local.dataset_ref)

  arguments {
    name      = "wanted_request_id"
    data_type = jsonencode({ typeKind = "STRING" })
  }

  arguments {
    name      = "first_day"
    data_type = jsonencode({ typeKind = "DATE" })
  }

  arguments {
    name      = "last_day"
    data_type = jsonencode({ typeKind = "DATE" })
  }

  depends_on = [google_bigquery_table.raw_events, google_bigquery_table.audit_log_unique]
}

# Reading raw_events means reading the archive's objects: only the named trace readers may.
resource "google_storage_bucket_iam_member" "trace_readers" {
  for_each = toset(var.trace_readers)

  bucket = google_storage_bucket.data["raw"].name
  role   = "roles/storage.objectViewer"
  member = each.value
}
