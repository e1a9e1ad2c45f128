# Cloud DLP (Sensitive Data Protection) templates for --redaction_engine dlp and hybrid: inspect
# for the info types the offline engine redacts and for those only DLP finds (names, street
# addresses), and replace every finding with [INFO_TYPE], the placeholder the offline engine
# writes, so metrics and classification do not depend on the engine that ran. (hybrid inspects
# the texts the offline engine found clean for names and addresses only, with an inline
# configuration; it uses this de-identify template for them too.)

locals {
  dlp_location = coalesce(var.dlp_location, var.region)
  dlp_parent   = "projects/${var.project_id}/locations/${local.dlp_location}"
  # transforms/pii/engine.py INFO_TYPES, then DLP_ONLY_INFO_TYPES (a test keeps them equal).
  dlp_info_types = [
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD_NUMBER",
    "US_SOCIAL_SECURITY_NUMBER",
    "IBAN_CODE",
    "IP_ADDRESS",
    "AWS_CREDENTIALS",
    "GCP_API_KEY",
    "JSON_WEB_TOKEN",
    "ENCRYPTION_KEY",
    "AUTH_TOKEN",
    "PERSON_NAME",
    "STREET_ADDRESS",
  ]
}

resource "google_data_loss_prevention_inspect_template" "pii" {
  parent       = local.dlp_parent
  template_id  = "${var.name_prefix}-pii-inspect"
  display_name = "GenAI gateway PII and secrets"
  description  = "Info types redacted from prompts and responses (transforms/pii/engine.py INFO_TYPES and DLP_ONLY_INFO_TYPES)."

  inspect_config {
    min_likelihood = var.dlp_min_likelihood
    # Findings must never carry the text they found.
    include_quote = false

    dynamic "info_types" {
      for_each = local.dlp_info_types
      content {
        name = info_types.value
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_data_loss_prevention_deidentify_template" "pii" {
  parent       = local.dlp_parent
  template_id  = "${var.name_prefix}-pii-deidentify"
  display_name = "GenAI gateway PII to [INFO_TYPE]"
  description  = "Replaces each finding with its info type, as the offline engine does."

  deidentify_config {
    info_type_transformations {
      transformations {
        dynamic "info_types" {
          for_each = local.dlp_info_types
          content {
            name = info_types.value
          }
        }

        primitive_transformation {
          replace_with_info_type_config = true
        }
      }
    }
  }

  depends_on = [google_project_service.apis]
}
