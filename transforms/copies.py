"""Choose, before the main pass of a batch run, which copy of each event id is written.

The exact batch dedupe needs every copy of an id in one place. Bringing the copies together
with a ``GroupByKey`` means shuffling whole redacted events (kilobytes of text each), which on
the local runners is the largest single cost of a backfill: the runner's main process decodes
and re-encodes every shuffled element. A batch input can instead be read twice: this first
pass parses every line (without redacting it) and keeps, per event id, only its rank and
position, so what it shuffles is a few dozen bytes per event; the main pass then knows, for
every event, whether it is the copy to write (``DeduplicateEvents`` with ``copies``).

The copy chosen is the valid line with the lowest ``(copy_rank(event), source, offset)``: the
earliest event time, then content, then the position in the input, as in the shuffle-based
batch dedupe. Lines that fail validation are never chosen (the main pass dead-letters them):
both passes parse with the same limits, clock included, which is why batch runs pin the clock.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.deadletter import InvalidEvent
from transforms.dedupe import copy_rank, shard_of
from transforms.elements import LineChunk
from transforms.parse import ParseLimits, parse_event

__all__ = ["ChooseCopies"]

# (rank, source, offset) of a line: the lowest is the copy written.
_Candidate = tuple[tuple[int, str, int, float, str], str, int]


class _CandidatesFn(beam.DoFn):
    """Emits ``(shard, (event_id, candidate))`` for every valid line of a chunk."""

    def __init__(self, limits: ParseLimits, replay: bool, num_shards: int):
        self._limits = limits
        self._replay = replay
        self._num_shards = num_shards

    def process(self, chunk: LineChunk):
        if len(chunk.offsets) != len(chunk.lines):
            raise ValueError("choosing copies needs the input's line offsets")
        now = self._limits.now
        for raw, offset in zip(chunk.lines, chunk.offsets, strict=True):
            try:
                event = parse_event(raw, now=now, limits=self._limits, pseudonymised=self._replay)
            except InvalidEvent:
                continue
            yield (
                shard_of(event.event_id, self._num_shards),
                (event.event_id, (copy_rank(event), chunk.source, offset)),
            )


class _ChooseCopyFn(beam.CombineFn):
    """Per shard: event id -> [number of valid lines, lowest candidate]; outputs the ids with
    more than one line and the position of the line to write."""

    def create_accumulator(self) -> dict[str, list[Any]]:
        return {}

    def add_input(self, acc: dict[str, list[Any]], item: tuple[str, _Candidate]):
        event_id, candidate = item
        seen = acc.get(event_id)
        if seen is None:
            acc[event_id] = [1, candidate]
        else:
            seen[0] += 1
            if candidate < seen[1]:
                seen[1] = candidate
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            for event_id, (count, candidate) in acc.items():
                seen = merged.get(event_id)
                if seen is None:
                    merged[event_id] = [count, candidate]
                else:
                    seen[0] += count
                    if candidate < seen[1]:
                        seen[1] = candidate
        return merged

    def extract_output(self, acc: dict[str, list[Any]]) -> list[tuple[str, tuple[str, int]]]:
        return [
            (event_id, (candidate[1], candidate[2]))
            for event_id, (count, candidate) in acc.items()
            if count > 1
        ]


class ChooseCopies(beam.PTransform):
    """Picks the line to write for every event id that more than one valid line carries.

    Input: PCollection[LineChunk], bounded, with line offsets (a read of the same input as
    the main pass, e.g. ``pipelines.io.lines.ReadLineChunks``). Output: bounded
    PCollection[(event_id, (source, offset))], one per such id, for
    ``DeduplicateEvents(copies=...)``. Ids carried by one valid line only are not in it.

    Args:
      limits: the main pass's parse limits, with the clock pinned (``limits.now``): both
        passes must agree on which lines are valid.
      replay: parse as dead-letter payloads (``ParseEvents(replay=True)``).
      num_shards: keys of the combine (each holds the ids of its shard while counting).
    """

    def __init__(self, limits: ParseLimits, replay: bool = False, num_shards: int = 32):
        super().__init__()
        if limits.now is None:
            raise ValueError("ChooseCopies needs limits.now: both passes must use one clock")
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self._limits = limits
        self._replay = replay
        self._num_shards = num_shards

    def expand(self, chunks):
        if not chunks.is_bounded:
            raise ValueError("ChooseCopies works on bounded input only")
        return (
            chunks
            | "Candidates"
            >> beam.ParDo(
                _CandidatesFn(self._limits, self._replay, self._num_shards)
            ).with_output_types(tuple[int, tuple[str, _Candidate]])
            | "ChoosePerShard" >> beam.CombinePerKey(_ChooseCopyFn())
            | "Chosen"
            >> beam.FlatMap(lambda kv: kv[1]).with_output_types(tuple[str, tuple[str, int]])
        )
