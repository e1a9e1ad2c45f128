# Cloud Monitoring: the dashboard of the streaming job, the freshness SLO with its burn-rate
# alerts, and the alert policies (backlog, lag, dead letters, policy-flag rates, redaction and
# sink failures, internal errors, schema drift, DLP quota). docs/observability.md explains each.
#
# The pipeline's own signals are Beam metrics in namespace genai, which Dataflow exports as
# dataflow.googleapis.com/job/user_counter (label metric_name): cumulative values sampled as a
# GAUGE. Queries therefore take their increase over a range with PromQL delta(). Cloud
# Monitoring's SLO objects take only DELTA or CUMULATIVE request counts (or a GAUGE judged per
# window), so the freshness SLO is defined here as its multi-window burn-rate alert on the same
# counters, and its compliance over hours and days is the freshness_slo_* views in BigQuery.

locals {
  dataflow_job_filter = "resource.type = \"dataflow_job\" AND resource.labels.job_name = \"${var.streaming_job_name}\""
  # Beam counters of the job (namespace genai) as Dataflow exports them to Cloud Monitoring.
  user_counter = "dataflow_googleapis_com:job_user_counter{monitored_resource=\"dataflow_job\",job_name=\"${var.streaming_job_name}\""

  # Increase of a set of the job's counters over a range, summed ("by (metric_name)" keeps one
  # series per counter): the building block of every query below.
  freshness_good  = "sum(delta(${local.user_counter},metric_name=\"freshness_events_within_${var.freshness_slo_s}s\"}[WINDOW]))"
  freshness_total = "sum(delta(${local.user_counter},metric_name=\"freshness_events\"}[WINDOW]))"
  # Share of the events made visible in WINDOW that missed the SLO; 0 when nothing was visible.
  freshness_bad_ratio = "((${local.freshness_total} - ${local.freshness_good}) / clamp_min(${local.freshness_total}, 1))"
  error_budget        = 1 - var.freshness_slo_target
  # Burn rates of the SRE workbook's multi-window alerts for a 30-day budget: 14.4 spends 2% of
  # it in an hour (page), 6 spends 5% in 6 hours (ticket); the short window ends the alert soon
  # after the burn stops.
  burn_rate_windows = {
    fast = { long = "1h", short = "5m", burn_rate = 14.4 }
    slow = { long = "6h", short = "30m", burn_rate = 6 }
  }

  requests_1h     = "scalar(clamp_min(sum(delta(${local.user_counter},metric_name=\"requests_aggregated\"}[1h])), 1))"
  flag_rate_1h    = "(sum by (metric_name) (delta(${local.user_counter},metric_name=~\"policy_flag[.].+\"}[1h])) / ${local.requests_1h})"
  enough_requests = "on() (sum(delta(${local.user_counter},metric_name=\"requests_aggregated\"}[1h])) > ${var.policy_flag_min_requests})"

  # Latency histogram counters latency_ms_bucket.<model>.<le> (transforms/aggregate.py), with the
  # model and the bucket bound lifted into labels for histogram_quantile.
  latency_buckets = "sum by (model, le) (label_replace(label_replace(delta(${local.user_counter},metric_name=~\"latency_ms_bucket[.].+\"}[5m]), \"le\", \"$2\", \"metric_name\", \"latency_ms_bucket[.](.+)[.]([^.]+)\"), \"model\", \"$1\", \"metric_name\", \"latency_ms_bucket[.](.+)[.]([^.]+)\"))"

  # Alerts that fire on any occurrence of a dead-letter reason (or counter) in 10 minutes.
  any_occurrence_alerts = {
    redaction_failed = {
      title    = "PII redaction failed"
      counters = "dead_letter[.]redaction_failed.*"
      doc      = "The redaction engine could not redact events (reason redaction_failed[:cause]); they are dead-lettered without their text (fail closed). Check the engine's counters (dlp.*) and the DLP quota alert; replay the dead letters once it works (python -m pipelines.replay --reason redaction_failed)."
    }
    sink_failed = {
      title    = "a sink failed to write rows"
      counters = "dead_letter[.]sink_failed.*"
      doc      = "BigQuery, Cloud SQL or Cloud Storage refused rows or kept failing after the retries (reason sink_failed:<sink>); the rows are in the dead-letter bucket with the row as payload. Check the service's status and quotas, then replay them."
    }
    internal_error = {
      title    = "an element failed a pipeline step"
      counters = "dead_letter[.]internal_error.*"
      doc      = "A step met an error it does not expect (reason internal_error:<step>): a bug. The element is dead-lettered; read the dead letter (step, error type) and fix the step."
    }
    schema_drift = {
      title    = "events carry fields the contract does not know"
      counters = "schema_drift.*"
      doc      = "The gateway sends fields that schemas/avro/gateway_event.avsc does not declare: they are dropped and counted, never stored. A new field needs the platform team's contract change and security's sign-off (docs/data-contract.md)."
    }
  }
}

# --- the freshness SLO: multi-window burn-rate alerts ------------------------------------------

