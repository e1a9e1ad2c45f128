"""A ``TestStream`` fed from this process: how the local sources (synthetic traffic, the local
Pub/Sub source) feed a local streaming run.

Why a ``TestStream``: on the DirectRunner a splittable DoFn either runs stage by stage
(FnApiRunner: nothing downstream runs until the source ends) or does not run at all in
streaming mode (BundleBasedDirectRunner, Beam 2.77). So a source's events are served to a
``TestStream`` by Beam's ``TestStreamServiceController`` on loopback (as Interactive Beam uses
it). The service reads a generator of ``TestStreamPayload.Event`` (a reader's
``read_multiple``): element batches, processing-time advances and watermark advances, so the
source decides what the runner's clock and watermark do. Each element event becomes one
bundle. The runner stops the pipeline when the generator ends (the watermark goes to +inf,
every window and buffer fires), and also when no event comes for 30 s: a reader must send
clock events at least that often.

The service is started when the run starts (``ServedStream.start``), not when the graph is
built: building a graph starts nothing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence

from apache_beam import coders
from apache_beam.portability.api import beam_runner_api_pb2 as api
from apache_beam.testing.test_stream import TestStream

__all__ = ["ServedStream", "clock_events", "element_events"]

_EVENT = api.TestStreamPayload.Event
_ELEMENT = api.TestStreamPayload.TimestampedElement

# The TestStream client's gRPC channel takes messages of up to 4 MiB: a batch of elements is
# sent in parts that stay well below it.
_MAX_MESSAGE_BYTES = 3 << 20


def element_events(elements: Sequence[tuple[bytes, int]]) -> Iterator:
    """Element events of ``(encoded element, timestamp µs)`` pairs, in consecutive parts of
    at most ``_MAX_MESSAGE_BYTES`` of payload (none for no elements)."""
    part: list = []
    size = 0
    for encoded, timestamp_us in elements:
        length = len(encoded) + 16
        if part and size + length > _MAX_MESSAGE_BYTES:
            yield _EVENT(element_event=_EVENT.AddElements(elements=part))
            part, size = [], 0
        part.append(_ELEMENT(encoded_element=encoded, timestamp=timestamp_us))
        size += length
    if part:
        yield _EVENT(element_event=_EVENT.AddElements(elements=part))


def clock_events(advance_us: int, watermark_us: int) -> tuple:
    """Advance the runner's processing time by ``advance_us`` and the watermark to
    ``watermark_us`` (µs since the epoch)."""
    return (
        _EVENT(processing_time_event=_EVENT.AdvanceProcessingTime(advance_duration=advance_us)),
        _EVENT(watermark_event=_EVENT.AdvanceWatermark(new_watermark=watermark_us)),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServedStream:
    """A ``TestStream`` of elements of ``element_type`` and the service that feeds it.

    ``transform()`` is the ``TestStream`` to apply; ``start(reader)`` creates and starts the
    service on ``reader`` (an object with ``read_multiple(specs)``, a generator of events);
    ``stop()`` stops it (idempotent); ``stop_later(delay_s)`` stops it from a thread of its
    own, for a reader ending its stream (stopping a gRPC server from inside one of its
    handlers would wait on itself).
    """

    def __init__(self, element_type: type):
        self._coder = coders.registry.get_coder(element_type)
        self.encode = self._coder.encode
        self.endpoint = f"localhost:{_free_port()}"
        self._service = None

    def transform(self) -> TestStream:
        return TestStream(coder=self._coder, endpoint=self.endpoint)

    @property
    def running(self) -> bool:
        """Whether the service is started (and not stopped)."""
        return self._service is not None

    def start(self, reader) -> None:
        from apache_beam.testing.test_stream_service import TestStreamServiceController

        service = TestStreamServiceController(reader, endpoint=self.endpoint)
        service.start()
        self._service = service

    def stop_later(self, delay_s: float) -> None:
        service = self._service
        if service is not None:
            threading.Timer(delay_s, service.stop).start()

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
