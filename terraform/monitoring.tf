# Alert policies: Pub/Sub backlog age, dead-letter rate (the pipeline's own dead letters, from its
# Beam counters, and messages Pub/Sub gave up on), and metric freshness against the SLO.

locals {
  dataflow_job_filter = "resource.type = \"dataflow_job\" AND resource.labels.job_name = \"${var.streaming_job_name}\""
  # Beam counters of the job (namespace genai) as Dataflow exports them to Cloud Monitoring.
  user_counter = "dataflow_googleapis_com:job_user_counter{monitored_resource=\"dataflow_job\",job_name=\"${var.streaming_job_name}\""
}

resource "google_monitoring_alert_policy" "pubsub_backlog_age" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: events backlog older than ${var.backlog_age_threshold_s}s"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "Oldest unacked message age on ${google_pubsub_subscription.events.name}"

    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.events.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.backlog_age_threshold_s
      duration        = "120s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The streaming job is not keeping up with the gateway (or is not running). Check the job's system lag and autoscaling; metrics will miss the freshness SLO."
  }
}

resource "google_monitoring_alert_policy" "dead_letter_rate" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: dead letters above ${var.dead_letter_ratio_threshold * 100}% of events"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "dead_letter.* counters / events_read over 10 minutes"

    condition_prometheus_query_language {
      query               = <<-EOT
        sum(delta(${local.user_counter},metric_name=~"dead_letter[.].+"}[10m]))
          / clamp_min(sum(delta(${local.user_counter},metric_name="events_read"}[10m])), 1)
          > ${var.dead_letter_ratio_threshold}
      EOT
      duration            = "300s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Inputs are being rejected (counter dead_letter.<reason>). Read the dead-letter bucket (gs://${google_storage_bucket.data["dead_letter"].name}/dead_letter/) for the reasons; payloads there are redacted or omitted."
  }
}

resource "google_monitoring_alert_policy" "pubsub_dead_letters" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: messages forwarded to the dead-letter topic"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "Dead-lettered messages on ${google_pubsub_subscription.events.name}"

    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.events.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Pub/Sub gave up delivering messages after ${var.max_delivery_attempts} attempts. They are kept on ${google_pubsub_subscription.dead_letter.name}; republish them to ${google_pubsub_topic.events.name} once the cause is fixed."
  }
}

# The SLO itself is measured by the freshness view (emitted_at - window_end per metrics row);
# these are its live signals: the watermark gates on-time panes, system lag delays every pane.
resource "google_monitoring_alert_policy" "metric_freshness" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: metrics staler than the ${var.freshness_slo_s}s SLO"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "Data watermark age of ${var.streaming_job_name}"

    condition_threshold {
      filter          = "${local.dataflow_job_filter} AND metric.type = \"dataflow.googleapis.com/job/data_watermark_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.freshness_slo_s
      duration        = "120s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "System lag of ${var.streaming_job_name}"

    condition_threshold {
      filter          = "${local.dataflow_job_filter} AND metric.type = \"dataflow.googleapis.com/job/system_lag\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.freshness_slo_s
      duration        = "120s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Usage metrics are older than the SLO. Query the freshness view (${var.dataset_id}.freshness) for the affected windows; check the backlog alert and the job's workers."
  }
}
