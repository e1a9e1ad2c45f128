"""Client-side pacing for a quota'd API: a rate limiter and an exponential backoff schedule.

The clock and the sleep are parameters, so tests script time instead of waiting.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["RateLimiter", "backoff_delay", "shared_limiter"]

_SHARED: dict[Hashable, RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


class RateLimiter:
    """Spaces calls at least ``60 / requests_per_minute`` seconds apart.

    A leaky bucket without burst: ``acquire`` reserves the next free slot under a lock and
    sleeps (outside the lock) until it comes, so threads sharing one limiter are spaced
    against each other, in arrival order. Idle time is not saved up for a later burst.

    Args:
      requests_per_minute: the pace; must be > 0.
      clock: monotonic seconds (``time.monotonic``).
      sleep: waits that many seconds (``time.sleep``).
    """

    def __init__(
        self,
        requests_per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be > 0")
        self.interval_s = 60.0 / requests_per_minute
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = float("-inf")

    def acquire(self) -> float:
        """Blocks until this call may go; returns the seconds it waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval_s
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


def shared_limiter(key: Hashable, requests_per_minute: float) -> RateLimiter:
    """The limiter of this process for ``key`` (created on first use), so every thread of a
    worker process that calls the same API shares one pace."""
    with _SHARED_LOCK:
        limiter = _SHARED.get((key, requests_per_minute))
        if limiter is None:
            limiter = _SHARED[(key, requests_per_minute)] = RateLimiter(requests_per_minute)
        return limiter


def backoff_delay(
    failures: int,
    *,
    initial_s: float = 1.0,
    maximum_s: float = 32.0,
    jitter: float = 0.25,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1-based).

    ``initial_s`` doubled per failure up to ``maximum_s`` (1, 2, 4, ... 32 s), stretched by a
    random factor in [1, 1 + jitter] so that workers throttled together do not retry together;
    never shorter than the nominal delay.
    """
    if failures < 1:
        raise ValueError("failures must be >= 1")
    nominal = min(maximum_s, initial_s * 2 ** (failures - 1))
    return nominal * (1 + jitter * (rng or random).random())
