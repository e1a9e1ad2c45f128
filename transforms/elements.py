"""Typed elements passed between the steps, mirroring the Avro contract in ``schemas/avro``.

Every record type here has the same field names as its ``.avsc`` file; ``to_record`` turns one
into the plain dict that fastavro, DuckDB or BigQuery writers take. Times are timezone-aware
``datetime`` in UTC. A test checks that field names and the schemas agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from transforms.coders import register_msgpack_coders

__all__ = [
    "AuditRecord",
    "DeadLetter",
    "Event",
    "EventBatch",
    "FreshnessBin",
    "FreshnessRow",
    "IngestionBin",
    "LatencyBin",
    "LineChunk",
    "Message",
    "MetricRollup",
    "MetricRow",
    "ParsedBatch",
    "RedactedEvent",
    "UsageRow",
    "event_micros",
    "input_ids",
    "micros_to_datetime",
    "stream_chunk",
    "to_record",
]


class Event(NamedTuple):
    """A validated gateway event, before redaction. Holds clear text: never leaves the core."""

    event_id: str
    request_id: str
    user_id: str
    event_time: dt.datetime
    schema_version: str
    model: str
    model_version: str | None
    latency_ms: float
    token_count: int
    prompt_tokens: int | None
    completion_tokens: int | None
    policy_flags: tuple[str, ...]
    region: str
    prompt: str | None
    response: str | None
    unknown_field_count: int
    # Dead-letter replay only (parse's replay mode). user_key: set instead of user_id when the
    # payload carried the pseudonym (dead-letter payloads store the user id pseudonymised);
    # user_id is then empty. input_sha256: SHA-256 of the submitted payload, so that a later
    # failure of the event (redaction) can be matched to the payload it came from.
    user_key: str | None = None
    input_sha256: str | None = None
    # Where the event came from: the input's identity (``input_ids``) and when the pipeline
    # took it in (Pub/Sub publish time, or when a local source emitted it); None when unknown.
    input_id: str | None = None
    ingested_at: dt.datetime | None = None


class RedactedEvent(NamedTuple):
    """What the raw archive stores (``redacted_event.avsc``)."""

    event_id: str
    request_id: str
    user_key: str
    event_time: dt.datetime
    event_date: dt.date
    schema_version: str
    model: str
    model_version: str | None
    latency_ms: float
    token_count: int
    prompt_tokens: int | None
    completion_tokens: int | None
    policy_flags: tuple[str, ...]
    region: str
    prompt: str | None
    response: str | None
    data_class: str
    redaction_counts: dict[str, int]
    unknown_field_count: int
    redaction_engine: str
    policy_version: str
    processed_at: dt.datetime
    input_id: str | None = None
    ingested_at: dt.datetime | None = None


# Batches: the core moves events a batch per element, not an event per element. On the local
# runners every element costs Beam bookkeeping at every step and every event crossing a shuffle
# costs its encoding in the runner's single main process; a batch pays those once. Events keep
# their own event time (``event_time``); a batch is timestamped with its earliest member's.


class Message(NamedTuple):
    """One message of a stream source: its body, its identity (``pubsub:<message id>``, unique
    per message and the same for every redelivery of it) and when it was ingested (the Pub/Sub
    publish time, or when a local source emitted it), in µs since the epoch."""

    data: bytes
    id: str
    ingested_us: int


class LineChunk(NamedTuple):
    """Raw input: one JSON document per line, as read together.

    ``source`` names where the lines were read (a file path; empty for a stream bundle) and
    ``offsets`` holds each line's byte offset in it when read from a file (empty otherwise):
    ``(source, offset)`` identifies an input line, which the exact batch dedupe uses to pick
    one copy of an event to write. ``ids``: each line's input identity when the source gives
    one (stream messages; empty otherwise, see ``input_ids``). ``ingested_us``: when each line
    was ingested, µs since the epoch (one value for the whole chunk when it has one element;
    empty when unknown).
    """

    source: str
    lines: tuple[bytes, ...]
    offsets: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()
    ingested_us: tuple[int, ...] = ()


def stream_chunk(items: tuple[bytes | Message, ...]) -> LineChunk:
    """The ``LineChunk`` of what a stream bundle read: ``Message`` elements (with identities
    and ingestion times) or plain bytes (neither)."""
    if items and isinstance(items[0], Message):
        return LineChunk(
            "",
            tuple(m.data for m in items),
            ids=tuple(m.id for m in items),
            ingested_us=tuple(m.ingested_us for m in items),
        )
    return LineChunk("", items)


def input_ids(chunk: LineChunk) -> list[str | None]:
    """The input identity of each line of ``chunk``: the source's id (a stream message's), else
    ``<source>#<byte offset>`` for a line read from a file, else None (no identity known)."""
    if chunk.ids:
        return list(chunk.ids)
    if chunk.offsets:
        return [f"{chunk.source}#{offset}" for offset in chunk.offsets]
    return [None] * len(chunk.lines)


def micros_to_datetime(micros: int) -> dt.datetime:
    """An aware UTC datetime of µs since the epoch (exact)."""
    return _EPOCH + dt.timedelta(microseconds=micros)


class ParsedBatch(NamedTuple):
    """Validated events of one chunk, before redaction. Clear text: never leaves the core.
    ``offsets``: as in ``LineChunk``, one per event (empty when the input had none)."""

    source: str
    events: tuple[Event, ...]
    offsets: tuple[int, ...] = ()


class EventBatch(NamedTuple):
    """Redacted events processed together: what the redaction step emits (with ``offsets``
    as in ``LineChunk``), and what the core emits as written events (one batch per input
    chunk, shard or bundle; ``offsets`` empty). A batch may hold several dates and regions."""

    source: str
    events: tuple[RedactedEvent, ...]
    offsets: tuple[int, ...] = ()


