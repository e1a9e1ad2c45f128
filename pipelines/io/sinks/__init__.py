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
    ``sink_dead_letters``: the ``DeadLetter`` records of rows that are not outcomes of an input
    and went to the dead letters instead of their store: rows a sink could not write
    (``sink_failed:*``, Google Cloud only), rows it could not encode and events the metrics
    left out (``internal_error:<step>``); None when a run has none of these outputs; ``freshness``:
    ``(latency_s, events)`` pairs, the events each metrics commit made visible by freshness
    bucket (the embedded warehouse; None where the sink does not report them).
    """

    raw_files: beam.PCollection | None
    dead_letter_files: beam.PCollection
    sink_dead_letters: beam.PCollection | None = None
    freshness: beam.PCollection | None = None
