"""Parse and validate gateway events: bytes of one JSON object -> ``Event`` or a dead letter.

Accepted input: the UTF-8 JSON body of one Pub/Sub message or one line of a JSON-lines file, as
described by ``schemas/avro/gateway_event.avsc`` (contract 1.1; ``schema_version`` absent, a
major-1 version such as ``1``, ``"1"``, ``"1.0"`` or ``"1.7"``, or another major that has a
converter: ``transforms.versions``). Validation is msgspec's (typed, strict: ``"7"`` is not an
integer), and every rejection becomes a dead letter with a machine-readable reason:

``oversize`` (over ``max_event_bytes``), ``invalid_json`` (not JSON, not UTF-8, or not an
object), ``unsupported_schema_version:<major>``, ``missing_field:<name>`` (absent or null),
``bad_type:<name>``, ``bad_value:<name>`` (right type, outside the contract: empty string, bad
uuid, region not ``[A-Za-z0-9_-]``), ``negative_value:<name>``, ``bad_timestamp`` (not RFC 3339
with an offset) and ``event_time_in_future`` (beyond ``max_clock_skew_s`` of the worker clock).
Any other error one line causes (a bug it reveals) is that line's dead letter too,
``internal_error:parse``, never a failed bundle; so is a line whose dead-letter payload cannot be
redacted, with the payload omitted (``transforms.deadletter``).

Fields the contract does not know are dropped, never fatal: the event carries how many
(``unknown_field_count``) and their names, bounded (``unknown_fields``, see
``transforms.versions.drift_names``), and each name is counted (``schema_drift_field.<name>``).
``ParseEvents`` works a chunk of lines at a time (``LineChunk``) and emits each chunk's valid
events as one ``ParsedBatch``, timestamped with its earliest event time; every event carries
its own ``event_time``.

Replay mode (``ParseEvents(..., replay=True)``, for dead-letter payloads): the same contract,
except that ``user_id`` may also be the pseudonym a dead-letter payload holds
(``{"pseudonym": "<hex>"}``); the event then carries it as ``user_key`` and it is not
pseudonymised again. Never enabled for gateway input, where it would let a caller pick a key.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import uuid
from typing import Annotated, NamedTuple

import apache_beam as beam
import msgspec
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from msgspec import Meta

from transforms.batching import BatchPerBundle
from transforms.deadletter import (
    DEAD_LETTER_TAG,
    METRICS_NAMESPACE,
    InvalidEvent,
    count_dead_letter,
    internal_error_letter,
    is_element_error,
    make_dead_letter,
)
from transforms.elements import (
    DeadLetter,
    Event,
    LineChunk,
    ParsedBatch,
    input_ids,
    micros_to_datetime,
    stream_chunk,
)
from transforms.grammar import (
    DEFAULT_EARLIEST,
    DEFAULT_REGIONS,
    MAX_LATENCY_MS,
    MAX_POLICY_FLAGS,
    MAX_TOKENS,
    identifier_problem,
    is_request_id,
)
from transforms.pii.engine import RedactionEngine, RedactionError
from transforms.pii.payload import redact_payload
from transforms.pii.pseudonym import pseudonym_of
from transforms.pii.settings import RedactionSettings
from transforms.versions import (
    current_major_version,
    drift_names,
    schema_version_of,
    to_current_major,
)

__all__ = ["DRIFT_COUNTER_PREFIX", "MAX_CHUNK_LINES", "ParseEvents", "ParseLimits", "parse_event"]

# Counter of each dropped field name (namespace genai): schema_drift_field.<name>.
DRIFT_COUNTER_PREFIX = "schema_drift_field."
# Most single events (bytes input) gathered into one chunk: bounds a chunk's memory when a
# bundle is large (a whole input split in batch).
MAX_CHUNK_LINES = 2000
_GLOBAL = (window.GlobalWindow(),)

_NonEmpty = Annotated[str, Meta(min_length=1, max_length=256)]
_Identifier = Annotated[str, Meta(min_length=1, max_length=128)]  # grammar: transforms.grammar
_Count = Annotated[int, Meta(ge=0, le=MAX_TOKENS)]
_Flag = Annotated[str, Meta(min_length=1, max_length=64)]
_Millis = Annotated[float, Meta(ge=0, le=MAX_LATENCY_MS)]


class _EventV1(msgspec.Struct, frozen=True):
    """Wire format of major version 1, every minor up to the contract's (mirrors
    gateway_event.avsc; a test keeps them in sync). Fields of later minors come last."""

    event_id: uuid.UUID
    request_id: _Identifier
    user_id: _NonEmpty
    event_time: Annotated[dt.datetime, Meta(tz=True)]
    model: _Identifier
    latency_ms: _Millis
    token_count: _Count
    # \Z, not $: "$" also matches before a final newline, which would let "us\n" through.
    region: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,63}\Z")]
    schema_version: str | int | None = None
    model_version: _Identifier | None = None
    prompt_tokens: _Count | None = None
    completion_tokens: _Count | None = None
    policy_flags: Annotated[tuple[_Flag, ...], Meta(max_length=MAX_POLICY_FLAGS)] = ()
    prompt: str | None = None
    response: str | None = None
    # 1.1
    ttft_ms: _Millis | None = None
    cached_tokens: _Count | None = None
    reasoning_tokens: _Count | None = None
    tenant_id: _Identifier | None = None


KNOWN_FIELDS = frozenset(_EventV1.__struct_fields__)


class _EventV1Fast(_EventV1, forbid_unknown_fields=True, gc=False):
    """``_EventV1`` as ``parse_event``'s fast path decodes it straight from JSON.

    It accepts a subset of what ``_EventV1`` accepts, with the same values; whatever it rejects
    goes to the reference path. Stricter here: unknown fields (they must be counted) and
    ``schema_version`` other than absent, null, ``1`` or ``"1"``. Looser, and checked by
    ``parse_event`` after decoding: ``event_id`` (a str that must already be canonical, since
    ``str()`` of a decoded ``uuid.UUID`` costs more than that check) and the characters of
    ``region`` (msgspec's ``pattern`` check costs several times the ``str`` methods used instead).
    ``schema_version`` decodes as a string or an int, and ``parse_event`` accepts only the
    canonical versions of the current major (``current_major_version``) here.
    ``gc=False``: it holds nothing that could form a cycle.
    """

    event_id: str
    region: Annotated[str, Meta(min_length=1, max_length=63)]


_FAST_DECODER = msgspec.json.Decoder(_EventV1Fast)
_BOM = b"\xef\xbb\xbf"
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_new_tuple = tuple.__new__  # builds an Event without the Python-level NamedTuple.__new__


class ParseLimits(NamedTuple):
    """Validation limits. ``max_event_bytes``: larger inputs are ``oversize``;
    ``max_clock_skew_s``: event times further ahead of the clock are rejected; ``now``: that
    clock, pinned (batch runs pin it at launch, so that every pass over the input, and a
    re-run, rejects the same events); None: the worker's clock when a chunk is parsed.
    ``regions``: the allowed regions; ``earliest``: older event times are rejected (see
    ``transforms.grammar``)."""

    max_event_bytes: int = 1 << 20
    max_clock_skew_s: int = 300
    now: dt.datetime | None = None
    regions: frozenset[str] = DEFAULT_REGIONS
    earliest: dt.datetime = DEFAULT_EARLIEST


DEFAULT_LIMITS = ParseLimits()

_FIELD_AT = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_MISSING = re.compile(r"missing required field `([A-Za-z0-9_]+)`")


def _reason_from(error: msgspec.ValidationError) -> str:
    """Maps a msgspec validation message (which names paths, never values) to a reason."""
    text = str(error)
    missing = _MISSING.search(text)
    if missing:
        return f"missing_field:{missing.group(1)}"
    at = _FIELD_AT.search(text)
    field = at.group(1) if at else "unknown"
    if field == "event_time":
        return "missing_field:event_time" if "got `null`" in text else "bad_timestamp"
    if "got `null`" in text:
        return f"missing_field:{field}"
    if ">= 0" in text:
        return f"negative_value:{field}"
    if text.startswith("Expected") and ", got `" in text:
        return f"bad_type:{field}"
    return f"bad_value:{field}"


@functools.lru_cache(maxsize=8)  # a timedelta per event costs more than the check it serves
def _skew_of(max_clock_skew_s: int) -> dt.timedelta:
    return dt.timedelta(seconds=max_clock_skew_s)


def parse_event(
    raw: bytes,
    *,
    now: dt.datetime,
    limits: ParseLimits = DEFAULT_LIMITS,
    pseudonymised: bool = False,
    input_id: str | None = None,
    ingested_at: dt.datetime | None = None,
) -> Event:
    """Parses and validates one event. Raises ``InvalidEvent`` with the reason.

    Args:
      raw: the JSON bytes of one event.
      now: the current time (aware), for the future-event check.
      limits: size and clock-skew limits.
      pseudonymised: accept a dead-letter payload's pseudonym as ``user_id`` (replay only); the
        event then has ``user_key`` set and an empty ``user_id``.
      input_id, ingested_at: the input's identity and ingestion time, carried by the event.

    A fast path decodes typical valid events straight into ``_EventV1Fast``; everything it
    cannot decide alone (any rejection, unknown fields, unusual spellings, replay mode,
    oversize input) goes to ``_parse_event_reference``, which produces every reason and message.
    Both give the same result for every input (``tests/functions/test_parse_fast.py`` checks it).
    """
    origin = {"input_id": input_id, "ingested_at": ingested_at}
    if raw[:3] == _BOM:  # a UTF-8 byte-order mark (a file's first line): not part of the event
        raw = raw[3:]
    if pseudonymised or len(raw) > limits.max_event_bytes:
        return _parse_event_reference(
            raw, now=now, limits=limits, pseudonymised=pseudonymised, **origin
        )
    try:
        wire = _FAST_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError too
        return _parse_event_reference(raw, now=now, limits=limits, **origin)
    event_id, region = wire.event_id, wire.region
    version = current_major_version(wire.schema_version)
    # The reference's region pattern on ASCII; checked before lower() ("\u212a" lowers to "k").
    if not (
        version is not None
        and _CANONICAL_UUID.fullmatch(event_id)
        and region.isascii()
        and (region.isalnum() or region.replace("-", "").replace("_", "").isalnum())
    ) or identifier_problem(
        wire.request_id,
        wire.model,
        wire.model_version,
        region,
        wire.policy_flags,
        limits.regions,
        tenant_id=wire.tenant_id,
    ):
        return _parse_event_reference(raw, now=now, limits=limits, **origin)
    try:
        event_time = wire.event_time.astimezone(dt.UTC)
    except OverflowError:
        return _parse_event_reference(raw, now=now, limits=limits)  # raises bad_timestamp
    if event_time > now + _skew_of(limits.max_clock_skew_s) or event_time < limits.earliest:
        return _parse_event_reference(raw, now=now, limits=limits)  # raises, with its message
    return _new_tuple(
        Event,
        (
            event_id,
            wire.request_id,
            wire.user_id,
            event_time,
            version,
            wire.model,
            wire.model_version,
            wire.latency_ms,  # already a float: msgspec decodes JSON integers as floats here
            wire.token_count,
            wire.prompt_tokens,
            wire.completion_tokens,
            wire.policy_flags,
            region.lower(),
            wire.prompt,
            wire.response,
            0,  # unknown_field_count: the decoder rejects unknown fields
            None,  # user_key: replay mode only
            None,  # input_sha256: set by the DoFn in replay mode
            input_id,
            ingested_at,
            wire.ttft_ms,
            wire.cached_tokens,
            wire.reasoning_tokens,
            wire.tenant_id,
            (),  # unknown_fields
        ),
    )


def _parse_event_reference(
    raw: bytes,
    *,
    now: dt.datetime,
    limits: ParseLimits = DEFAULT_LIMITS,
    pseudonymised: bool = False,
    input_id: str | None = None,
    ingested_at: dt.datetime | None = None,
) -> Event:
    """``parse_event`` by the contract's definition, for every input (see the module docstring):
    decodes to a dict, checks the version (and converts another major's document), converts
    with ``msgspec.convert(strict=True)`` and maps its errors to reasons. The fast path's
    fallback and its reference in tests."""
    if raw[:3] == _BOM:
        raw = raw[3:]
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent("oversize", f"event is {len(raw)} bytes, limit {limits.max_event_bytes}")
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise InvalidEvent("invalid_json", f"not valid UTF-8 JSON: {error}") from None
    except RecursionError:  # msgspec's limit on nesting: a rejection like any other
        raise InvalidEvent("invalid_json", "JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidEvent("invalid_json", "the top-level JSON value must be an object")
    version = schema_version_of(document.get("schema_version"))
    document = to_current_major(version, document)
    user_key = pseudonym_of(document.get("user_id")) if pseudonymised else None
    if user_key is not None:
        document = {**document, "user_id": user_key}  # validated as the string it stands for
    try:
        wire = msgspec.convert(document, _EventV1, strict=True)
    except msgspec.ValidationError as error:
        raise InvalidEvent(_reason_from(error), str(error)) from None
    problem = identifier_problem(
        wire.request_id,
        wire.model,
        wire.model_version,
        wire.region,
        wire.policy_flags,
        limits.regions,
        tenant_id=wire.tenant_id,
    )
    if problem:
        field, rule = problem
        raise InvalidEvent(f"bad_value:{field}", f"{field} must be {rule}")
    try:
        event_time = wire.event_time.astimezone(dt.UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00: after the last UTC datetime
        raise InvalidEvent(
            "bad_timestamp", "event_time is outside the range of UTC times"
        ) from None
    if event_time < limits.earliest:
        raise InvalidEvent(
            "event_time_too_old",
            f"event_time is before {limits.earliest.isoformat()} (--earliest_event_time)",
        )
    if event_time > now + dt.timedelta(seconds=limits.max_clock_skew_s):
        raise InvalidEvent(
            "event_time_in_future",
            f"event_time is more than {limits.max_clock_skew_s} s ahead of the worker clock",
        )
    unknown = document.keys() - KNOWN_FIELDS
    return Event(
        event_id=str(wire.event_id),
        request_id=wire.request_id,
        user_id="" if user_key is not None else wire.user_id,
        event_time=event_time,
        schema_version=version.text,
        model=wire.model,
        model_version=wire.model_version,
        latency_ms=float(wire.latency_ms),
        token_count=wire.token_count,
        prompt_tokens=wire.prompt_tokens,
        completion_tokens=wire.completion_tokens,
        policy_flags=wire.policy_flags,
        region=wire.region.lower(),
        prompt=wire.prompt,
        response=wire.response,
        unknown_field_count=len(unknown),
        user_key=user_key,
        input_id=input_id,
        ingested_at=ingested_at,
        ttft_ms=None if wire.ttft_ms is None else float(wire.ttft_ms),
        cached_tokens=wire.cached_tokens,
        reasoning_tokens=wire.reasoning_tokens,
        tenant_id=wire.tenant_id,
        unknown_fields=drift_names(unknown),
    )


def _ids_of(raw: bytes, engine: RedactionEngine) -> tuple[str | None, str | None]:
    """Best-effort event_id/request_id of a rejected input, for tracing its dead letter.

    Only values that cannot carry PII are kept: the event id if it is a valid UUID
    (canonical form), the request id if it has the contract's grammar (which also keeps out
    what a store cannot hold, such as a NUL character) and the redaction engine finds nothing
    in it. A rejected input may hold anything in these fields (an e-mail address, say).
    """
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    event_id = document.get("event_id")
    try:
        event_id = str(uuid.UUID(event_id)) if isinstance(event_id, str) else None
    except ValueError:
        event_id = None
    request_id = document.get("request_id")
    if not is_request_id(request_id):
        return event_id, None
    try:
        has_findings = bool(engine.redact([request_id])[0].counts)
    except RedactionError:
        has_findings = True  # cannot tell: keep nothing
    return event_id, (None if has_findings else request_id)


def _withheld_fields(reason: str) -> tuple[str, ...]:
    """The field whose value a dead letter's payload leaves out: one that failed its grammar
    or type may hold anything, including what the redaction engine does not recognise."""
    kind, _, field = reason.partition(":")
    return (field,) if kind in ("bad_value", "bad_type") and field else ()


def _ingestion_times(chunk: LineChunk) -> list[dt.datetime | None]:
    """Each line's ingestion time: per line, one for the whole chunk, or unknown."""
    times = chunk.ingested_us
    if len(times) == len(chunk.lines):
        return [micros_to_datetime(t) for t in times]
    if len(times) == 1:
        return [micros_to_datetime(times[0])] * len(chunk.lines)
    return [None] * len(chunk.lines)


class _ParseChunkFn(beam.DoFn):
    """Parses every line of a chunk: one ``ParsedBatch`` of its valid events (timestamped with
    the earliest event time) and a dead letter per rejected line."""

    def __init__(self, limits: ParseLimits, redaction: RedactionSettings, replay: bool):
        self._limits = limits
        self._redaction = redaction
        self._replay = replay

    def setup(self):
        self._engine, self._key = self._redaction.open()
        self._read = Metrics.counter(METRICS_NAMESPACE, "events_read")
        self._parsed = Metrics.counter(METRICS_NAMESPACE, "events_parsed")
        self._drift = Metrics.counter(METRICS_NAMESPACE, "schema_drift_fields_dropped")
        self._payloads_omitted = Metrics.counter(METRICS_NAMESPACE, "dead_letter_payload_errors")

    def process(self, chunk: LineChunk):
        now = self._limits.now or dt.datetime.now(dt.UTC)
        events: list[Event] = []
        offsets: list[int] = []
        drift = 0
        ids = input_ids(chunk)
        ingested = _ingestion_times(chunk)
        for i, raw in enumerate(chunk.lines):
            try:
                event = parse_event(
                    raw,
                    now=now,
                    limits=self._limits,
                    pseudonymised=self._replay,
                    input_id=ids[i],
                    ingested_at=ingested[i],
                )
                if self._replay:
                    event = event._replace(input_sha256=hashlib.sha256(raw).hexdigest())
            except InvalidEvent as error:
                yield self._dead_letter(raw, error, now, ids[i])
                continue
            except Exception as error:
                # Not a rejection the contract defines: a deterministic error of this line
                # (a bug the line reveals) would fail the bundle on every retry.
                if not is_element_error(error):
                    raise
                yield self._internal_error(raw, error, now, ids[i])
                continue
            if event.unknown_field_count:
                drift += event.unknown_field_count
                for name in event.unknown_fields:  # bounded names (drift_names); never logged
                    Metrics.counter(METRICS_NAMESPACE, DRIFT_COUNTER_PREFIX + name).inc()
            events.append(event)
            if chunk.offsets:
                offsets.append(chunk.offsets[i])
        self._read.inc(len(chunk.lines))
        self._parsed.inc(len(events))
        if drift:
            self._drift.inc(drift)
        if events:
            earliest = min(event.event_time for event in events)
            yield WindowedValue(
                ParsedBatch(chunk.source, tuple(events), tuple(offsets)),
                Timestamp.from_utc_datetime(earliest),
                _GLOBAL,
            )

    def _payload(self, raw: bytes, withhold: tuple[str, ...] = ()) -> str | None:
        """``raw`` redacted for its dead letter (without a byte-order mark, which is not part of
        the event; the values of the fields ``withhold`` names left out), or None (omitted)
        when that fails: whatever the payload redaction raises for this input, the input is
        still dead-lettered."""
        try:
            return redact_payload(
                raw.removeprefix(_BOM),
                self._engine,
                self._key,
                max_bytes=self._limits.max_event_bytes,
                keep_pseudonyms=self._replay,
                withhold=withhold,
            )
        except Exception as error:
            if not is_element_error(error):
                raise
            self._payloads_omitted.inc()
            return None

    def _traced_ids(self, raw: bytes) -> tuple[str | None, str | None]:
        try:
            return _ids_of(raw, self._engine)
        except Exception as error:
            if not is_element_error(error):
                raise
            return None, None

    def _dead_letter(self, raw: bytes, error: InvalidEvent, now: dt.datetime, input_id: str | None):
        count_dead_letter(error.reason)
        event_id, request_id = self._traced_ids(raw) if error.reason != "oversize" else (None, None)
        record = make_dead_letter(
            raw=raw,
            reason=error.reason,
            error_type=type(error).__name__,
            error_message=error.message,
            step="parse",
            payload=self._payload(raw, withhold=_withheld_fields(error.reason)),
            failed_at=now,
            event_id=event_id,
            request_id=request_id,
            input_id=input_id,
        )
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)

    def _internal_error(self, raw: bytes, error: Exception, now: dt.datetime, input_id: str | None):
        record = internal_error_letter(
            step="parse",
            error=error,
            failed_at=now,
            payload=self._payload(raw),
            identity=raw,
            input_id=input_id,
        )
        count_dead_letter(record.reason)
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, record)


