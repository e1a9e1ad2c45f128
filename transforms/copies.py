"""Choose, before the main pass of a batch run, which copy of each event id is written.

The exact batch dedupe needs every copy of an id in one place. Bringing the copies together
with a ``GroupByKey`` means shuffling whole redacted events (kilobytes of text each), which on
the local runners is the largest single cost of a backfill: the runner's main process decodes
and re-encodes every shuffled element. A batch input can instead be read twice: this first
pass parses every line (without redacting it) and keeps, per event id, only its candidate (rank,
input identity, content digest), so what it shuffles is a few dozen bytes per event; the main
pass then knows, for every event, whether it is the copy to write (``DeduplicateEvents`` with
``copies``).

The winner follows ``transforms.winner``: a copy already in the raw archive (first archived
wins: with ``read_archived``, the pass also reads the archived copies of every (event date,
region) partition its valid lines fall in), else the valid line with the lowest (file, byte
offset). Lines that fail validation, or that parsing fails on unexpectedly, are never chosen
(the main pass dead-letters them): both passes parse with the same limits, clock included,
which is why batch runs pin the clock. The content digest needs the user's pseudonym, so this
pass computes it (one HMAC per line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.deadletter import InvalidEvent, is_element_error
from transforms.dedupe import shard_of
from transforms.elements import LineChunk, RedactedEvent, input_ids
from transforms.parse import ParseLimits, parse_event
from transforms.pii.pseudonym import load_key, pseudonymize
from transforms.winner import Candidate, archived_copy, archived_rank, content_digest, line_rank

__all__ = ["PARTITIONS_TAG", "ChooseCopies", "chosen_copies", "merge_seen"]

# Output of the candidates step: the (event_date, region) partitions of each chunk's valid lines.
PARTITIONS_TAG = "partitions"
# event id -> [valid lines of the input, archived copies, best candidate], for one shard's ids.
_Seen = dict[str, list[Any]]
_GLOBAL = (window.GlobalWindow(),)


def _add(seen: _Seen, event_id: str, lines: int, archived: int, candidate: Candidate) -> None:
    entry = seen.get(event_id)
    if entry is None:
        seen[event_id] = [lines, archived, candidate]
        return
    entry[0] += lines
    entry[1] += archived
    if candidate < entry[2]:
        entry[2] = candidate


def merge_seen(merged: _Seen, other: _Seen) -> _Seen:
    """Adds ``other``'s ids into ``merged`` (counts summed, lowest candidate kept); returns it."""
    for event_id, (lines, archived, candidate) in other.items():
        _add(merged, event_id, lines, archived, candidate)
    return merged


def chosen_copies(seen: _Seen) -> list[tuple[str, tuple[str, bytes]]]:
    """``(event_id, (input_id, content))`` of the winner, for each id the input carries that
    has another copy (another line, or an archived copy)."""
    return [
        (event_id, (candidate[1], candidate[2]))
        for event_id, (lines, archived, candidate) in seen.items()
        if lines and lines + archived > 1
    ]


class _CandidatesFn(beam.DoFn):
    """Emits, per chunk, ``(shard, seen)`` for every shard its valid lines fall in: the chunk's
    ids counted in the DoFn, so the combine takes a few elements per chunk rather than one
    per line (on the local runners every element costs its coding and bookkeeping). On
    ``PARTITIONS_TAG``: the chunk's (event_date, region) partitions."""

    def __init__(self, limits: ParseLimits, pseudonym_key: str, replay: bool, num_shards: int):
        self._limits = limits
        self._pseudonym_key = pseudonym_key
        self._replay = replay
        self._num_shards = num_shards

    def setup(self):
        self._key = load_key(self._pseudonym_key)

    def process(self, chunk: LineChunk):
        if len(chunk.offsets) != len(chunk.lines):
            raise ValueError("choosing copies needs the input's line offsets")
        now = self._limits.now
        shards: dict[int, _Seen] = {}
        partitions: set[tuple[str, str]] = set()
        ids = input_ids(chunk)
        for raw, offset, input_id in zip(chunk.lines, chunk.offsets, ids, strict=True):
            try:
                event = parse_event(raw, now=now, limits=self._limits, pseudonymised=self._replay)
            except InvalidEvent:
                continue
            except Exception as error:
                # An unexpected error of this line: the main pass makes it a dead letter
                # (internal_error:parse), so it is never the copy written.
                if not is_element_error(error):
                    raise
                continue
            if event.user_key is None:
                event = event._replace(user_key=pseudonymize(event.user_id, self._key))
            shard = shard_of(event.event_id, self._num_shards)
            seen = shards.get(shard)
            if seen is None:
                seen = shards[shard] = {}
            candidate = (line_rank(chunk.source, offset), input_id, content_digest(event))
            _add(seen, event.event_id, 1, 0, candidate)
            partitions.add((event.event_time.date().isoformat(), event.region))
        yield from shards.items()
        for partition in partitions:
            yield beam.pvalue.TaggedOutput(PARTITIONS_TAG, partition)


