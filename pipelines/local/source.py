"""The synthetic source of local streaming runs (``--source synthetic``): gateway traffic at a
fixed rate, served to a ``TestStream`` by an in-process event service, paced in real time.

Why not ``PeriodicImpulse``: on the DirectRunner a splittable DoFn either runs stage by stage
(FnApiRunner: nothing downstream runs until the source ends) or does not run at all in
streaming mode (BundleBasedDirectRunner, Beam 2.77). So the events are served to a ``TestStream``
by Beam's ``TestStreamServiceController`` on loopback (as Interactive Beam uses it), with the
watermark following the clock. The service is created and started when the run starts
(``SyntheticSource.start``, called by ``pipelines.local.run``), not when the graph is built, and
stopped after the run; building a graph starts nothing.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from apache_beam import coders
from apache_beam.testing.test_stream import TestStream

from pipelines.local.loadgen import EventGenerator, LoadProfile
from transforms.elements import Message

__all__ = ["SyntheticSource"]


# The TestStream client's gRPC channel takes messages of up to 4 MiB: a tick's events are sent
# in parts that stay well below it.
_MAX_MESSAGE_BYTES = 3 << 20


def _message_parts(elements: list) -> Iterator[list]:
    """``elements`` cut into consecutive parts of at most ``_MAX_MESSAGE_BYTES`` of payload."""
    part: list = []
    size = 0
    for element in elements:
        length = len(element.encoded_element) + 16
        if part and size + length > _MAX_MESSAGE_BYTES:
            yield part
            part, size = [], 0
        part.append(element)
        size += length
    if part:
        yield part


class _PacedEvents:
    """Feeds the TestStream service: one batch of events per tick, in real time.

    After each batch it advances processing time by the wall time that passed and the
    watermark to the tick's time, so windows, triggers and timers behave as with a live source
    whose watermark follows the clock (as Pub/Sub's does).
    """

    def __init__(
        self,
        generator: EventGenerator,
        rate: float,
        duration_s: float,
        tick_s: float,
        run_token: str,
    ):
        self._generator = generator
        self._rate, self._duration_s, self._tick_s = rate, duration_s, tick_s
        self._run_token = run_token
        self.on_done = lambda: None

    def read_multiple(self, unused_specs) -> Iterator:
        from apache_beam.portability.api import beam_runner_api_pb2 as api

        event = api.TestStreamPayload.Event
        encode = coders.registry.get_coder(Message).encode
        sent = 0
        ticks = max(1, round(self._duration_s / self._tick_s))
        started = last = time.monotonic()
        carry = 0.0
        for tick in range(ticks):
            delay = started + tick * self._tick_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            carry += self._rate * self._tick_s
            n, carry = int(carry), carry - int(carry)
            now = dt.datetime.now(dt.UTC)
            now_us = int(now.timestamp() * 1_000_000)
            elements = []
            for generated in self._generator.batch(n, now):
                message = Message(generated.payload, f"synthetic:{self._run_token}:{sent}", now_us)
                sent += 1
                elements.append(
                    api.TestStreamPayload.TimestampedElement(
                        encoded_element=encode(message), timestamp=now_us
                    )
                )
            for part in _message_parts(elements):
                yield event(element_event=event.AddElements(elements=part))
            moment = time.monotonic()
            advance_us = int((moment - last) * 1_000_000)
            last = moment
            yield event(
                processing_time_event=event.AdvanceProcessingTime(advance_duration=advance_us)
            )
            yield event(watermark_event=event.AdvanceWatermark(new_watermark=now_us))
        self.on_done()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SyntheticSource:
    """Synthetic gateway events (JSON bytes) at ``rate`` events/s for ``duration_s`` seconds of
    wall-clock time, then the stream ends. Local runners only (``BundleBasedDirectRunner``).

    ``transform()`` is the ``TestStream`` to apply; ``start()`` creates and starts its event
    service (the generator's text pool is built then too), ``stop()`` stops it. The service
    also stops itself a few seconds after the last event.
    """

    def __init__(
        self,
        rate: float,
        duration_s: float,
        seed: int = 7,
        profile: LoadProfile = LoadProfile(),  # noqa: B008 - immutable NamedTuple
        tick_s: float = 0.1,
    ):
        if rate <= 0 or duration_s <= 0 or tick_s <= 0:
            raise ValueError("rate, duration_s and tick_s must be > 0")
        self._rate, self._duration_s, self._seed = rate, duration_s, seed
        self._profile, self._tick_s = profile, tick_s
        self.endpoint = f"localhost:{_free_port()}"
        self._service = None

    def transform(self) -> TestStream:
        """The source: ``Message`` elements (body, ``synthetic:<run>:<n>`` identity, emission
        time as ingestion time), timestamped with their emission time."""
        return TestStream(coder=coders.registry.get_coder(Message), endpoint=self.endpoint)

    def start(self) -> None:
        from apache_beam.testing.test_stream_service import TestStreamServiceController

        paced = _PacedEvents(
            EventGenerator(self._seed, self._profile),
            self._rate,
            self._duration_s,
            self._tick_s,
            run_token=uuid.uuid4().hex[:12],
        )
        service = TestStreamServiceController(paced, endpoint=self.endpoint)
        # Stop the service shortly after the last event, from a thread of its own (stopping
        # a gRPC server from inside one of its handlers would wait on itself).
        paced.on_done = lambda: threading.Timer(5.0, service.stop).start()
        service.start()
        self._service = service

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
