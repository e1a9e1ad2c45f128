# Raw archive (redacted events, Avro, raw/event_date=.../region=.../), dead letters
# (restricted) and the templates/staging bucket. Retention is enforced here by lifecycle rules;
# versioning stays off and soft delete is disabled, so a deleted object is really gone after
# the retention (a noncurrent or soft-deleted copy would keep raw prompts past 30 days).

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

# CMEK: the Cloud Storage service agent encrypts with the key.
resource "google_kms_crypto_key_iam_member" "storage_cmek" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

locals {
  # The two data buckets: the same protections, each its own retention. The dead-letter
  # bucket is restricted: only the worker writes (iam.tf) and only var.dead_letter_readers read.
  data_buckets = {
    raw         = { retention_days = var.raw_retention_days }
    dead_letter = { retention_days = var.dead_letter_retention_days }
  }
}

resource "google_storage_bucket" "data" {
  for_each = local.data_buckets

  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-${replace(each.key, "_", "-")}"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = merge(var.labels, { data_class = "restricted" })

  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      age = each.value.retention_days
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_cmek]
}

resource "google_storage_bucket_iam_member" "dead_letter_readers" {
  for_each = toset(var.dead_letter_readers)

  bucket = google_storage_bucket.data["dead_letter"].name
  role   = "roles/storage.objectViewer"
  member = each.key
}

# Template specs (templates/<pipeline>.json) plus Dataflow's staging/ and temp/ files.
resource "google_storage_bucket" "templates" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-templates"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["temp/", "staging/"]
    }
    action {
      type = "Delete"
    }
  }
}