class _ArchivedCandidatesFn(beam.DoFn):
    """Gathers a bundle's archived events into ``(shard, seen)`` partials (one per shard)."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def start_bundle(self):
        self._shards: dict[int, _Seen] = {}

    def process(self, event: RedactedEvent):
        copy = archived_copy(event)
        shard = shard_of(copy.event_id, self._num_shards)
        candidate = (archived_rank(copy.processed_us, copy.input_id), copy.input_id, copy.content)
        _add(self._shards.setdefault(shard, {}), copy.event_id, 0, 1, candidate)

    def finish_bundle(self):
        for shard_and_seen in self._shards.items():
            yield WindowedValue(shard_and_seen, Timestamp(0), _GLOBAL)
        self._shards = {}


class _ChooseCopyFn(beam.CombineFn):
    """Per shard: merges the partial ``seen`` dicts; outputs the ids with another copy and
    their winner."""

    def create_accumulator(self) -> _Seen:
        return {}

    def add_input(self, acc: _Seen, seen: _Seen) -> _Seen:
        return merge_seen(acc, seen)

    def merge_accumulators(self, accumulators) -> _Seen:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for acc in accumulators:
            merge_seen(merged, acc)
        return merged

    def extract_output(self, acc: _Seen) -> list[tuple[str, tuple[str, bytes]]]:
        return chosen_copies(acc)


class _FlattenAndCombine(beam.PTransform):
    """``beam.CombinePerKey(combine_fn)`` over a tuple of PCollections, flattened first."""

    def __init__(self, combine_fn: beam.CombineFn):
        super().__init__()
        self._fn = combine_fn

    def expand(self, pcolls):
        joined = pcolls[0] if len(pcolls) == 1 else pcolls | "WithArchived" >> beam.Flatten()
        return joined | beam.CombinePerKey(self._fn)


class ChooseCopies(beam.PTransform):
    """Picks the winning copy of every event id that has more than one copy.

    Input: PCollection[LineChunk], bounded, with line offsets (a read of the same input as
    the main pass, e.g. ``pipelines.io.sources.lines.ReadLineChunks``). Output: bounded
    PCollection[(event_id, (input_id, content))], the winner's input identity and content
    digest, one per id that more than one valid line carries or that a valid line and the
    archive both carry, for ``DeduplicateEvents(copies=...)``. Other ids are not in it.

    Args:
      limits: the main pass's parse limits, with the clock pinned (``limits.now``): both
        passes must agree on which lines are valid.
      pseudonym_key: the key reference of the redaction step (the content digest covers the
        pseudonymous user key).
      replay: parse as dead-letter payloads (``ParseEvents(replay=True)``).
      num_shards: keys of the combine (each holds the ids of its shard while counting).
      read_archived: None, or a PTransform from PCollection[(event_date, region)] (ISO date,
        region as written) to the PCollection[RedactedEvent] archived in those partitions
        (texts may be left out): the archived copies take part, first archived winning.
      combine_per_shard: None (``beam.CombinePerKey``), or a function of a ``CombineFn`` to a
        PTransform that does what ``CombinePerKey`` does with it, applied to the tuple of the
        partials' PCollections (one per branch: the input's, then the archive's), e.g.
        ``pipelines.local.spill.CombinePerKeyOnDisk`` on the local runner, whose shuffle is
        held in memory.
    """

    def __init__(
        self,
        limits: ParseLimits,
        pseudonym_key: str = "env:GENAI_PSEUDONYM_KEY",
        replay: bool = False,
        num_shards: int = 32,
        read_archived: beam.PTransform | None = None,
        combine_per_shard: Callable[[beam.CombineFn], beam.PTransform] | None = None,
    ):
        super().__init__()
        if limits.now is None:
            raise ValueError("ChooseCopies needs limits.now: both passes must use one clock")
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        self._limits = limits
        self._pseudonym_key = pseudonym_key
        self._replay = replay
        self._num_shards = num_shards
        self._read_archived = read_archived
        self._combine_per_shard = combine_per_shard or _FlattenAndCombine

    def expand(self, chunks):
        if not chunks.is_bounded:
            raise ValueError("ChooseCopies works on bounded input only")
        candidates = chunks | "Candidates" >> beam.ParDo(
            _CandidatesFn(self._limits, self._pseudonym_key, self._replay, self._num_shards)
        ).with_output_types(tuple[int, _Seen], **{PARTITIONS_TAG: tuple[str, str]}).with_outputs(
            PARTITIONS_TAG, main="seen"
        )
        partials = (candidates.seen,)
        if self._read_archived is not None:
            archived = (
                candidates[PARTITIONS_TAG]
                | "DistinctPartitions" >> beam.Distinct()
                | "ReadArchived" >> self._read_archived
                | "ArchivedCandidates"
                >> beam.ParDo(_ArchivedCandidatesFn(self._num_shards)).with_output_types(
                    tuple[int, _Seen]
                )
            )
            partials = (*partials, archived)
        return (
            partials
            | "ChoosePerShard" >> self._combine_per_shard(_ChooseCopyFn())
            | "Chosen"
            >> beam.FlatMap(lambda kv: kv[1]).with_output_types(tuple[str, tuple[str, bytes]])
        )
