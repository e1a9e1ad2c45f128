"""The synthetic source of local streaming runs (``--source synthetic``): gateway traffic at a
rate with optional bursts (the load generator's ``BurstProfile``), served to a ``TestStream``
by an in-process event service (``pipelines.local.served``: why a ``TestStream``), paced in real
time, with the watermark following the clock. The service is created and started when the run starts
(``SyntheticSource.start``, called by ``pipelines.local.run``), not when the graph is built, and
stopped after the run; building a graph starts nothing.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator

from apache_beam.testing.test_stream import TestStream

from pipelines.local.loadgen import EventGenerator, LoadProfile
from pipelines.local.publish import BurstProfile
from pipelines.local.served import ServedStream, clock_events, element_events
from transforms.elements import Message

__all__ = ["SyntheticSource"]


class _PacedEvents:
    """Feeds the TestStream service: one batch of events per tick, in real time.

    Each tick's events carry the tick's scheduled time as publish and event time, also when
    the run is behind schedule. After each batch it advances processing time by the wall time
    that passed and the watermark to the tick's time, so windows, triggers and timers behave
    as with a live source whose watermark follows the clock (as Pub/Sub's does).
    """

    def __init__(
        self,
        generator: EventGenerator,
        rates: BurstProfile,
        duration_s: float,
        tick_s: float,
        run_token: str,
        encode: Callable[[Message], bytes],
        on_done: Callable[[], None],
    ):
        self._generator = generator
        self._rates, self._duration_s, self._tick_s = rates, duration_s, tick_s
        self._run_token = run_token
        self._encode = encode
        self._on_done = on_done

    def read_multiple(self, unused_specs) -> Iterator:
        encode = self._encode
        sent = 0
        ticks = max(1, round(self._duration_s / self._tick_s))
        started = last = time.monotonic()
        started_at = dt.datetime.now(dt.UTC)
        carry = 0.0
        for tick in range(ticks):
            delay = started + tick * self._tick_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            carry += self._rates.rate_at(tick * self._tick_s) * self._tick_s
            n, carry = int(carry), carry - int(carry)
            # The tick's scheduled time, not the time it was generated: when the generator runs
            # late (a busy process), its events keep the time they were due, as a topic keeps
            # a message's publish time, so freshness counts the wait.
            now = started_at + dt.timedelta(seconds=tick * self._tick_s)
            now_us = int(now.timestamp() * 1_000_000)
            elements = []
            for generated in self._generator.batch(n, now):
                message = Message(generated.payload, f"synthetic:{self._run_token}:{sent}", now_us)
                sent += 1
                elements.append((encode(message), now_us))
            yield from element_events(elements)
            moment = time.monotonic()
            advance_us = int((moment - last) * 1_000_000)
            last = moment
            yield from clock_events(advance_us, now_us)
        self._on_done()


class SyntheticSource:
    """Synthetic gateway events (JSON bytes) at ``rate`` events/s for ``duration_s`` seconds of
    wall-clock time, then the stream ends. With ``bursts`` (a ``BurstProfile``), its rate
    instead: ``burst_factor`` times ``rate`` for ``burst_s`` seconds every ``burst_every_s``
    seconds, as the load generator publishes. Local runners only (``BundleBasedDirectRunner``).

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
        bursts: BurstProfile | None = None,
    ):
        if rate <= 0 or duration_s <= 0 or tick_s <= 0:
            raise ValueError("rate, duration_s and tick_s must be > 0")
        self._rates = bursts or BurstProfile(rate)
        if self._rates.problems():
            raise ValueError("; ".join(self._rates.problems()))
        self._duration_s, self._seed = duration_s, seed
        self._profile, self._tick_s = profile, tick_s
        self._served = ServedStream(Message)

    def transform(self) -> TestStream:
        """The source: ``Message`` elements (body, ``synthetic:<run>:<n>`` identity, emission
        time as ingestion time), timestamped with their emission time."""
        return self._served.transform()

    def start(self) -> None:
        paced = _PacedEvents(
            EventGenerator(self._seed, self._profile),
            self._rates,
            self._duration_s,
            self._tick_s,
            run_token=uuid.uuid4().hex[:12],
            encode=self._served.encode,
            # The service stops itself shortly after the last event.
            on_done=lambda: self._served.stop_later(5.0),
        )
        self._served.start(paced)

    @property
    def running(self) -> bool:
        return self._served.running

    def stop(self) -> None:
        self._served.stop()
