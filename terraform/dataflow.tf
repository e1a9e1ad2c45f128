# The streaming job, launched from its Flex Template (templates/streaming, built by
# `make template-build`). Backfills are one-off batch jobs, launched with a command (outputs.tf
# backfill_command, `make template-run-backfill`), not kept in state.

locals {
  streaming_metadata        = jsondecode(file("${path.module}/../templates/streaming/metadata.json"))
  streaming_parameter_names = [for parameter in local.streaming_metadata.parameters : parameter.name]
  streaming_parameters = merge(
    local.launch_parameters,
    { source = "pubsub", subscription = google_pubsub_subscription.events.id },
    var.streaming_parameters,
  )
  staging_location = "gs://${google_storage_bucket.templates.name}/staging"
  temp_location    = "gs://${google_storage_bucket.templates.name}/temp"
}

resource "google_dataflow_flex_template_job" "streaming" {
  provider = google-beta
  count    = var.launch_streaming_job ? 1 : 0

  project                 = var.project_id
  region                  = var.region
  name                    = var.streaming_job_name
  container_spec_gcs_path = "gs://${google_storage_bucket.templates.name}/templates/streaming.json"
  # The launcher image is also the workers' image.
  sdk_container_image     = "${local.image_repository}/genai-streaming:${coalesce(var.image_tag, "unset")}"
  service_account_email   = google_service_account.worker.email
  staging_location        = local.staging_location
  temp_location           = local.temp_location
  subnetwork              = local.subnetwork
  ip_configuration        = "WORKER_IP_PRIVATE"
  enable_streaming_engine = true
  # Sizing (docs/deploy.md, from benchmarks/cost_per_event.py): the average on the minimum,
  # autoscaling by throughput up to twice the peak.
  machine_type                = var.streaming_machine_type
  num_workers                 = var.streaming_min_workers
  max_workers                 = var.streaming_max_workers
  autoscaling_algorithm       = "THROUGHPUT_BASED"
  additional_pipeline_options = ["number_of_worker_harness_threads=${var.streaming_harness_threads}"]
  labels                      = var.labels
  parameters                  = local.streaming_parameters

  # Drain on destroy or replacement: stop reading, finish in-flight windows, then stop, so
  # nothing acknowledged is lost.
  on_delete = "drain"

  lifecycle {
    precondition {
      condition     = var.image_tag != null && var.image_tag != ""
      error_message = "Set image_tag to the tag built by `make template-build TAG=...`."
    }
    precondition {
      condition     = length(setsubtract(keys(local.streaming_parameters), local.streaming_parameter_names)) == 0
      error_message = "Every streaming parameter must be declared in templates/streaming/metadata.json."
    }
    precondition {
      condition     = var.streaming_min_workers <= var.streaming_max_workers
      error_message = "streaming_min_workers must not exceed streaming_max_workers."
    }
  }

  depends_on = [
    google_project_iam_member.worker,
    google_pubsub_subscription_iam_member.worker_subscriber,
    google_storage_bucket_iam_member.worker_object_admin,
    google_secret_manager_secret_iam_member.worker_pseudonym_key,
    google_artifact_registry_repository_iam_member.worker_images,
    google_bigquery_dataset_iam_member.worker_dead_letter_editor,
    google_pubsub_topic_iam_member.worker_dead_letter_publisher,
  ]
}
