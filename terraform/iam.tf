# The worker service account runs both the Flex launcher VM and the Dataflow workers. Least
# privilege: project roles only where a permission has no narrower resource; everything else is
# granted on the one resource it is needed for.

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-dataflow"
  display_name = "GenAI pipeline Dataflow worker"
  description  = "Launcher and workers of the GenAI gateway analytics pipelines."

  depends_on = [google_project_service.apis]
}

locals {
  worker_member = "serviceAccount:${google_service_account.worker.email}"

  worker_project_roles = [
    "roles/dataflow.worker",               # work items, job metrics and logs
    "roles/bigquery.jobUser",              # query/load jobs (upserts) run in the project
    "roles/cloudsql.client",               # the connector: instance metadata, ephemeral certificates
    "roles/cloudsql.instanceUser",         # IAM database login (the connector's token)
    "roles/dlp.user",                      # inspect and de-identify content
    "roles/dlp.inspectTemplatesReader",    # read the inspect template by name
    "roles/dlp.deidentifyTemplatesReader", # read the de-identify template by name
  ]

  # Buckets the worker reads and writes: the archive, dead letters, staging/temp and specs.
  worker_buckets = {
    raw         = google_storage_bucket.data["raw"].name
    dead_letter = google_storage_bucket.data["dead_letter"].name
    templates   = google_storage_bucket.templates.name
  }
}

resource "google_project_iam_member" "worker" {
  for_each = toset(local.worker_project_roles)

  project = var.project_id
  role    = each.key
  member  = local.worker_member
}

resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.events.name
  role         = "roles/pubsub.subscriber"
  member       = local.worker_member
}

# Dataflow's Pub/Sub source reads the subscription's configuration.
resource "google_pubsub_subscription_iam_member" "worker_viewer" {
  project      = var.project_id
  subscription = google_pubsub_subscription.events.name
  role         = "roles/pubsub.viewer"
  member       = local.worker_member
}

resource "google_storage_bucket_iam_member" "worker_object_admin" {
  for_each = local.worker_buckets

  bucket = each.value
  role   = "roles/storage.objectAdmin"
  member = local.worker_member
}

resource "google_bigquery_dataset_iam_member" "worker_data_editor" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.analytics.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = local.worker_member
}

# The dead-letter table, in its restricted dataset (appends through the Storage Write API).
resource "google_bigquery_dataset_iam_member" "worker_dead_letter_editor" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.restricted.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = local.worker_member
}

# The pipeline's dead-letter topic (--dead_letter_topic).
resource "google_pubsub_topic_iam_member" "worker_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.pipeline_dead_letters.name
  role    = "roles/pubsub.publisher"
  member  = local.worker_member
}

resource "google_secret_manager_secret_iam_member" "worker_pseudonym_key" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.pseudonym_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.worker_member
}

resource "google_artifact_registry_repository_iam_member" "worker_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = local.worker_member
}
