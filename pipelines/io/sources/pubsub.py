"""The gateway-event source on Pub/Sub: ``ReadGatewayEvents``.

Message contract (what the gateway, and ``pipelines.local.loadgen --pubsub_topic``, publish):
the body is one JSON gateway event (``gateway_event.avsc``); attribute ``event_id`` is its event
id (when the publisher could read one) and attribute ``event_time`` its event time in RFC 3339
UTC (the publisher's clock when the body has no valid event time).

Event time: ``ReadGatewayEvents`` reads with ``timestamp_attribute="event_time"``, so the runner
stamps each message with the publisher's attribute and, on Dataflow, estimates the source
watermark from it (a message without the attribute gets its publish time). Parsing then re-stamps
each event with the ``event_time`` of its body, which the publisher keeps equal to the attribute,
so windows always use the body's event time. On the DirectRunner the watermark is the wall clock
whatever the attribute says (a runner limitation), so events older than the window are late.

Redeliveries: on Dataflow, ``id_label="event_id"`` makes the service drop redelivered and
republished copies of an event id (within its dedupe window). The DirectRunner rejects
``id_label`` (``NotImplementedError``), so ``id_label_for(runner)`` sets it for Dataflow only;
``DeduplicateEvents`` in the core dedupes by event id on every runner.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import apache_beam as beam

from transforms.elements import Message, event_micros

__all__ = [
    "EVENT_ID_ATTRIBUTE",
    "EVENT_TIME_ATTRIBUTE",
    "ReadGatewayEvents",
    "id_label_for",
    "is_subscription_path",
    "is_topic_path",
    "message_attributes",
    "message_of",
]

EVENT_ID_ATTRIBUTE = "event_id"
EVENT_TIME_ATTRIBUTE = "event_time"


def is_subscription_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == "projects" and parts[2] == "subscriptions" and all(parts)


def is_topic_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == "projects" and parts[2] == "topics" and all(parts)


def id_label_for(runner: Any) -> str | None:
    """``event_id`` for the Dataflow runner (which dedupes on it), else None."""
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else ""
    return EVENT_ID_ATTRIBUTE if name.lower().removesuffix("runner") == "dataflow" else None


# --- the source ----------------------------------------------------------------------------


def message_of(pubsub_message, received_at: dt.datetime) -> Message:
    """The ``Message`` of a ``PubsubMessage``: its body, ``pubsub:<message id>`` as identity
    (the same for every redelivery), and its publish time as ingestion time (``received_at``
    when the runner gave none)."""
    published = pubsub_message.publish_time or received_at
    return Message(
        pubsub_message.data or b"",
        f"pubsub:{pubsub_message.message_id or ''}",
        event_micros(published.astimezone(dt.UTC)),
    )


class _MessageFn(beam.DoFn):
    """Keeps the body, identity and publish time; counts messages whose publisher set no
    event-time attribute."""

    def __init__(self):
        self._without_time = beam.metrics.Metrics.counter(__name__, "messages_without_event_time")

    def process(self, message):
        if EVENT_TIME_ATTRIBUTE not in (message.attributes or {}):
            self._without_time.inc()
        yield message_of(message, dt.datetime.now(dt.UTC))


class ReadGatewayEvents(beam.PTransform):
    """Reads gateway events from a Pub/Sub subscription. Unbounded.

    Output: PCollection[Message]: the message bodies with their identity and publish time
    (``message_of``), timestamped with the ``event_time`` attribute (see the module docstring
    for event time and redeliveries). Delivery: at least once; on Dataflow a message is
    acknowledged once durably committed.

    Args:
        subscription: ``projects/<project>/subscriptions/<name>``.
        id_label: attribute Dataflow dedupes on (``id_label_for(runner)``), None elsewhere.
    """

    def __init__(self, subscription: str, id_label: str | None = None):
        super().__init__()
        if not is_subscription_path(subscription):
            raise ValueError(f"not a subscription path: {subscription!r}")
        self._subscription = subscription
        self._id_label = id_label

    def expand(self, begin):
        return (
            begin
            | "ReadPubSub"
            >> beam.io.ReadFromPubSub(
                subscription=self._subscription,
                with_attributes=True,
                timestamp_attribute=EVENT_TIME_ATTRIBUTE,
                id_label=self._id_label,
            )
            | "Messages" >> beam.ParDo(_MessageFn()).with_output_types(Message)
        )


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _valid_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def message_attributes(payload: bytes, sent_at: dt.datetime) -> dict[str, str]:
    """The attributes a publisher sets for ``payload``: ``event_id`` when the body has a string
    one, ``event_time`` from the body when it is a valid RFC 3339 time with an offset, else
    ``sent_at`` (an unparseable attribute would stop the Pub/Sub read)."""
    try:
        document = json.loads(payload)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {}
    attributes = {}
    if isinstance(document.get("event_id"), str) and document["event_id"]:
        attributes[EVENT_ID_ATTRIBUTE] = document["event_id"]
    event_time = _valid_time(document.get("event_time")) or sent_at
    attributes[EVENT_TIME_ATTRIBUTE] = _rfc3339(event_time)
    return attributes
