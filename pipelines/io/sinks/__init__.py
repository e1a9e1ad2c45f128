"""The sinks both pipelines write through: the embedded default (``embedded``) and Google Cloud
(``gcp``), with the file and batching machinery they share. ``SinkOutputs`` is what either
returns."""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

__all__ = ["SinkOutputs"]


class SinkOutputs(NamedTuple):
    """What the sinks of a run return.

    ``raw_files`` and ``dead_letter_files``: PCollections of ``(path, record_count)``, one per
    file written (``raw_files`` is None when the run does not write the archive);
    ``sink_dead_letters``: the ``DeadLetter`` records of rows a sink could not write (None for
    the embedded sinks, which fail the bundle instead: the runner retries it); ``freshness``:
    ``(latency_s, events)`` pairs, the events each metrics commit made visible by freshness
    bucket (the embedded warehouse; None where the sink does not report them).
    """

    raw_files: beam.PCollection | None
    dead_letter_files: beam.PCollection
    sink_dead_letters: beam.PCollection | None = None
    freshness: beam.PCollection | None = None
