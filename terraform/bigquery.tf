# The warehouse: metrics_minute (one row per window_start, model, region; 365-day partitions),
# audit_log, the views of pipelines/sql and materialized copies of the daily ones; and, in a
# restricted dataset, the dead letters. Table schemas are generated from schemas/avro
# (python -m schemas.bigquery_files terraform/schemas).

locals {
  bigquery_location = coalesce(var.bigquery_location, var.region)
  dataset_ref       = "${var.project_id}.${google_bigquery_dataset.analytics.dataset_id}"
  dead_letter_table = "${var.project_id}.${google_bigquery_dataset.restricted.dataset_id}.${google_bigquery_table.dead_letters.table_id}"
  # pipelines/io/sinks/embedded/warehouse.py VIEW_NAMES (a test keeps them equal).
  view_names = [
    "metrics_daily",
    "latency_percentiles_daily",
    "policy_flag_rates_daily",
    "model_utilization_daily",
    "freshness",
    "schema_drift_daily",
  ]
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

resource "google_bigquery_table" "metrics_minute" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = "metrics_minute"
  description         = "Usage metrics per minute window, model and region (latest pane per key)."
  deletion_protection = true
  schema              = file("${path.module}/schemas/metrics_minute.json")
  clustering          = ["model", "region"]
  labels              = var.labels

  time_partitioning {
    type          = "DAY"
    field         = "window_start"
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
# (pipelines/io/sinks/embedded/warehouse.py translates the same files for DuckDB). It is not template syntax
# (${...}), so it is filled with replace() rather than templatefile().
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

  depends_on = [google_bigquery_table.metrics_minute]
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

# Window functions and UNNEST need a non-incremental materialized view, which requires
# max_staleness: queries see data at most that old, refreshed every refresh interval.
resource "google_bigquery_table" "materialized_views" {
  for_each = var.materialized_views

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = "${each.key}_mv"
  deletion_protection = false
  max_staleness       = var.materialized_view_max_staleness
  labels              = var.labels

  materialized_view {
    query                            = replace(file("${path.module}/../pipelines/sql/${each.key}.sql"), "{dataset}", local.dataset_ref)
    enable_refresh                   = true
    refresh_interval_ms              = var.materialized_view_refresh_minutes * 60000
    allow_non_incremental_definition = true
  }

  lifecycle {
    precondition {
      condition     = contains(local.view_names, each.key) && each.key != "freshness"
      error_message = "materialized_views must name daily views of pipelines/sql (freshness must stay live)."
    }
  }

  depends_on = [google_bigquery_table.metrics_minute]
}

# Dead letters, queryable: a dataset of their own, because their payloads (redacted or omitted)
# are restricted: only the worker writes (iam.tf) and only var.dead_letter_readers read, while
# the analytics dataset above is for analysts. The pipeline appends to the table
# (--dead_letter_table) through the Storage Write API; day partitions of failed_at expire with
# the dead-letter bucket's objects (dead_letter_retention_days). Schema from dead_letter.avsc.
resource "google_bigquery_dataset" "restricted" {
  project                    = var.project_id
  dataset_id                 = "${var.dataset_id}_restricted"
  location                   = local.bigquery_location
  description                = "GenAI pipeline dead letters (restricted: redacted or omitted payloads)."
  delete_contents_on_destroy = false
  labels                     = merge(var.labels, { data_class = "restricted" })

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "dead_letters" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.restricted.dataset_id
  table_id            = "dead_letters"
  description         = "Inputs the pipeline rejected: reason, step, time, hashes and the redacted payload."
  deletion_protection = true
  schema              = file("${path.module}/schemas/dead_letters.json")
  clustering          = ["reason", "step"]
  labels              = merge(var.labels, { data_class = "restricted" })

  time_partitioning {
    type          = "DAY"
    field         = "failed_at"
    expiration_ms = var.dead_letter_retention_days * local.day_ms
  }
}

resource "google_bigquery_dataset_iam_member" "dead_letter_readers" {
  for_each = toset(var.dead_letter_readers)

  project    = var.project_id
  dataset_id = google_bigquery_dataset.restricted.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = each.key
}