resource "google_monitoring_alert_policy" "freshness_slo_burn" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: freshness SLO error budget burning (${var.freshness_slo_target * 100}% within ${var.freshness_slo_s}s)"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  dynamic "conditions" {
    for_each = local.burn_rate_windows

    content {
      display_name = "${conditions.key} burn: ${conditions.value.burn_rate}x the error budget over ${conditions.value.long} and ${conditions.value.short}"

      condition_prometheus_query_language {
        query               = "(${replace(local.freshness_bad_ratio, "WINDOW", conditions.value.long)} / ${local.error_budget} > ${conditions.value.burn_rate}) and (${replace(local.freshness_bad_ratio, "WINDOW", conditions.value.short)} / ${local.error_budget} > ${conditions.value.burn_rate})"
        duration            = "0s"
        evaluation_interval = "60s"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Events take longer than ${var.freshness_slo_s}s from ingestion to a committed metric row (counters freshness_events and freshness_events_within_${var.freshness_slo_s}s). Look at the pipeline lag and backlog alerts and at the BigQuery MERGE durations of the metrics sink; hourly and daily compliance: ${var.dataset_id}.freshness_slo_hourly / _daily."
  }
}

# --- pipeline health ---------------------------------------------------------------------------

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
    content   = "The streaming job is not keeping up with the gateway (or is not running). Check the job's system lag and autoscaling; events will miss the freshness SLO."
  }
}

# The watermark gates on-time panes and system lag delays every pane: when either runs past the
# threshold, freshness follows (a leading signal of the SLO alert above, not a second measure).
resource "google_monitoring_alert_policy" "pipeline_lag" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: streaming job lagging more than ${var.pipeline_lag_threshold_s}s"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  dynamic "conditions" {
    for_each = { data_watermark_age = "Data watermark age", system_lag = "System lag" }

    content {
      display_name = "${conditions.value} of ${var.streaming_job_name}"

      condition_threshold {
        filter          = "${local.dataflow_job_filter} AND metric.type = \"dataflow.googleapis.com/job/${conditions.key}\""
        comparison      = "COMPARISON_GT"
        threshold_value = var.pipeline_lag_threshold_s
        duration        = "120s"

        aggregations {
          alignment_period   = "60s"
          per_series_aligner = "ALIGN_MAX"
        }
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The job's watermark or system lag is over ${var.pipeline_lag_threshold_s}s: metric rows will be late. Check the backlog alert, the job's workers and autoscaling."
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

# --- failures that need a person at once ----------------------------------------------------------

resource "google_monitoring_alert_policy" "occurrences" {
  for_each = local.any_occurrence_alerts

  project               = var.project_id
  display_name          = "${var.name_prefix}: ${each.value.title}"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "Counters ${each.value.counters} increased in 10 minutes"

    condition_prometheus_query_language {
      query               = "sum by (metric_name) (delta(${local.user_counter},metric_name=~\"${each.value.counters}\"}[10m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = each.value.doc
  }
}

resource "google_monitoring_alert_policy" "dlp_quota" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: Cloud DLP quota exhausted or unavailable"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "Events dead-lettered because DLP quota was exhausted"

    condition_prometheus_query_language {
      query               = "sum(delta(${local.user_counter},metric_name=\"dead_letter.redaction_failed:dlp_resource_exhausted\"}[10m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  conditions {
    display_name = "DLP calls retried above ${var.dlp_retry_ratio_threshold * 100}% of requests over 10 minutes"

    condition_prometheus_query_language {
      query               = "sum(delta(${local.user_counter},metric_name=\"dlp.retries\"}[10m])) / clamp_min(sum(delta(${local.user_counter},metric_name=\"dlp.requests\"}[10m])), 1) > ${var.dlp_retry_ratio_threshold}"
      duration            = "300s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The dlp or hybrid redaction engine is being throttled (RESOURCE_EXHAUSTED) or DLP is failing: events fail closed as redaction_failed:dlp_*. Raise the DLP quota, lower --dlp_requests_per_minute per worker, or switch to the hybrid engine (docs/privacy.md)."
  }
}

# --- policy-flag rates -------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "policy_flag_rate" {
  project               = var.project_id
  display_name          = "${var.name_prefix}: policy-flag rate anomaly"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "A policy flag on more than ${var.policy_flag_rate_threshold * 100}% of requests over an hour"

    condition_prometheus_query_language {
      query               = "(${local.flag_rate_1h} > ${var.policy_flag_rate_threshold}) and ${local.enough_requests}"
      duration            = "0s"
      evaluation_interval = "300s"
    }
  }

  conditions {
    display_name = "A policy flag's hourly rate over ${var.policy_flag_baseline_ratio}x its rate of the 7 days before"

    condition_prometheus_query_language {
      query               = <<-EOT
        (
          ${local.flag_rate_1h}
          / clamp_min(
              sum by (metric_name) (delta(${local.user_counter},metric_name=~"policy_flag[.].+"}[7d] offset 1h))
                / scalar(clamp_min(sum(delta(${local.user_counter},metric_name="requests_aggregated"}[7d] offset 1h)), 1)),
              0.0001)
          > ${var.policy_flag_baseline_ratio}
        ) and ${local.enough_requests}
      EOT
      duration            = "0s"
      evaluation_interval = "300s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A gateway policy flag (counter policy_flag.<flag>: jailbreak_suspected, prompt_injection_suspected, secret_detected, ...) is raised far more often than usual: an attack, a misbehaving client or a gateway change. Per model and day: ${var.dataset_id}.policy_flag_rates_hourly / _daily; per request: ${var.dataset_id}.trace_request."
  }
}