class LatencyBin(NamedTuple):
    index: int
    count: int


class IngestionBin(NamedTuple):
    """Events ingested within one second (``epoch_s``: seconds since the epoch, UTC)."""

    epoch_s: int
    count: int


class FreshnessBin(NamedTuple):
    """Events that became visible with one freshness (``latency_s``: the bucket's lower bound)."""

    latency_s: int
    count: int


class MetricRow(NamedTuple):
    """One pane of one window for one (model, region) (``metric_row.avsc``)."""

    window_start: dt.datetime
    window_end: dt.datetime
    model: str
    region: str
    request_count: int
    token_sum: int
    prompt_token_sum: int
    completion_token_sum: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_sketch_bins: tuple[LatencyBin, ...]
    latency_sketch_relative_accuracy: float
    distinct_users_approx: int
    users_hll: bytes
    policy_flag_counts: dict[str, int]
    data_class_counts: dict[str, int]
    redaction_counts: dict[str, int]
    pane_timing: str
    pane_index: int
    is_final: bool
    emitted_at: dt.datetime
    # Nullable in the contract so that existing tables take them in place; the core always
    # sets them (the defaults only keep older constructors working).
    source: str | None = None
    unsplit_token_sum: int | None = None
    estimated_cost_usd: float | None = None
    price_table_version: str | None = None
    latest_event_time: dt.datetime | None = None
    # The ingestion-time histogram of the events counted (set by the core) and their freshness
    # (set by the sink when it commits the row): see metric_row.avsc.
    ingestion_counts: tuple[IngestionBin, ...] = ()
    freshness_counts: tuple[FreshnessBin, ...] = ()


class MetricRollup(NamedTuple):
    """An hourly or daily rollup of the minute rows of a model and region (``metric_rollup``)."""

    grain: str
    period_start: dt.datetime
    period_end: dt.datetime
    model: str
    region: str
    window_count: int
    request_count: int
    token_sum: int
    prompt_token_sum: int
    completion_token_sum: int
    unsplit_token_sum: int
    estimated_cost_usd: float | None
    unpriced_window_count: int
    backfill_window_count: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_sketch_bins: tuple[LatencyBin, ...]
    latency_sketch_relative_accuracy: float
    distinct_users_approx: int
    users_hll: bytes
    policy_flag_counts: dict[str, int]
    data_class_counts: dict[str, int]
    redaction_counts: dict[str, int]
    freshness_counts: tuple[FreshnessBin, ...]
    computed_at: dt.datetime


class FreshnessRow(NamedTuple):
    """Events of one metric window by freshness bucket (``freshness_row.avsc``)."""

    window_start: dt.datetime
    latency_s: int
    events: int
    computed_at: dt.datetime


class UsageRow(NamedTuple):
    """One pane of one user's usage of one model version in one hour (``usage_row.avsc``)."""

    hour_start: dt.datetime
    user_key: str
    model: str
    model_version: str
    request_count: int
    token_sum: int
    prompt_token_sum: int
    completion_token_sum: int
    unsplit_token_sum: int
    latency_ms_sum: float
    policy_flagged_count: int
    estimated_cost_usd: float | None
    price_table_version: str
    pane_timing: str
    pane_index: int
    emitted_at: dt.datetime
    source: str


class AuditRecord(NamedTuple):
    """One event's outcome (``audit_record.avsc``)."""

    audit_id: str
    event_id: str | None
    request_id: str | None
    user_key: str | None
    outcome: str
    reason: str | None
    data_class: str | None
    redaction_counts: dict[str, int]
    model: str | None
    region: str | None
    event_time: dt.datetime | None
    dead_letter_id: str | None
    recorded_at: dt.datetime
    input_id: str | None = None


class DeadLetter(NamedTuple):
    """An input that could not be processed, with its reason (``dead_letter.avsc``)."""

    dead_letter_id: str
    event_id: str | None
    request_id: str | None
    reason: str
    error_type: str
    error_message: str
    step: str
    failed_at: dt.datetime
    payload: str | None
    payload_state: str
    payload_sha256: str
    payload_bytes: int
    replay_of: str | None = None
    input_id: str | None = None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def event_micros(moment: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact; what Beam's
    ``Timestamp.from_utc_datetime(moment).micros`` gives, an order of magnitude cheaper)."""
    return (moment - _EPOCH) // _MICROSECOND


_SCALARS = (str, int, float, bytes, type(None), dt.datetime, dt.date)


def _plain(value: Any) -> Any:
    if isinstance(value, _SCALARS):  # most fields: return at once (this runs per record)
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        record = dict(zip(value._fields, value, strict=True))
        for key, field in record.items():
            if not isinstance(field, _SCALARS):
                record[key] = _plain(field)
        return record
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_record(element: NamedTuple) -> dict[str, Any]:
    """Returns ``element`` as a plain dict (nested tuples as lists) matching its Avro schema."""
    return _plain(element)


def _chunk_size(chunk: LineChunk) -> int:
    return sum(map(len, chunk.lines)) + 8 * len(chunk.lines)


def _batch_size(batch: ParsedBatch | EventBatch) -> int:
    # The texts, plus about 300 bytes of the other fields per event.
    return sum(len(e.prompt or "") + len(e.response or "") + 300 for e in batch.events)


register_msgpack_coders(
    Message,
    Event,
    RedactedEvent,
    MetricRow,
    UsageRow,
    AuditRecord,
    DeadLetter,
    LineChunk,
    ParsedBatch,
    EventBatch,
    sizes={LineChunk: _chunk_size, ParsedBatch: _batch_size, EventBatch: _batch_size},
)
