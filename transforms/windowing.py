"""Windowing helpers shared by steps that gather elements from any windowing, and the one
windowing of the core's aggregations (metrics, usage)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.utils.windowed_value import PaneInfoTiming

__all__ = ["PANE_TIMINGS", "accumulating_windows", "in_global_window"]

# PaneInfo timings as the rows name them.
PANE_TIMINGS = {
    PaneInfoTiming.EARLY: "EARLY",
    PaneInfoTiming.ON_TIME: "ON_TIME",
    PaneInfoTiming.LATE: "LATE",
    PaneInfoTiming.UNKNOWN: "UNKNOWN",
}


def accumulating_windows(
    size_s: int, allowed_lateness_s: int, early_firing_s: int, bounded: bool
) -> beam.WindowInto:
    """Fixed event-time windows of ``size_s`` with accumulating panes: on unbounded input an
    EARLY pane every ``early_firing_s`` of processing time, ON_TIME at the window end, then a
    LATE pane per batch of late events within ``allowed_lateness_s``; on bounded input the
    default trigger (one complete pane per window and key). Why this trigger and mode:
    ``transforms.aggregate.AggregateMetrics.expand``."""
    if bounded:
        window_trigger = trigger.DefaultTrigger()
    else:
        window_trigger = trigger.AfterWatermark(
            early=trigger.AfterProcessingTime(early_firing_s), late=trigger.AfterCount(1)
        )
    return beam.WindowInto(
        window.FixedWindows(size_s),
        trigger=window_trigger,
        accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
        allowed_lateness=allowed_lateness_s,
    )


def in_global_window(pcoll: beam.PCollection, label: str) -> beam.PCollection:
    """``pcoll`` in the global window with the default trigger.

    Applies ``WindowInto(GlobalWindows())`` under ``label`` only when ``pcoll`` is windowed
    otherwise: a re-window is a per-element step (Beam's per-window invoker, ~1 µs each), and in
    batch most inputs are already in the global window.
    """
    if pcoll.windowing.is_default():
        return pcoll
    return pcoll | label >> beam.WindowInto(window.GlobalWindows())