# --- the dashboard -----------------------------------------------------------------------------

locals {
  pubsub_subscription_filter = "resource.type=\"pubsub_subscription\" resource.label.subscription_id=\"${google_pubsub_subscription.events.name}\""
  dataflow_metric_filter     = "resource.type=\"dataflow_job\" resource.label.job_name=\"${var.streaming_job_name}\""

  # One tile: a title and PromQL queries, each drawn as a line (or a filter on a Google metric).
  dashboard_tiles = [
    {
      title = "Ingestion: events read per second"
      queries = {
        "events read" = "sum(delta(${local.user_counter},metric_name=\"events_read\"}[5m])) / 300"
        "written"     = "sum(delta(${local.user_counter},metric_name=\"events_written\"}[5m])) / 300"
        "duplicates"  = "sum(delta(${local.user_counter},metric_name=\"events_duplicate\"}[5m])) / 300"
      }
      filters = {}
    },
    {
      title   = "Backlog: undelivered messages and oldest unacked age (s)"
      queries = {}
      filters = {
        "undelivered messages" = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" ${local.pubsub_subscription_filter}"
        "oldest unacked (s)"   = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" ${local.pubsub_subscription_filter}"
      }
    },
    {
      title   = "Lag: data watermark age and system lag (s)"
      queries = {}
      filters = {
        "data watermark age" = "metric.type=\"dataflow.googleapis.com/job/data_watermark_age\" ${local.dataflow_metric_filter}"
        "system lag"         = "metric.type=\"dataflow.googleapis.com/job/system_lag\" ${local.dataflow_metric_filter}"
      }
    },
    {
      title = "Dead letters per second, by reason"
      queries = {
        "by reason" = "sum by (metric_name) (delta(${local.user_counter},metric_name=~\"dead_letter[.].+\"}[5m])) / 300"
      }
      filters = {}
    },
    {
      title = "Freshness SLO: share of events visible within ${var.freshness_slo_s}s (target ${var.freshness_slo_target * 100}%)"
      queries = {
        "last hour"    = "${replace(local.freshness_good, "WINDOW", "1h")} / clamp_min(${replace(local.freshness_total, "WINDOW", "1h")}, 1)"
        "last 5 min"   = "${replace(local.freshness_good, "WINDOW", "5m")} / clamp_min(${replace(local.freshness_total, "WINDOW", "5m")}, 1)"
        "burn rate 1h" = "${replace(local.freshness_bad_ratio, "WINDOW", "1h")} / ${local.error_budget}"
      }
      filters = {}
    },
    {
      title = "Tokens per second and estimated cost (USD per hour)"
      queries = {
        "tokens/s" = "sum(delta(${local.user_counter},metric_name=\"tokens\"}[5m])) / 300"
        "USD/h"    = "sum(delta(${local.user_counter},metric_name=\"estimated_cost_micro_usd\"}[1h])) / 1000000"
      }
      filters = {}
    },
    {
      title = "Policy-flag rates (share of requests, 15 min)"
      queries = {
        "by flag" = "sum by (metric_name) (delta(${local.user_counter},metric_name=~\"policy_flag[.].+\"}[15m])) / scalar(clamp_min(sum(delta(${local.user_counter},metric_name=\"requests_aggregated\"}[15m])), 1))"
      }
      filters = {}
    },
    {
      title = "Latency percentiles per model (ms, 5 min)"
      queries = {
        "p50" = "histogram_quantile(0.5, ${local.latency_buckets})"
        "p95" = "histogram_quantile(0.95, ${local.latency_buckets})"
        "p99" = "histogram_quantile(0.99, ${local.latency_buckets})"
      }
      filters = {}
    },
  ]
}

resource "google_monitoring_dashboard" "pipeline" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "${var.name_prefix}: GenAI gateway pipeline"
    mosaicLayout = {
      columns = 48
      tiles = [
        for i, tile in local.dashboard_tiles : {
          xPos   = (i % 2) * 24
          yPos   = floor(i / 2) * 16
          width  = 24
          height = 16
          widget = {
            title = tile.title
            xyChart = {
              dataSets = concat(
                [
                  for name, query in tile.queries : {
                    plotType       = "LINE"
                    legendTemplate = name
                    timeSeriesQuery = {
                      prometheusQuery = query
                    }
                  }
                ],
                [
                  for name, filter in tile.filters : {
                    plotType       = "LINE"
                    legendTemplate = name
                    timeSeriesQuery = {
                      timeSeriesFilter = {
                        filter = filter
                        aggregation = {
                          alignmentPeriod  = "60s"
                          perSeriesAligner = "ALIGN_MAX"
                        }
                      }
                    }
                  }
                ],
              )
            }
          }
        }
      ]
    }
  })
}