class ParseEvents(beam.PTransform):
    """Parses raw events into ``ParsedBatch`` elements: the valid events of each chunk.

    Input, in the global window, bounded or unbounded: PCollection[LineChunk] (``chunked``),
    or PCollection[bytes], one JSON event per element, gathered into chunks per bundle first.
    Outputs (``with_outputs``): the main output ``events`` of ``ParsedBatch`` (clear text;
    only the redaction step may consume it), each timestamped with its earliest event time,
    and ``DEAD_LETTER_TAG`` with one redacted ``DeadLetter`` per rejected line. Every line is
    in exactly one of the two. ``replay``: the input is dead-letter payloads (see the module
    docstring); never for gateway input.

    ``limits.now`` pins the clock of the future-event check; without it each chunk uses the
    worker's clock.
    """

    def __init__(
        self,
        redaction: RedactionSettings,
        limits: ParseLimits = DEFAULT_LIMITS,
        replay: bool = False,
        chunked: bool = False,
    ):
        super().__init__()
        if limits.max_event_bytes <= 0 or limits.max_clock_skew_s < 0:
            raise ValueError("max_event_bytes must be > 0 and max_clock_skew_s >= 0")
        if limits.now is not None and limits.now.tzinfo is None:
            raise ValueError("limits.now must be timezone-aware")
        self._limits = limits
        self._redaction = redaction
        self._replay = replay
        self._chunked = chunked

    def expand(self, raw):
        if not isinstance(raw.windowing.windowfn, window.GlobalWindows):
            raise ValueError("ParseEvents needs its input in the global window")
        chunks = raw
        if not self._chunked:
            chunks = raw | "ChunkPerBundle" >> BatchPerBundle(
                stream_chunk, LineChunk, MAX_CHUNK_LINES
            )
        return chunks | "Parse" >> beam.ParDo(
            _ParseChunkFn(self._limits, self._redaction, self._replay)
        ).with_output_types(ParsedBatch, **{DEAD_LETTER_TAG: DeadLetter}).with_outputs(
            DEAD_LETTER_TAG, main="events"
        )
