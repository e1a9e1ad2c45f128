"""The core of the product: raw gateway events -> redacted events, metrics, audit, dead letters.

One composite, used unchanged by the streaming and the batch pipeline; they differ only in how
they read, timestamp and write. The chain is parse -> redact and classify -> deduplicate ->
aggregate, with every rejection flattened into one dead-letter output and every outcome into
one audit output.

Events move in batches (``transforms.elements``). Counting identity: every input event ends in
exactly one of ``events`` (written), ``duplicates`` or ``dead_letters``, and has exactly one
audit record. Late data beyond the allowed lateness is still written and audited; only the
metrics leave it out (the reconciliation backfill puts it back).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import apache_beam as beam

from transforms.aggregate import AggregateMetrics
from transforms.audit import RecordOutcomes
from transforms.batching import BatchPerBundle
from transforms.classify import DEFAULT_POLICY_PATH
from transforms.copies import ChooseCopies
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedupe import DUPLICATE_TAG, DeduplicateEvents
from transforms.elements import EventBatch, RedactedEvent
from transforms.grammar import DEFAULT_EARLIEST, parse_regions
from transforms.parse import ParseEvents, ParseLimits
from transforms.pii.settings import DlpOptions, RedactionSettings
from transforms.pricing.table import DEFAULT_PRICE_TABLE, load_price_table
from transforms.redact import RedactPii
from transforms.usage import AggregateUsage
from transforms.windowing import in_global_window

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


class CoreOutputs(NamedTuple):
    """What ``AnalyzeEvents`` returns: one PCollection per outcome (see its docstring)."""

    events: beam.PCollection  # EventBatch of the copies written, to archive
    duplicates: beam.PCollection  # RedactedEvent, other copies of an id already written
    metrics: beam.PCollection  # MetricRow panes
    audit: beam.PCollection  # AuditRecord, one per input event
    dead_letters: beam.PCollection  # DeadLetter, redacted, one per rejected input
    usage: beam.PCollection  # UsageRow panes per (hour, user_key, model, model_version)
    # DeadLetter of written events and rows the metrics left out (internal_error:aggregate):
    # not outcomes of an input, so not audited; stored with the dead letters.
    metric_dead_letters: beam.PCollection


def _without_text(event: RedactedEvent) -> RedactedEvent:
    return event._replace(prompt=None, response=None)


def _archived_batch(events: tuple[RedactedEvent, ...]) -> EventBatch:
    return EventBatch("", events)


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
        the chain starts at deduplication, ``dead_letters`` is empty, and the events leave
        without their text (a replay recomputes metrics and audit; it never rewrites the
        archive, and texts would only weigh on the dedupe's shuffle).
      ``replay``: PCollection[bytes] of dead-letter payloads; the whole chain runs, parsing in
        replay mode (a pseudonymised ``user_id`` is kept as the user key).

    A bounded input is parsed against one clock, pinned when the pipeline is built, so the
    passes over it (and a re-run) reject the same events; unbounded input uses the workers'.

    Returns ``CoreOutputs``, PCollections:
      ``events``: ``EventBatch`` of first copies, to archive (see ``DeduplicateEvents`` for
        how they are batched);
      ``duplicates``: ``RedactedEvent`` copies of an id already written (for counters/audit);
      ``metrics``: ``MetricRow`` panes per window and (model, region), accumulating;
      ``usage``: ``UsageRow`` panes per hour and (user_key, model, model_version);
      ``audit``: ``AuditRecord``, one per input event;
      ``dead_letters``: ``DeadLetter``, redacted, one per rejected input;
      ``metric_dead_letters``: ``DeadLetter`` of written events the metrics left out
        (``internal_error:aggregate``): not outcomes of an input, so not audited.
    """

    def __init__(
        self,
        config: CoreConfig = CoreConfig(),  # noqa: B008 - immutable NamedTuple
        input_format: str = "json",
        copies_from: beam.PCollection | None = None,
    ):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        if copies_from is not None and input_format != "json_lines":
            raise ValueError("copies_from goes with input_format='json_lines'")
        self._config = config
        self._input_format = input_format
        self._copies_from = copies_from

    def expand(self, raw):
        c = self._config
        if self._input_format == "redacted":
            no_dead_letters = raw.pipeline | "NoDeadLetters" >> beam.Create([])
            batches = (
                in_global_window(raw, "WindowGlobally")
                | "DropTexts" >> beam.Map(_without_text).with_output_types(RedactedEvent)
                | "BatchPerBundle" >> BatchPerBundle(_archived_batch, EventBatch)
            )
            return self._from_redacted(batches, no_dead_letters, copies=None)
        redaction = RedactionSettings(c.redaction_engine, c.pseudonym_key, c.dlp)
        limits = ParseLimits(
            c.max_event_bytes,
            c.max_clock_skew_s,
            now=dt.datetime.now(dt.UTC) if raw.is_bounded else None,
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
        copies = None
        if self._copies_from is not None:
            copies = self._copies_from | "ChooseCopies" >> ChooseCopies(
                limits, num_shards=c.dedupe_shards
            )
        return self._from_redacted(redacted.events, dead_letters, copies)

    def _from_redacted(self, batches, dead_letters, copies):
        c = self._config
        deduped = batches | "DeduplicateEvents" >> DeduplicateEvents(
            c.dedupe_ttl_s, c.dedupe_shards, copies=copies, strategy=c.dedupe_strategy
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
        audit = (deduped.unique, deduped[DUPLICATE_TAG], dead_letters) | "RecordOutcomes" >> (
            RecordOutcomes()
        )
        return CoreOutputs(
            events=deduped.unique,
            duplicates=deduped[DUPLICATE_TAG],
            metrics=metrics.rows,
            audit=audit,
            dead_letters=dead_letters,
            usage=usage,
            metric_dead_letters=metrics.dead_letters,
        )
