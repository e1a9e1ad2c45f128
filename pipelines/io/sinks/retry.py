"""Bounded retries with exponential backoff for the sinks, on Beam's own retry helper."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from apache_beam.utils import retry

__all__ = ["MAX_BACKOFF_S", "retry_conflicts"]

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")
MAX_BACKOFF_S = 2.0


def retry_conflicts(
    attempt: Callable[[], _T],
    *,
    is_conflict: Callable[[Exception], bool],
    max_attempts: int,
    first_backoff_s: float,
    on_retry: Callable[[], None] = lambda: None,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> _T:
    """Calls ``attempt`` until it returns, retrying only errors ``is_conflict`` accepts.

    At most ``max_attempts`` calls; the backoff doubles from ``first_backoff_s`` up to
    ``max_backoff_s``, fuzzed so competing processes do not retry in step. Any other error, or
    the last conflict, propagates (the caller decides: fail the bundle, or dead-letter).
    ``on_retry`` is called for each failed attempt that ``is_conflict`` accepts, the last
    one included.
    """

    def should_retry(error: Exception) -> bool:
        if is_conflict(error):
            on_retry()
            return True
        return False

    return retry.with_exponential_backoff(
        num_retries=max_attempts - 1,
        initial_delay_secs=first_backoff_s,
        max_delay_secs=max_backoff_s,
        retry_filter=should_retry,
        logger=_LOGGER.debug,
    )(attempt)()
