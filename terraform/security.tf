# The pseudonym key and data-access audit logs.

# HMAC key of the user-id pseudonyms. Terraform creates the secret, never its value: add a
# version out of band (README), so the key is not in the Terraform state.
resource "google_secret_manager_secret" "pseudonym_key" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-pseudonym-key"
  labels    = var.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# Who read or wrote objects in the raw and dead-letter buckets, who queried or changed the
# datasets (the dead-letter table included), and who pulled from the subscriptions (the
# delivery-failure one holds raw messages). Audit configs are per service and project: they
# cover every bucket, dataset and subscription of the project. Authoritative for these services
# (replaces their existing audit config).
locals {
  data_access_audited_services = [
    "storage.googleapis.com",
    "bigquery.googleapis.com",
    "pubsub.googleapis.com",
  ]
}

resource "google_project_iam_audit_config" "data_access" {
  for_each = toset(local.data_access_audited_services)

  project = var.project_id
  service = each.key

  audit_log_config {
    log_type = "DATA_READ"
  }

  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
