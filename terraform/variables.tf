# --- Project and naming ------------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "Google Cloud project that holds the whole stack."
}

variable "region" {
  type        = string
  description = "Region of the regional resources: buckets, Dataflow, Cloud SQL, Artifact Registry, DLP templates (unless dlp_location is set)."
  default     = "europe-west1"
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (lower case letters, digits and dashes)."
  default     = "genai"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 characters: a lower case letter, then lower case letters, digits or dashes."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every resource that takes labels."
  default     = { app = "genai-pipeline" }
}

variable "enable_apis" {
  type        = bool
  description = "Enable the Google Cloud APIs the stack uses (never disabled on destroy)."
  default     = true
}

# --- Network -----------------------------------------------------------------------------------

variable "network_name" {
  type        = string
  description = "VPC network of the Dataflow workers and of the audit database's private IP."
  default     = "default"
}

variable "subnetwork_name" {
  type        = string
  description = "Subnetwork (in var.region, with Private Google Access on) of the Dataflow workers, which get no public IP."
  default     = "default"
}

variable "create_private_service_access" {
  type        = bool
  description = "Reserve a range and peer the network with servicenetworking (needed once per network for Cloud SQL private IP). Set false when the network already has it."
  default     = true
}

variable "private_service_prefix_length" {
  type        = number
  description = "Prefix length of the range reserved for private services access."
  default     = 16
}

# --- Pub/Sub -----------------------------------------------------------------------------------

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries of a message on the events subscription before Pub/Sub forwards it to the dead-letter topic."
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "Pub/Sub accepts 5 to 100 delivery attempts."
  }
}

variable "ack_deadline_seconds" {
  type        = number
  description = "Ack deadline of the events subscription (Dataflow extends it while it works)."
  default     = 60
}

variable "message_retention_duration" {
  type        = string
  description = "How long the subscriptions keep unacknowledged messages (the replay window of the source)."
  default     = "604800s"
}

# --- Storage and retention ---------------------------------------------------------------------

variable "raw_retention_days" {
  type        = number
  description = "Days a redacted raw event stays in the raw bucket before lifecycle deletes it (seed design: 30 days)."
  default     = 30

  validation {
    condition     = var.raw_retention_days >= 1 && var.raw_retention_days <= 30
    error_message = "Raw prompts and responses are kept at most 30 days."
  }
}

variable "dead_letter_retention_days" {
  type        = number
  description = "Days a dead letter (restricted: redacted or omitted payload) stays in the dead-letter bucket."
  default     = 30

  validation {
    condition     = var.dead_letter_retention_days >= 1 && var.dead_letter_retention_days <= 30
    error_message = "Dead letters carry (redacted) payloads: keep them at most 30 days, like raw events."
  }
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the raw and dead-letter buckets (CMEK). null: Google-managed encryption."
  default     = null
}

variable "dead_letter_readers" {
  type        = list(string)
  description = "Members allowed to read dead letters (objectViewer on the dead-letter bucket), e.g. [\"group:pipeline-oncall@example.com\"]. The worker only writes them."
  default     = []
}

# --- BigQuery ----------------------------------------------------------------------------------

variable "dataset_id" {
  type        = string
  description = "BigQuery dataset of the metric tables, audit_log, the views and the raw archive's external table."
  default     = "genai_analytics"
}

variable "bigquery_location" {
  type        = string
  description = "Location of the dataset; null: var.region."
  default     = null
}

variable "metrics_partition_expiration_days" {
  type        = number
  description = "Days a daily partition of the rollups (metrics_rollup), freshness_minute and usage_hourly is kept (seed design: aggregated metrics 1 year)."
  default     = 365
}

variable "metrics_minute_retention_days" {
  type        = number
  description = "Days an hourly partition of metrics_minute is kept; the rollups keep the long-term metrics. At most 160 (BigQuery's 4,000 partitions per table, hourly)."
  default     = 30

  validation {
    condition     = var.metrics_minute_retention_days >= 1 && var.metrics_minute_retention_days <= 160
    error_message = "metrics_minute_retention_days must be between 1 and 160."
  }
}

variable "trace_readers" {
  type        = list(string)
  description = "Members (user:, group:, serviceAccount:) who may read the raw archive through BigQuery (raw_events, trace_request): object viewer on the raw bucket. The archive holds redacted texts."
  default     = []
}

variable "audit_log_partition_expiration_days" {
  type        = number
  description = "Days a daily partition of the BigQuery audit_log is kept; null keeps it (the audit log holds pseudonyms and outcomes, no text)."
  default     = null
}

# --- Audit store (Cloud SQL) -------------------------------------------------------------------

variable "audit_db_tier" {
  type        = string
  description = "Machine tier of the Cloud SQL for PostgreSQL audit instance."
  default     = "db-custom-2-7680"
}

