# Audit store: Cloud SQL for PostgreSQL 15, private IP only, daily backups with point-in-time
# recovery, protected from deletion. The worker logs in with IAM database authentication (no
# password in Terraform state). The audit_log table itself is created by the pipeline's sink.

resource "google_compute_global_address" "private_services" {
  count = var.create_private_service_access ? 1 : 0

  project       = var.project_id
  name          = "${var.name_prefix}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.private_service_prefix_length
  network       = local.network_id

  depends_on = [google_project_service.apis]
}

resource "google_service_networking_connection" "private_services" {
  count = var.create_private_service_access ? 1 : 0

  network                 = local.network_id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services[0].name]
}

resource "google_sql_database_instance" "audit" {
  project             = var.project_id
  name                = "${var.name_prefix}-audit"
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = true

  settings {
    tier                        = var.audit_db_tier
    availability_type           = var.audit_db_availability_type
    disk_autoresize             = true
    deletion_protection_enabled = true
    user_labels                 = var.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = local.network_id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = var.audit_db_backup_count
        retention_unit   = "COUNT"
      }
    }

    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "audit" {
  project  = var.project_id
  name     = "audit"
  instance = google_sql_database_instance.audit.name
}

# IAM database user of the worker service account (its email without .gserviceaccount.com).
resource "google_sql_user" "worker" {
  project  = var.project_id
  name     = trimsuffix(google_service_account.worker.email, ".gserviceaccount.com")
  instance = google_sql_database_instance.audit.name
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}
