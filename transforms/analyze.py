"""The core of the product: raw gateway events -> redacted events, metrics, audit, dead letters.

One composite, used unchanged by the streaming and the batch pipeline; they differ only in how
they read, timestamp and write. The chain is parse -> redact and classify -> deduplicate ->
aggregate, with every rejection flattened into one dead-letter output and every outcome into
one audit output.

Events move in batches (``transforms.elements``). Counting identity: every input event ends in
exactly one of ``events`` (written), ``duplicates``, ``conflicts`` (copies whose content
differs from the copy written) or ``dead_letters``, and has exactly one audit record. Late
data beyond the allowed lateness is still written and audited; only the metrics leave it out
(the reconciliation backfill puts it back).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import NamedTuple

import apache_beam as beam

from transforms.aggregate import AggregateMetrics
from transforms.audit import RecordOutcomes
from transforms.batching import BatchPerBundle
from transforms.classify import DEFAULT_POLICY_PATH
from transforms.copies import ChooseCopies
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedupe import CONFLICT_TAG, DUPLICATE_TAG, DeduplicateEvents
from transforms.elements import EventBatch, RedactedEvent
from transforms.grammar import DEFAULT_EARLIEST, parse_regions
from transforms.parse import ParseEvents, ParseLimits
from transforms.pii.settings import DlpOptions, RedactionSettings
from transforms.pricing.table import DEFAULT_PRICE_TABLE, load_price_table
from transforms.redact import RedactPii
from transforms.usage import AggregateUsage
from transforms.windowing import in_global_window
from transforms.winner import ArchivedCopy, archived_copy

__all__ = ["INPUT_FORMATS", "AnalyzeEvents", "CoreConfig", "CoreOutputs"]

# json: raw gateway events, one per element (bytes). json_lines: the same in chunks of lines read
# from files (LineChunk, with line offsets). redacted: events read back from the raw archive,
# already parsed, redacted and classified; a replay starts at deduplication. replay: dead-letter
# payloads (bytes, already redacted, the user id as its pseudonym) re-submitted by a dead-letter
# replay: the whole chain, with parsing in replay mode.
INPUT_FORMATS = ("json", "json_lines", "redacted", "replay")


class CoreConfig(NamedTuple):
    """Every knob of the core transform; pipelines build it from their options.

    Durations are in seconds. Defaults are the production defaults. ``dlp`` is used by the
    ``dlp`` and ``hybrid`` redaction engines only. ``price_table`` (``builtin:NAME``, a path or
    a ``gs://`` object) is read where the pipeline is built and travels with the transform.
    """

    redaction_engine: str = "offline"
    pseudonym_key: str = "env:GENAI_PSEUDONYM_KEY"
    policy_path: str = DEFAULT_POLICY_PATH
    max_event_bytes: int = 1 << 20
    max_clock_skew_s: int = 300
    redaction_batch_size: int = 64
    # Covers allowed_lateness_s plus a window: a copy within the lateness, which could still
    # change a metric, is never counted twice.
    dedupe_ttl_s: int = 3660
    dedupe_shards: int = 32
    dedupe_strategy: str = "sharded"  # or "per_key" (Dataflow): see transforms.dedupe
    window_size_s: int = 60
    allowed_lateness_s: int = 3600
    early_firing_s: int = 30
    # Usage rows (per user and hour) feed reports, not the freshness SLO: fewer early panes.
    usage_firing_s: int = 300
    dlp: DlpOptions = DlpOptions()
    price_table: str = DEFAULT_PRICE_TABLE
    # The contract's configurable grammar (transforms.grammar): comma-separated regions ("":
    # the default list) and the earliest event time accepted (RFC 3339).
    allowed_regions: str = ""
    earliest_event_time: str = DEFAULT_EARLIEST.isoformat()
    # Bounded input only: the clock of the event-time checks (RFC 3339), recorded with the run
    # so a re-run gives every input the same outcome (pipelines.clock); "": the time the
    # pipeline is built.
    now: str = ""


class CoreOutputs(NamedTuple):
    """What ``AnalyzeEvents`` returns: one PCollection per outcome (see its docstring)."""

    events: beam.PCollection  # EventBatch of the copies written, to archive
    duplicates: beam.PCollection  # RedactedEvent, other copies of an id already written
    metrics: beam.PCollection  # MetricRow panes
    # AuditRecord, one per input event, in parts (one per outcome stream, RecordOutcomes):
    # transforms.audit.flatten_audit joins them.
    audit: tuple[beam.PCollection, ...]
    dead_letters: beam.PCollection  # DeadLetter, redacted, one per rejected input
    usage: beam.PCollection  # UsageRow panes per (hour, user_key, model, model_version)
    # DeadLetter of written events and rows the metrics left out (internal_error:aggregate):
    # not outcomes of an input, so not audited; stored with the dead letters.
    metric_dead_letters: beam.PCollection
    conflicts: beam.PCollection  # RedactedEvent, other copies whose content differs


def _without_text(event: RedactedEvent) -> RedactedEvent:
    return event._replace(prompt=None, response=None)


def _archived_batch(events: tuple[RedactedEvent, ...]) -> EventBatch:
    return EventBatch("", events)


def _partitions(batch: EventBatch) -> set[tuple[str, str]]:
    """The (event_date, region) archive partitions of a batch's events."""
    return {(event.event_date.isoformat(), event.region) for event in batch.events}


def _clock(config: CoreConfig, bounded: bool) -> dt.datetime | None:
    if not bounded:
        return None
    return dt.datetime.fromisoformat(config.now) if config.now else dt.datetime.now(dt.UTC)


class AnalyzeEvents(beam.PTransform):
    """Turns raw event bytes into the pipeline's outputs.

    Input, in the global window, bounded or unbounded (``input_format``):
      ``json``: PCollection[bytes], one JSON event per element (Pub/Sub messages). Input
        timestamps do not matter: every event carries its event time.
      ``json_lines``: PCollection[LineChunk], JSON lines read in chunks
        (``pipelines.io.sources.lines.ReadLineChunks``). With ``copies_from``, a second read of the
        same input, the exact batch dedupe picks the copies to write in a first pass over it
        and the main pass shuffles no events (``transforms.copies``).
      ``redacted``: PCollection[RedactedEvent] (archive replay), timestamped with event time;
        the chain starts at deduplication (first archived wins), ``dead_letters`` is empty,
        the events leave without their text (a replay recomputes metrics and audit; it never
        rewrites the archive, and texts would only weigh on the dedupe's shuffle), and every
        archived copy's audit record is ``written`` (its input's event is in the archive).
      ``replay``: PCollection of dead-letter payloads (bytes, or ``Message`` carrying each
        submission's identity); the whole chain runs, parsing in replay mode (a
        pseudonymised ``user_id`` is kept as the user key).

    A bounded input is parsed against one clock, ``config.now`` (else the time the pipeline
    is built), so the passes over it (and a re-run given the same ``now``) reject the same
    events; unbounded input uses the workers'.

    The copy of an event id that is written follows ``transforms.winner``'s rule. With
    ``read_archived`` (bounded ``json_lines`` with ``copies_from``, or ``replay``), copies
    already in the archive take part: first archived wins, across runs. ``read_archived`` is a
    PTransform from PCollection[(event_date, region)] (ISO date, region) to the
    PCollection[RedactedEvent] archived in those partitions: the I/O stays with the pipeline,
    which applies it to the partitions the input's events fall in. ``combine_copies``: how the
    first pass combines per shard (``ChooseCopies``' ``combine_per_shard``; None:
    ``beam.CombinePerKey``).

    Returns ``CoreOutputs``, PCollections:
      ``events``: ``EventBatch`` of the copies written, to archive (see ``DeduplicateEvents``
        for how they are batched);
      ``duplicates``: ``RedactedEvent`` copies of an id already written, same content;
      ``conflicts``: ``RedactedEvent`` copies of an id already written whose content differs
        (``duplicate_conflict``: audited and counted, neither archived nor in the metrics);
      ``metrics``: ``MetricRow`` panes per window and (model, region), accumulating;
      ``usage``: ``UsageRow`` panes per hour and (user_key, model, model_version);
      ``audit``: ``AuditRecord``, one per input event, as a tuple of PCollections (one per
        outcome stream; ``transforms.audit.flatten_audit`` joins them);
      ``dead_letters``: ``DeadLetter``, redacted, one per rejected input;
      ``metric_dead_letters``: ``DeadLetter`` of written events the metrics left out
        (``internal_error:aggregate``): not outcomes of an input, so not audited.
    """

    def __init__(
        self,
        config: CoreConfig = CoreConfig(),  # noqa: B008 - immutable NamedTuple
        input_format: str = "json",
        copies_from: beam.PCollection | None = None,
        read_archived: beam.PTransform | None = None,
        combine_copies: Callable[[beam.CombineFn], beam.PTransform] | None = None,
    ):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        if copies_from is not None and input_format != "json_lines":
            raise ValueError("copies_from goes with input_format='json_lines'")
        if read_archived is not None and not (input_format == "replay" or copies_from is not None):
            raise ValueError("read_archived goes with copies_from or input_format='replay'")
        self._config = config
        self._input_format = input_format
        self._copies_from = copies_from
        self._read_archived = read_archived
        self._combine_copies = combine_copies

    def expand(self, raw):
        c = self._config
        if self._input_format == "redacted":
            no_dead_letters = raw.pipeline | "NoDeadLetters" >> beam.Create([])
            batches = (
                in_global_window(raw, "WindowGlobally")
                | "DropTexts" >> beam.Map(_without_text).with_output_types(RedactedEvent)
                | "BatchPerBundle" >> BatchPerBundle(_archived_batch, EventBatch)
            )
            return self._from_redacted(batches, no_dead_letters, archived_input=True)
        redaction = RedactionSettings(c.redaction_engine, c.pseudonym_key, c.dlp)
        limits = ParseLimits(
            c.max_event_bytes,
            c.max_clock_skew_s,
            now=_clock(c, raw.is_bounded),
            regions=parse_regions(c.allowed_regions),
            earliest=dt.datetime.fromisoformat(c.earliest_event_time),
        )
        parsed = raw | "ParseEvents" >> ParseEvents(
            redaction,
            limits,
            replay=self._input_format == "replay",
            chunked=self._input_format == "json_lines",
        )
        redacted = parsed.events | "RedactPii" >> RedactPii(
            redaction, c.policy_path, c.redaction_batch_size
        )
        dead_letters = (
            parsed[DEAD_LETTER_TAG],
            redacted[DEAD_LETTER_TAG],
        ) | "FlattenDeadLetters" >> beam.Flatten()
        if self._copies_from is not None:
            copies = self._copies_from | "ChooseCopies" >> ChooseCopies(
                limits,
                c.pseudonym_key,
                num_shards=c.dedupe_shards,
                read_archived=self._read_archived,
                combine_per_shard=self._combine_copies,
            )
            return self._from_redacted(redacted.events, dead_letters, copies=copies)
        archived = None
        if self._read_archived is not None:
            archived = (
                redacted.events
                | "TouchedPartitions"
                >> beam.FlatMap(_partitions).with_output_types(tuple[str, str])
                | "DistinctPartitions" >> beam.Distinct()
                | "ReadArchived" >> self._read_archived
                | "ArchivedCopies" >> beam.Map(archived_copy).with_output_types(ArchivedCopy)
            )
        return self._from_redacted(redacted.events, dead_letters, archived=archived)

    def _from_redacted(
        self, batches, dead_letters, *, copies=None, archived=None, archived_input=False
    ):
        c = self._config
        deduped = batches | "DeduplicateEvents" >> DeduplicateEvents(
            c.dedupe_ttl_s,
            c.dedupe_shards,
            copies=copies,
            strategy=c.dedupe_strategy,
            archived=archived,
            archived_input=archived_input,
        )
        prices = load_price_table(c.price_table)
        metrics = deduped.unique | "AggregateMetrics" >> AggregateMetrics(
            window_size_s=c.window_size_s,
            allowed_lateness_s=c.allowed_lateness_s,
            early_firing_s=c.early_firing_s,
            prices=prices,
        )
        usage = deduped.unique | "AggregateUsage" >> AggregateUsage(
            prices, allowed_lateness_s=c.allowed_lateness_s, early_firing_s=c.usage_firing_s
        )
        dead_letters = (
            dead_letters,
            deduped[DEAD_LETTER_TAG],
        ) | "FlattenDedupeDeadLetters" >> beam.Flatten()
        if archived_input:
            # Every archived copy's input was written (its event is in the archive), whichever
            # copy the metrics count: its record says so, and a reconciliation re-records what
            # a crash lost before the audit log was written (records already stored stay).
            nothing = batches.pipeline | "NoLosers" >> beam.Create([]).with_output_types(
                RedactedEvent
            )
            outcomes = (batches, nothing, nothing, dead_letters)
        else:
            outcomes = (deduped.unique, deduped[DUPLICATE_TAG], deduped[CONFLICT_TAG], dead_letters)
        audit = outcomes | "RecordOutcomes" >> RecordOutcomes()
        return CoreOutputs(
            events=deduped.unique,
            duplicates=deduped[DUPLICATE_TAG],
            metrics=metrics.rows,
            audit=audit,
            dead_letters=dead_letters,
            usage=usage,
            metric_dead_letters=metrics.dead_letters,
            conflicts=deduped[CONFLICT_TAG],
        )
