"""Publishing gateway events to Pub/Sub the way the gateway does, paced and with bursts.

For the load generator (``python -m pipelines.local.loadgen --pubsub_topic ...``) and the
integration tests; not part of any pipeline.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from pipelines.io.sinks.gcp.pubsub import PUBLISH_TIMEOUT_S, publisher_client
from pipelines.io.sources.pubsub import message_attributes

__all__ = ["BurstProfile", "PublishStats", "publish_messages", "publish_paced", "publisher_client"]


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
