terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.40, < 8.0"
    }
    # google_dataflow_flex_template_job is a beta resource; its additional_pipeline_options
    # (the harness threads) need a 2025 release, hence the lower bound.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.40, < 8.0"
    }
  }
}
