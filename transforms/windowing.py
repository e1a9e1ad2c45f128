"""Windowing helpers shared by steps that gather elements from any windowing."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms import window

__all__ = ["in_global_window"]


def in_global_window(pcoll: beam.PCollection, label: str) -> beam.PCollection:
    """``pcoll`` in the global window with the default trigger.

    Applies ``WindowInto(GlobalWindows())`` under ``label`` only when ``pcoll`` is windowed
    otherwise: a re-window is a per-element step (Beam's per-window invoker, ~1 µs each), and in
    batch most inputs are already in the global window.
    """
    if pcoll.windowing.is_default():
        return pcoll
    return pcoll | label >> beam.WindowInto(window.GlobalWindows())
