"""Pub/Sub I/O: the gateway-event source, the dead-letter topic, and paced publishing.

Message contract (what the gateway, and ``pipelines.loadgen --pubsub_topic``, publish): the body
is one JSON gateway event (``gateway_event.avsc``); attribute ``event_id`` is its event id (when
the publisher could read one) and attribute ``event_time`` its event time in RFC 3339 UTC (the
publisher's clock when the body has no valid event time).

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

import concurrent.futures
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any, NamedTuple

import apache_beam as beam

from pipelines.io.batches import BatchSink, SinkRetry, WriteInBatches, record_json
from transforms.elements import DeadLetter

__all__ = [
    "EVENT_ID_ATTRIBUTE",
    "EVENT_TIME_ATTRIBUTE",
    "BurstProfile",
    "PublishDeadLetters",
    "PublishStats",
    "ReadGatewayEvents",
    "id_label_for",
    "is_subscription_path",
    "is_topic_path",
    "message_attributes",
    "publish_messages",
    "publish_paced",
    "publisher_client",
]

_LOGGER = logging.getLogger(__name__)

EVENT_ID_ATTRIBUTE = "event_id"
EVENT_TIME_ATTRIBUTE = "event_time"
PUBLISH_TIMEOUT_S = 60.0


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


class _PayloadFn(beam.DoFn):
    """Keeps the body; counts messages whose publisher set no event-time attribute."""

    def __init__(self):
        self._without_time = beam.metrics.Metrics.counter(__name__, "messages_without_event_time")

    def process(self, message):
        if EVENT_TIME_ATTRIBUTE not in (message.attributes or {}):
            self._without_time.inc()
        yield message.data


class ReadGatewayEvents(beam.PTransform):
    """Reads gateway events from a Pub/Sub subscription. Unbounded.

    Output: PCollection[bytes], the message bodies, timestamped with the ``event_time``
    attribute (see the module docstring for event time and redeliveries). Delivery: at least
    once; messages are acknowledged once read (Dataflow: once durably committed).

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
            | "Payloads" >> beam.ParDo(_PayloadFn())
        )


# --- publishing ----------------------------------------------------------------------------


@cache
def publisher_client():
    """One publisher per process (thread-safe; honours PUBSUB_EMULATOR_HOST), batching up to
    500 messages or 50 ms."""
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.05)
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


def publish_messages(
    publisher, topic: str, payloads: Iterable[bytes], sent_at: dt.datetime | None = None
) -> list[concurrent.futures.Future]:
    """Publishes each payload with its attributes; returns the publish futures."""
    return [
        publisher.publish(
            topic, payload, **message_attributes(payload, sent_at or dt.datetime.now(dt.UTC))
        )
        for payload in payloads
    ]


class BurstProfile(NamedTuple):
    """``rate`` messages/s, times ``burst_factor`` for ``burst_s`` seconds every
    ``burst_every_s`` seconds (the first burst starts at ``burst_every_s``)."""

    rate: float
    burst_factor: float = 1.0
    burst_every_s: float = 60.0
    burst_s: float = 10.0

    def rate_at(self, elapsed_s: float) -> float:
        """Messages/s offered ``elapsed_s`` seconds after the start."""
        if self.burst_factor == 1 or self.burst_every_s <= 0 or elapsed_s < self.burst_every_s:
            return self.rate
        in_burst = elapsed_s % self.burst_every_s < self.burst_s
        return self.rate * self.burst_factor if in_burst else self.rate

    def problems(self) -> list[str]:
        out = []
        if self.rate <= 0 or self.burst_factor < 1:
            out.append("need --rate > 0 and --burst_factor >= 1")
        if self.burst_every_s <= 0 or not 0 < self.burst_s <= self.burst_every_s:
            out.append("need --burst_every_s > 0 and 0 < --burst_s <= --burst_every_s")
        return out


class PublishStats(NamedTuple):
    published: int
    elapsed_s: float
    peak_rate: float


def publish_paced(
    publisher,
    topic: str,
    make_batch: Callable[[int, dt.datetime], Sequence[bytes]],
    profile: BurstProfile,
    duration_s: float,
    *,
    tick_s: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> PublishStats:
    """Publishes ``make_batch(n, now)`` every ``tick_s`` for ``duration_s`` seconds, ``n``
    following ``profile``; waits for every publish to be acknowledged (raises if one failed)."""
    started = monotonic()
    futures: list[concurrent.futures.Future] = []
    owed, peak = 0.0, 0.0
    for tick in range(max(1, math.ceil(duration_s / tick_s))):
        delay = started + tick * tick_s - monotonic()
        if delay > 0:
            sleep(delay)
        rate = profile.rate_at(tick * tick_s)
        peak = max(peak, rate)
        owed += rate * tick_s
        n, owed = int(owed), owed - int(owed)
        now = dt.datetime.now(dt.UTC)
        futures += publish_messages(publisher, topic, make_batch(n, now), sent_at=now)
    for future in futures:
        future.result(timeout=PUBLISH_TIMEOUT_S)
    return PublishStats(len(futures), monotonic() - started, peak)


# --- the dead-letter topic -----------------------------------------------------------------


class _DeadLetterTopicSink(BatchSink):
    name = "pubsub"
    step = "publish_dead_letters"

    def __init__(self, topic: str):
        if not is_topic_path(topic):
            raise ValueError(f"not a topic path: {topic!r}")
        self._topic = topic

    def setup(self) -> None:
        self._publisher = publisher_client()

    def write(self, batch: Sequence[DeadLetter]) -> None:
        futures = [
            self._publisher.publish(
                self._topic,
                record_json(letter).encode("utf-8"),
                dead_letter_id=letter.dead_letter_id,
                reason=letter.reason,
                step=letter.step,
            )
            for letter in batch
        ]
        for future in futures:
            future.result(timeout=PUBLISH_TIMEOUT_S)

    def is_transient(self, error: Exception) -> bool:
        from google.api_core import exceptions as api_exceptions

        return isinstance(
            error,
            api_exceptions.GoogleAPICallError
            | api_exceptions.RetryError
            | concurrent.futures.TimeoutError
            | TimeoutError
            | ConnectionError,
        )


class PublishDeadLetters(beam.PTransform):
    """Publishes ``DeadLetter`` records to a Pub/Sub topic (JSON body; attributes
    ``dead_letter_id``, ``reason``, ``step``, so subscribers can filter and dedupe).

    Input: PCollection[DeadLetter]. Output: an empty PCollection. After ``retry`` the bundle
    fails (there is nowhere further to send a dead letter) and the runner retries it; a
    redelivered copy has the same ``dead_letter_id``.
    """

    def __init__(
        self,
        topic: str,
        *,
        retry: SinkRetry = SinkRetry(),  # noqa: B008 - immutable NamedTuple
        flush_s: int = 10,
        max_batch_rows: int = 500,
    ):
        super().__init__()
        self._write = WriteInBatches(
            _DeadLetterTopicSink(topic),
            id_field="dead_letter_id",
            retry=retry,
            flush_s=flush_s,
            max_batch_rows=max_batch_rows,
            dead_letter_failures=False,
        )

    def expand(self, pcoll):
        return pcoll | "PublishBatches" >> self._write
