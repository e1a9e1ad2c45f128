"""Gather single elements into batch elements, per bundle: ``BatchPerBundle``.

The core works a batch per element (see ``transforms.elements``); inputs that come an event per
element (Pub/Sub messages, archived records) are gathered here first. Unlike
``beam.BatchElements`` this keeps no state across bundles and adds no latency: a batch is
emitted when it is full and at the end of each bundle, so a streaming bundle's events move on
together as soon as the bundle is done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["BatchPerBundle"]

_GLOBAL = (window.GlobalWindow(),)


class _BatchPerBundleFn(beam.DoFn):
    def __init__(self, make_batch: Callable[[tuple], Any], max_size: int):
        self._make_batch = make_batch
        self._max_size = max_size

    def start_bundle(self):
        self._items: list[Any] = []
        self._earliest = None

    def process(self, item, timestamp=beam.DoFn.TimestampParam):
        self._items.append(item)
        if self._earliest is None or timestamp < self._earliest:
            self._earliest = timestamp
        if len(self._items) >= self._max_size:
            yield self._flush()

    def finish_bundle(self):
        if self._items:
            yield self._flush()

    def _flush(self) -> WindowedValue:
        batch = WindowedValue(self._make_batch(tuple(self._items)), self._earliest, _GLOBAL)
        self._items, self._earliest = [], None
        return batch


class BatchPerBundle(beam.PTransform):
    """Gathers the elements of each bundle into batches of at most ``max_size``.

    Input: any PCollection in the global window (checked), bounded or unbounded. Output: one
    element ``make_batch(items)`` per batch (``items`` a tuple, in arrival order), in the global
    window, timestamped with its earliest item's timestamp. Every item is in exactly one batch.

    Args:
      make_batch: builds the batch element from a tuple of items (a picklable callable).
      output_type: the type ``make_batch`` returns (its coder is used wherever the batches
        are encoded).
      max_size: most items per batch (bounds a batch's memory when a bundle is a whole split).
    """

    def __init__(self, make_batch: Callable[[tuple], Any], output_type: type, max_size: int = 2000):
        super().__init__()
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._make_batch = make_batch
        self._output_type = output_type
        self._max_size = max_size

    def expand(self, pcoll):
        if not isinstance(pcoll.windowing.windowfn, window.GlobalWindows):
            raise ValueError("BatchPerBundle needs its input in the global window")
        return pcoll | "Batch" >> beam.ParDo(
            _BatchPerBundleFn(self._make_batch, self._max_size)
        ).with_output_types(self._output_type)