variable "audit_db_availability_type" {
  type        = string
  description = "REGIONAL (high availability) or ZONAL."
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.audit_db_availability_type)
    error_message = "audit_db_availability_type must be REGIONAL or ZONAL."
  }
}

variable "audit_db_backup_count" {
  type        = number
  description = "Automated daily backups kept for the audit instance."
  default     = 30
}

# --- PII: DLP and pseudonyms -------------------------------------------------------------------

variable "dlp_location" {
  type        = string
  description = "Location of the DLP templates (a region, or global); null: var.region."
  default     = null
}

variable "dlp_min_likelihood" {
  type        = string
  description = "Minimum likelihood of a DLP finding that is redacted."
  default     = "POSSIBLE"

  validation {
    condition     = contains(["VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY"], var.dlp_min_likelihood)
    error_message = "dlp_min_likelihood must be a DLP Likelihood."
  }
}

variable "pseudonym_key_version" {
  type        = string
  description = "Version of the pseudonym-key secret the pipelines read (pin a number: a new key changes every pseudonym). Add it out of band, so the key never enters the Terraform state."
  default     = "1"
}

variable "redaction_engine" {
  type        = string
  description = "Template parameter redaction_engine of both pipelines: offline, dlp or hybrid (the DLP engines get this stack's templates)."
  default     = "offline"

  validation {
    condition     = contains(["offline", "dlp", "hybrid"], var.redaction_engine)
    error_message = "redaction_engine must be offline, dlp or hybrid."
  }
}

# --- Dataflow ----------------------------------------------------------------------------------

variable "image_tag" {
  type        = string
  description = "Tag of the template images built by `make template-build TAG=...` (needed when launch_streaming_job is true)."
  default     = null
}

variable "launch_streaming_job" {
  type        = bool
  description = "Run the streaming Flex Template job. Needs the template built (make template-build) and image_tag set."
  default     = false
}

variable "streaming_job_name" {
  type        = string
  description = "Name of the streaming Dataflow job (the alert policies filter on it)."
  default     = "genai-streaming"
}

variable "streaming_max_workers" {
  type        = number
  description = "Autoscaling ceiling of the streaming job."
  default     = 10
}

variable "streaming_parameters" {
  type        = map(string)
  description = "Further template parameters of the streaming job (names of templates/streaming/metadata.json), merged over the ones this stack sets."
  default     = {}
}

# --- Alerting ----------------------------------------------------------------------------------

variable "notification_channels" {
  type        = list(string)
  description = "Cloud Monitoring notification channel ids that the alert policies notify."
  default     = []
}

variable "backlog_age_threshold_s" {
  type        = number
  description = "Alert when the oldest unacknowledged message on the events subscription is older than this."
  default     = 120
}

variable "freshness_slo_s" {
  type        = number
  description = "Freshness SLO threshold: an event is good when the metric row counting it is committed within this many seconds of its ingestion (seed design: 2 minutes). One of the thresholds the pipeline counts (freshness_events_within_<N>s): 60, 120 or 300."
  default     = 120

  validation {
    condition     = contains([60, 120, 300], var.freshness_slo_s)
    error_message = "freshness_slo_s must be 60, 120 or 300 (the thresholds the pipeline counts)."
  }
}

variable "freshness_slo_target" {
  type        = number
  description = "Share of events that must meet freshness_slo_s (seed design: 99%); its error budget is 1 - target."
  default     = 0.99

  validation {
    condition     = var.freshness_slo_target > 0 && var.freshness_slo_target < 1
    error_message = "freshness_slo_target must be between 0 and 1."
  }
}

variable "pipeline_lag_threshold_s" {
  type        = number
  description = "Alert when the streaming job's data watermark age or system lag exceeds this (a leading signal: freshness follows it)."
  default     = 120
}

variable "policy_flag_rate_threshold" {
  type        = number
  description = "Alert when one policy flag is on more than this share of requests over an hour."
  default     = 0.05
}

variable "policy_flag_baseline_ratio" {
  type        = number
  description = "Alert when one policy flag's rate over the last hour is more than this many times its rate over the 7 days before."
  default     = 3
}

variable "policy_flag_min_requests" {
  type        = number
  description = "The policy-flag alerts only judge an hour with at least this many requests (too few make rates noise)."
  default     = 1000
}

variable "dlp_retry_ratio_threshold" {
  type        = number
  description = "Alert when DLP calls retried (quota exhausted, unavailable, deadline) exceed this share of DLP requests over 10 minutes."
  default     = 0.1
}

variable "dead_letter_ratio_threshold" {
  type        = number
  description = "Alert when dead letters exceed this share of the events read over 10 minutes."
  default     = 0.01
}
