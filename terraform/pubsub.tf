# Gateway events in; undeliverable messages out to a dead-letter topic, kept on a subscription of
# their own. Malformed events are not undeliverable: the pipeline acknowledges them and writes
# them to its own dead-letter output (the dead-letter bucket) with their reason.

resource "google_pubsub_topic" "events" {
  project = var.project_id
  name    = "${var.name_prefix}-events"
  labels  = var.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}-events-dead-letter"
  labels  = var.labels

  depends_on = [google_project_service.apis]
}

# Read by the streaming job (Dataflow acknowledges a message once its bundle is committed).
resource "google_pubsub_subscription" "events" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-events-dataflow"
  topic                      = google_pubsub_topic.events.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  labels                     = var.labels

  # A streaming job's subscription must never expire while the job is stopped.
  expiration_policy {
    ttl = ""
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

# Messages published to a topic without subscriptions are lost: this one keeps dead letters
# for inspection or replay (re-publish to the events topic).
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-events-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent forwards dead letters: it must publish to the dead-letter topic and
# subscribe to (acknowledge on) the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "events_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.events.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
