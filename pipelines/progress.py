"""Progress lines for long runs: ``LogProgress`` logs a rate every 10 s, never per element."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import apache_beam as beam

from transforms.elements import LineChunk

__all__ = ["LogProgress", "line_count"]

_LOGGER = logging.getLogger(__name__)


# Progress counts live in the process, one per step (its token survives pickling): the
# DirectRunner in streaming sets up a new DoFn instance for every bundle, so a count kept on the
# instance would start again at every bundle and a long run would never log.
_PROGRESS: dict[str, list[float]] = {}  # token -> [started, last logged, count]
_PROGRESS_LOCK = threading.Lock()


def _one(_) -> int:
    return 1


def line_count(chunk: LineChunk) -> int:
    """The events a ``LineChunk`` holds (a ``LogProgress`` weight)."""
    return len(chunk.lines)


class _ProgressFn(beam.DoFn):
    """Logs elements/s every ``every_s`` seconds of wall time (never per element): the count
    of this step in this worker process, across its bundles and DoFn instances."""

    def __init__(self, label: str, every_s: float, weight: Callable[[Any], int]):
        self._label = label
        self._every_s = every_s
        self._weight = weight
        self._token = uuid.uuid4().hex

    def process(self, element):
        now = time.monotonic()
        with _PROGRESS_LOCK:
            progress = _PROGRESS.setdefault(self._token, [now, now, 0])
            progress[2] += self._weight(element)
            due = now - progress[1] >= self._every_s
            if due:
                progress[1] = now
                started, count = progress[0], int(progress[2])
        if due:
            _LOGGER.info(
                "progress: %d %s so far, %.0f/s",
                count,
                self._label,
                count / max(now - started, 1e-6),
            )
        yield element


class LogProgress(beam.PTransform):
    """Passes elements through and logs a progress line every ``every_s`` seconds.
    ``weight``: what one element counts for (the lines of a chunk, say); default 1."""

    def __init__(
        self,
        label: str = "events",
        every_s: float = 10.0,
        weight: Callable[[Any], int] = _one,
    ):
        super().__init__()
        self._label = label
        self._every_s = every_s
        self._weight = weight

    def expand(self, pcoll):
        return pcoll | "Progress" >> beam.ParDo(
            _ProgressFn(self._label, self._every_s, self._weight)
        ).with_output_types(pcoll.element_type)
