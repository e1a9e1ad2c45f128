# Gateway events in, checked against the contract's Pub/Sub schema; undeliverable messages out
# to a delivery-failure topic, kept a few days on a restricted subscription. Malformed events are
# not undeliverable: the pipeline acknowledges them and writes them to its own dead letters (the
# dead-letter bucket, the BigQuery dead_letters table and the pipeline's dead-letter topic),
# redacted, with their reason.

# The registry gate: the contract's required fields as the Pub/Sub schema of the events topic
# (schemas/avro/gateway_event.avsc -> terraform/schemas/gateway_event.pubsub.avsc, `make
# schemas`; a test keeps them equal). JSON encoding: a publish missing a required field or with
# a wrong JSON type is refused at the topic. The optional fields are not in it (Avro's JSON
# encoding would require them wrapped as {"string": ...}); the pipeline validates them.
# A change of the definition commits a new schema revision (docs/data-contract.md).
resource "google_pubsub_schema" "gateway_event" {
  project    = var.project_id
  name       = "${var.name_prefix}-gateway-event"
  type       = "AVRO"
  definition = file("${path.module}/schemas/gateway_event.pubsub.avsc")

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "events" {
  project = var.project_id
  name    = "${var.name_prefix}-events"
  labels  = var.labels

  dynamic "schema_settings" {
    for_each = var.enforce_event_schema ? [google_pubsub_schema.gateway_event.id] : []
    content {
      schema   = schema_settings.value
      encoding = "JSON"
    }
  }

  depends_on = [google_project_service.apis]
}

# Delivery failures: messages Pub/Sub could not deliver to the job. They are raw gateway events
# (unredacted), so the topic keeps none itself and its one subscription is restricted.
resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}-events-dead-letter"
  labels  = merge(var.labels, { data_class = "restricted" })

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

# Messages published to a topic without subscriptions are lost: this one keeps delivery
# failures for inspection or re-publishing, at most delivery_failure_retention_days, readable
# only by delivery_failure_reader_group (Data Access audit logs record who read them:
# security.tf).
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-events-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "${var.delivery_failure_retention_days * 86400}s"
  labels                     = merge(var.labels, { data_class = "restricted" })

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription_iam_member" "delivery_failure_readers" {
  count = var.delivery_failure_reader_group == null ? 0 : 1

  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter.name
  role         = "roles/pubsub.subscriber"
  member       = "group:${var.delivery_failure_reader_group}"
}

# The pipeline's own dead letters (--dead_letter_topic): redacted or omitted payloads with their
# reason, one JSON message per record (attributes dead_letter_id, reason, step), for alerting
# and for teams that react to rejections. The worker publishes; a subscription keeps them for
# the dead-letter readers as long as the dead-letter bucket does at most (Pub/Sub keeps 7 days).
resource "google_pubsub_topic" "pipeline_dead_letters" {
  project = var.project_id
  name    = "${var.name_prefix}-pipeline-dead-letters"
  labels  = merge(var.labels, { data_class = "restricted" })

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "pipeline_dead_letters" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-pipeline-dead-letters"
  topic                      = google_pubsub_topic.pipeline_dead_letters.id
  ack_deadline_seconds       = 60
  message_retention_duration = "${min(var.dead_letter_retention_days, 7) * 86400}s"
  labels                     = merge(var.labels, { data_class = "restricted" })

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription_iam_member" "pipeline_dead_letter_readers" {
  for_each = toset(var.dead_letter_readers)

  project      = var.project_id
  subscription = google_pubsub_subscription.pipeline_dead_letters.name
  role         = "roles/pubsub.subscriber"
  member       = each.key
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
