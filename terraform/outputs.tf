output "flex_settings" {
  description = "Names the Flex Template commands need (make deploy-settings writes them for templates/flex.py)."
  value = {
    project               = var.project_id
    region                = var.region
    image_repository      = local.image_repository
    templates_bucket      = google_storage_bucket.templates.name
    staging_location      = local.staging_location
    temp_location         = local.temp_location
    service_account_email = google_service_account.worker.email
    subnetwork            = local.subnetwork
    streaming_job_name    = var.streaming_job_name
    event_schema          = google_pubsub_schema.gateway_event.id
    # The streaming job's workers, as google_dataflow_flex_template_job.streaming sets them.
    streaming_workers = {
      machine_type    = var.streaming_machine_type
      num_workers     = var.streaming_min_workers
      max_workers     = var.streaming_max_workers
      harness_threads = var.streaming_harness_threads
    }
    parameters = {
      streaming = local.streaming_parameters
      backfill  = local.launch_parameters
    }
  }
}

output "backfill_command" {
  description = "How to launch a backfill (archive replay) once the templates are built; make prints the exact gcloud command."
  value       = "make template-run-backfill TAG=<image tag> PARAMS='input=gs://${google_storage_bucket.data["raw"].name} input_format=avro start_date=YYYY-MM-DD end_date=YYYY-MM-DD'"
}

output "events_topic" {
  description = "Pub/Sub topic the gateway publishes events to."
  value       = google_pubsub_topic.events.id
}

output "events_subscription" {
  description = "Subscription the streaming job reads."
  value       = google_pubsub_subscription.events.id
}

output "event_schema" {
  description = "Pub/Sub schema of the events topic (the contract's required fields, JSON encoding)."
  value       = google_pubsub_schema.gateway_event.id
}

output "delivery_failure_topic" {
  description = "Topic Pub/Sub forwards undeliverable messages to (raw events)."
  value       = google_pubsub_topic.dead_letter.id
}

output "delivery_failure_subscription" {
  description = "Restricted subscription that keeps undeliverable messages delivery_failure_retention_days."
  value       = google_pubsub_subscription.dead_letter.id
}

output "dead_letter_topic" {
  description = "The pipeline's dead-letter topic (redacted records, --dead_letter_topic)."
  value       = google_pubsub_topic.pipeline_dead_letters.id
}

output "dead_letter_table" {
  description = "BigQuery table of the pipeline's dead letters (--dead_letter_table), restricted."
  value       = local.dead_letter_table
}

output "raw_bucket" {
  description = "Raw archive of redacted events (deleted after raw_retention_days)."
  value       = google_storage_bucket.data["raw"].name
}

output "dead_letter_bucket" {
  description = "Restricted bucket of the pipeline's dead letters."
  value       = google_storage_bucket.data["dead_letter"].name
}

output "templates_bucket" {
  description = "Template specs and Dataflow staging/temp files."
  value       = google_storage_bucket.templates.name
}

output "bigquery_dataset" {
  description = "Dataset of metrics_minute, audit_log and the views."
  value       = local.dataset_ref
}

output "audit_db_connection_name" {
  description = "Cloud SQL connection name of the audit store."
  value       = google_sql_database_instance.audit.connection_name
}

output "audit_db_private_ip" {
  description = "Private IP of the audit store (reachable from the workers' network only)."
  value       = google_sql_database_instance.audit.private_ip_address
}

output "audit_db_url" {
  description = "What the pipelines get as --audit_db_url: the Cloud SQL connector reference (no secret in it)."
  value       = local.audit_db_url
}

output "audit_db_user" {
  description = "IAM database user of the worker service account."
  value       = google_sql_user.worker.name
}

output "dlp_inspect_template" {
  description = "Resource name of the DLP inspect template."
  value       = google_data_loss_prevention_inspect_template.pii.id
}

output "dlp_deidentify_template" {
  description = "Resource name of the DLP de-identify template."
  value       = google_data_loss_prevention_deidentify_template.pii.id
}

output "worker_service_account" {
  description = "Service account of the Flex launcher and the Dataflow workers."
  value       = google_service_account.worker.email
}

output "pseudonym_key_secret" {
  description = "Secret that holds the pseudonym key; add a version before launching a job."
  value       = google_secret_manager_secret.pseudonym_key.id
}
