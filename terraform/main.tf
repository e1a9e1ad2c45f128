# The Google Cloud stack of the GenAI gateway analytics pipeline. Files by area: pubsub.tf,
# storage.tf, bigquery.tf, cloudsql.tf, dlp.tf, iam.tf, security.tf, monitoring.tf, dataflow.tf.

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  apis = [
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "compute.googleapis.com",
    "dataflow.googleapis.com",
    "dlp.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ]

  network_id = "projects/${var.project_id}/global/networks/${var.network_name}"
  subnetwork = "regions/${var.region}/subnetworks/${var.subnetwork_name}"

  # Google-managed service agent that forwards undeliverable messages to the dead-letter topic.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  image_repository = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"

  # Template parameters this stack sets for both pipelines (names of templates/*/metadata.json).
  template_parameters = {
    pseudonym_key    = "secret:projects/${var.project_id}/secrets/${google_secret_manager_secret.pseudonym_key.secret_id}/versions/${var.pseudonym_key_version}"
    redaction_engine = var.redaction_engine
    # The Google Cloud sinks (--sink gcp) on this stack's buckets, dataset and audit database.
    sink             = "gcp"
    raw_root         = "gs://${google_storage_bucket.data["raw"].name}"
    dead_letter_root = "gs://${google_storage_bucket.data["dead_letter"].name}"
    bigquery_dataset = local.dataset_ref
    # Dead letters also to the pipeline's topic and the restricted BigQuery table.
    dead_letter_topic = google_pubsub_topic.pipeline_dead_letters.id
    dead_letter_table = local.dead_letter_table
    # The Cloud SQL connector: the instance by connection name, IAM login of the worker's
    # database user, private IP (no password anywhere; pipelines/io/sinks/gcp/audit_db.py).
    audit_db_url = local.audit_db_url
  }
  audit_db_url = "cloudsql://${google_sql_user.worker.name}@${google_sql_database_instance.audit.connection_name}/${google_sql_database.audit.name}"
  # With a DLP engine (dlp, hybrid): the templates this stack creates, in their location.
  dlp_parameters = {
    dlp_project             = var.project_id
    dlp_location            = local.dlp_location
    dlp_inspect_template    = google_data_loss_prevention_inspect_template.pii.id
    dlp_deidentify_template = google_data_loss_prevention_deidentify_template.pii.id
  }
  launch_parameters = merge(
    local.template_parameters,
    contains(["dlp", "hybrid"], var.redaction_engine) ? local.dlp_parameters : {},
  )
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

# One image per template (templates/Dockerfile): the Flex launcher and the workers' SDK container.
resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-pipeline"
  format        = "DOCKER"
  description   = "Flex Template images of the GenAI gateway analytics pipelines."
  labels        = var.labels

  depends_on = [google_project_service.apis]
}
