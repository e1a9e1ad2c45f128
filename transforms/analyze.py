"""The core of the product: raw gateway events -> redacted events, metrics, audit, dead letters.

One composite, used unchanged by the streaming and the batch pipeline; they differ only in how
they read, timestamp and write. The chain is parse -> redact and classify -> deduplicate ->
aggregate, with every rejection flattened into one dead-letter output and every outcome into
one audit output.

Counting identity: every input element ends in exactly one of ``events`` (written),
``duplicates`` or ``dead_letters``, and has exactly one audit record. Late data beyond the
allowed lateness is still written and audited; only the metrics leave it out (the reconciliation
backfill puts it back).
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from transforms.aggregate import AggregateMetrics
from transforms.audit import RecordOutcomes
from transforms.classify import DEFAULT_POLICY_PATH
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedupe import DUPLICATE_TAG, DeduplicateEvents
from transforms.parse import ParseEvents, ParseLimits
from transforms.pii.settings import DlpOptions, RedactionSettings
from transforms.pricing.table import DEFAULT_PRICE_TABLE, load_price_table
from transforms.redact import RedactPii

__all__ = ["INPUT_FORMATS", "AnalyzeEvents", "CoreConfig"]

# json: raw gateway events (bytes). redacted: events read back from the raw archive, already
# parsed, redacted and classified; a replay starts at deduplication. replay: dead-letter payloads
# (bytes, already redacted, the user id as its pseudonym) re-submitted by a dead-letter replay:
# the whole chain, with parsing in replay mode.
INPUT_FORMATS = ("json", "redacted", "replay")


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
    dedupe_ttl_s: int = 600
    dedupe_shards: int = 32
    window_size_s: int = 60
    allowed_lateness_s: int = 3600
    early_firing_s: int = 30
    dlp: DlpOptions = DlpOptions()
    price_table: str = DEFAULT_PRICE_TABLE


class AnalyzeEvents(beam.PTransform):
    """Turns raw event bytes into the pipeline's outputs.

    Input (``input_format="json"``): PCollection[bytes], one JSON event per element, bounded or
    unbounded, in the global window. Timestamps of the input do not matter: parsing re-stamps
    each event with its event time (from Pub/Sub with ``timestamp_attribute`` they are already
    equal). With ``input_format="redacted"`` (archive replay) the input is
    PCollection[RedactedEvent] timestamped with event time, and the chain starts at
    deduplication; ``dead_letters`` is then empty. With ``input_format="replay"`` the input is
    dead-letter payloads (bytes) and the whole chain runs, parsing in replay mode (a
    pseudonymised ``user_id`` is kept as the user key).

    Returns a dict of PCollections:
      ``events``: ``RedactedEvent``, first copies, timestamped with event time (to archive);
      ``duplicates``: ``RedactedEvent`` copies of an id already written (for counters/audit);
      ``metrics``: ``MetricRow`` panes per window and (model, region), accumulating;
      ``audit``: ``AuditRecord``, one per input element;
      ``dead_letters``: ``DeadLetter``, redacted, one per rejected input.
    """

    def __init__(
        self,
        config: CoreConfig = CoreConfig(),  # noqa: B008 - immutable NamedTuple
        input_format: str = "json",
    ):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        self._config = config
        self._input_format = input_format

    def expand(self, raw):
        if self._input_format == "redacted":
            no_dead_letters = raw.pipeline | "NoDeadLetters" >> beam.Create([])
            return self._from_redacted(raw, no_dead_letters)
        c = self._config
        redaction = RedactionSettings(c.redaction_engine, c.pseudonym_key, c.dlp)
        parsed = raw | "ParseEvents" >> ParseEvents(
            redaction,
            ParseLimits(c.max_event_bytes, c.max_clock_skew_s),
            replay=self._input_format == "replay",
        )
        redacted = parsed.events | "RedactPii" >> RedactPii(
            redaction, c.policy_path, c.redaction_batch_size
        )
        dead_letters = (
            parsed[DEAD_LETTER_TAG],
            redacted[DEAD_LETTER_TAG],
        ) | "FlattenDeadLetters" >> beam.Flatten()
        return self._from_redacted(redacted.events, dead_letters)

    def _from_redacted(self, events, dead_letters):
        c = self._config
        deduped = events | "DeduplicateEvents" >> DeduplicateEvents(c.dedupe_ttl_s, c.dedupe_shards)
        metrics = deduped.unique | "AggregateMetrics" >> AggregateMetrics(
            window_size_s=c.window_size_s,
            allowed_lateness_s=c.allowed_lateness_s,
            early_firing_s=c.early_firing_s,
            prices=load_price_table(c.price_table),
        )
        audit = (deduped.unique, deduped[DUPLICATE_TAG], dead_letters) | "RecordOutcomes" >> (
            RecordOutcomes()
        )
        return {
            "events": deduped.unique,
            "duplicates": deduped[DUPLICATE_TAG],
            "metrics": metrics,
            "audit": audit,
            "dead_letters": dead_letters,
        }
