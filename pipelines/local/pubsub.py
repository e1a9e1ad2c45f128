"""The Pub/Sub source of local streaming runs: ``LocalPubsubSource``, at least once.

What ``python -m pipelines.streaming --source pubsub`` reads through on a local run with the
embedded sinks (``pipelines.local.run`` picks it; on Dataflow ``ReadGatewayEvents`` reads, and
nothing on that path imports this module). Beam's own DirectRunner reader pulls 10 messages at
a time on the runner's one executor thread (about 48 events/s end to end here) and acknowledges
each message as soon as it has read it, so a local run killed mid-stream loses what it had read
and not yet written. This source:

* **Reads** with the client's streaming pull (``SubscriberClient.subscribe``) and flow
  control: at most ``max_outstanding`` messages (and ``max_outstanding_mb``) read and not yet
  acknowledged; the client stops pulling at that bound and extends the leases of what it holds,
  ``lease_extension_s`` at a time (so after a crash Pub/Sub delivers a message again within
  about that long) for up to ``max_lease_s`` (then Pub/Sub delivers it again anyway).
* **Feeds** a ``TestStream`` served from this process (``pipelines.local.served``), a batch of
  messages per tick: ``Message(data, "pubsub:<message id>", publish time µs)`` exactly as
  ``pipelines.io.sources.pubsub.message_of`` makes them, timestamped with the ``event_time``
  attribute as ``ReadGatewayEvents`` does (RFC 3339, or integer milliseconds; a message
  without a valid one gets its publish time, and is counted). The watermark follows the
  clock, as with the DirectRunner's reader.
* **Acknowledges** a message only once its outputs are committed: the embedded sinks tell
  (``pipelines.io.sinks.commits``) and an ``AckLedger`` (``pipelines.local.acks``) decides.
  A redelivery of a message in flight is held and acknowledged with it; see the ledger for
  the rules. Delivery is therefore at least once: after a crash Pub/Sub delivers again what
  was not acknowledged, and the sinks' idempotent writes and the core's dedupe absorb it
  (``docs/reliability.md``).
* **Drains** on request (``drain``, what the first Ctrl-C does): it stops taking messages
  (new deliveries are held, and given back by ``stop``) and ends the stream once the ones it
  took are emitted, so the runner fires every window and flushes every sink, and every message
  read is acknowledged before the run ends. ``stop`` gives back (nacks) whatever is still
  unacknowledged, so the next run gets it at once.
* **Fails the run** when the streaming pull stops for good (a deleted subscription, say),
  rather than leaving it idle: the TestStream service's stream raises, and the runner stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from apache_beam.testing.test_stream import TestStream

from pipelines.io.sinks.commits import listening
from pipelines.io.sources.pubsub import EVENT_TIME_ATTRIBUTE, message_of
from pipelines.local.acks import AckLedger, AckStats
from pipelines.local.served import ServedStream, clock_events, element_events
from transforms.elements import Message, event_micros

__all__ = ["LocalPubsubSource", "event_time_us"]

_LOGGER = logging.getLogger(__name__)

# Most messages one tick emits (in element events of at most 3 MiB, each one bundle): a
# backlog is worked off in batches of this size.
_MAX_BATCH = 5_000
_STOP_TIMEOUT_S = 30.0


def event_time_us(attributes: Any, fallback_us: int) -> tuple[int, bool]:
    """The element timestamp (µs) of a message with ``attributes``: its ``event_time``
    attribute, RFC 3339 with an offset or integer milliseconds since the epoch (what Beam's
    ``timestamp_attribute`` accepts), and whether it had a valid one; ``fallback_us`` (its
    publish time) when it had not."""
    value = attributes.get(EVENT_TIME_ATTRIBUTE) if attributes else None
    if value:
        if value.isdigit():
            return int(value) * 1000, True
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return event_micros(moment), True
    return fallback_us, False


class _PulledMessages:
    """The TestStream service's reader: what the subscriber's callback put in ``inbox``, a
    batch every ``tick_s`` (the runner's cost is per bundle, so batches are worth waiting a
    tick for), each followed by the clock (processing time and watermark: now). Raises once
    ``failure`` holds an error (the streaming pull stopped): the runner then fails the run."""

    def __init__(
        self,
        inbox: queue.SimpleQueue,
        encode,
        tick_s: float,
        draining: threading.Event,
        failure: list[BaseException] | None = None,
    ):
        self._inbox = inbox
        self._encode = encode
        self._tick_s = tick_s
        self._draining = draining
        self._failure = failure if failure is not None else []

    def _take(self) -> list:
        batch = []
        inbox = self._inbox
        while len(batch) < _MAX_BATCH:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def read_multiple(self, unused_specs) -> Iterator:
        encode = self._encode
        last = time.monotonic()
        while True:
            time.sleep(max(0.0, last + self._tick_s - time.monotonic()))
            if self._failure:
                raise RuntimeError("the Pub/Sub streaming pull stopped") from self._failure[0]
            draining = self._draining.is_set()  # before taking: nothing is added after it
            batch = self._take()
            yield from element_events([(encode(message), ts) for message, ts in batch])
            moment = time.monotonic()
            advance_us = int((moment - last) * 1_000_000)
            last = moment
            yield from clock_events(advance_us, event_micros(dt.datetime.now(dt.UTC)))
            if draining and not batch:
                return  # the stream ends: the runner fires every window and flushes the sinks


def _inline_scheduler():
    """A subscriber scheduler that runs the callback on the client's own thread instead of a
    thread pool: the callback only files the message (no I/O, never blocks), and a pool task
    per message cost more than the callback (a sixth of a profile at 1,000 messages/s)."""
    from google.cloud.pubsub_v1.subscriber.scheduler import Scheduler

    class _Inline(Scheduler):
        def __init__(self):
            self._queue = queue.Queue()

        @property
        def queue(self):
            return self._queue

        def schedule(self, callback, *args, **kwargs) -> None:
            callback(*args, **kwargs)

        def shutdown(self, await_msg_callbacks: bool = False) -> list:
            return []  # nothing is ever waiting to run

    return _Inline()


class LocalPubsubSource:
    """Gateway events from a Pub/Sub subscription, for a local streaming run; unbounded.

    ``transform()`` is the ``TestStream`` to apply (output: ``Message`` elements, see the module
    docstring); ``start()`` installs the commit listener, starts the service and the streaming
    pull; ``drain()`` ends the stream after what was read; ``stop()`` stops pulling, gives
    back (nacks) every message not yet acknowledged, and stops the service; ``report()`` is a
    line for the run summary.

    Args:
        subscription: ``projects/<project>/subscriptions/<name>``.
        max_outstanding: most messages read and not yet acknowledged (flow control).
        max_outstanding_mb: most bytes of such messages, in MiB.
        max_lease_s: how long the client extends a message's lease before letting Pub/Sub
            deliver it again.
        lease_extension_s: how far each lease extension reaches (10 to 600; the client's
            minimum by default, so that a restart after a crash gets its messages back soon).
        tick_s: how often a batch of what was read is emitted and the clock advances.
    """

    def __init__(
        self,
        subscription: str,
        *,
        max_outstanding: int = 100_000,
        max_outstanding_mb: int = 1024,
        max_lease_s: float = 3600.0,
        lease_extension_s: int = 10,
        tick_s: float = 0.5,
    ):
        if min(max_outstanding, max_outstanding_mb) < 1 or min(max_lease_s, tick_s) <= 0:
            raise ValueError(
                "need max_outstanding, max_outstanding_mb >= 1; max_lease_s, tick_s > 0"
            )
        if not 10 <= lease_extension_s <= 600:
            raise ValueError("lease_extension_s must be 10 to 600 (whole seconds)")
        self._subscription = subscription
        self._max_outstanding = max_outstanding
        self._max_bytes = max_outstanding_mb << 20
        self._max_lease_s = max_lease_s
        self._lease_extension_s = lease_extension_s
        self._tick_s = tick_s
        self._served = ServedStream(Message)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._draining = threading.Event()
        self._ledger = AckLedger()
        self._without_event_time = 0
        self._failure: list[BaseException] = []
        self._count_lock = threading.Lock()
        self._exits = ExitStack()
        self._pull = None

    def transform(self) -> TestStream:
        return self._served.transform()

    @property
    def running(self) -> bool:
        return self._served.running

    def _on_message(self, message) -> None:
        # The subscriber's callback, on its threads.
        if not self._ledger.received(f"pubsub:{message.message_id}", message):
            return
        element = message_of(message, dt.datetime.now(dt.UTC))
        timestamp_us, valid = event_time_us(message.attributes, element.ingested_us)
        if not valid:
            with self._count_lock:
                self._without_event_time += 1
        self._inbox.put((element, timestamp_us))

    def start(self) -> None:
        from google.cloud import pubsub_v1

        self._exits.enter_context(listening(self._ledger.committed))
        self._served.start(
            _PulledMessages(
                self._inbox, self._served.encode, self._tick_s, self._draining, self._failure
            )
        )
        client = pubsub_v1.SubscriberClient()
        self._exits.callback(client.close)
        flow = pubsub_v1.types.FlowControl(
            max_messages=self._max_outstanding,
            max_bytes=self._max_bytes,
            max_lease_duration=self._max_lease_s,
            max_duration_per_lease_extension=self._lease_extension_s,  # an int, in the request
        )
        self._pull = client.subscribe(
            self._subscription, self._on_message, flow_control=flow, scheduler=_inline_scheduler()
        )
        self._pull.add_done_callback(self._on_pull_done)
        _LOGGER.info(
            "reading %s by streaming pull: at most %d messages unacknowledged, acknowledged "
            "once their outputs are committed",
            self._subscription,
            self._max_outstanding,
        )

    def _on_pull_done(self, future) -> None:
        # The client gave up (an error it does not retry, such as a missing subscription).
        error = None if future.cancelled() else future.exception()
        if error is not None and not self._draining.is_set():
            _LOGGER.error(
                "the streaming pull of %s stopped: %s: %s",
                self._subscription,
                type(error).__name__,
                error,
            )
            self._failure.append(error)

    def drain(self) -> None:
        """Stops taking messages; the stream ends once those taken are emitted."""
        self._ledger.close()  # first: nothing reaches the inbox after the reader's last look
        self._draining.set()

    def stop(self) -> None:
        self.drain()
        pull, self._pull = self._pull, None
        if pull is not None:
            released = self._ledger.release()
            if released:
                _LOGGER.info("gave back %d messages whose outputs were not committed", released)
            pull.cancel()
            try:
                pull.result(timeout=_STOP_TIMEOUT_S)
            except Exception as error:
                _LOGGER.warning("streaming pull ended with %s", type(error).__name__)
        self._exits.close()
        self._served.stop()

    def stats(self) -> AckStats:
        return self._ledger.stats()

    def report(self) -> str:
        s = self._ledger.stats()
        return (
            f"pubsub: {s.messages:,} messages read, {s.acknowledged:,} acknowledged once their "
            f"outputs were committed, {s.released + s.in_flight:,} given back uncommitted "
            f"(delivered again to the next run); "
            f"{s.redelivered + s.redelivered_after_ack:,} redeliveries settled by message id; "
            f"{self._without_event_time:,} without a valid event_time attribute"
        )
