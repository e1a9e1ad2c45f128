"""Redact PII from validated events and classify them: ``Event`` -> ``RedactedEvent``.

The free-text fields (``TEXT_FIELDS``) go through the redaction engine; ``user_id`` becomes its
keyed pseudonym ``user_key``; the data class follows from the findings and the policy flags.
Version 1 of the contract has exactly these two free-text fields, and fields outside the
contract were already dropped by parsing, so no other text reaches the outputs.

Every other stored string is an identifier (``IDENTIFIER_FIELDS``: ``request_id``, ``model``,
``model_version``, each policy flag), stored as given: in the archive, the audit log, the
metrics' keys. Parsing held them to their grammar (``transforms.grammar``); here the engine
also scans them, in the same call as the texts, since a grammar cannot tell a phone number or
an e-mail address from an id. An event with a finding in an identifier is a dead letter
``pii_in_field:<field>`` (the first such field, in that order): its message names the field
and the info types, never the value, and its payload holds the identifiers and texts
redacted. ``region`` is not scanned: it is one of the configured regions.

Fail closed: when the engine cannot redact an event, that event goes to the dead-letter output
with its metadata only (no text, user id pseudonymised) and the engine's reason:
``redaction_failed``, or ``redaction_failed:<cause>`` from a service engine
(``redaction_failed:dlp_resource_exhausted``); an unredacted text is never emitted. Engines
report failures per text (``redact_each``), so only the events whose texts failed are
dead-lettered, not the rest of their batch. Any other error an event causes (a bug it reveals,
not an error of the engine's service) makes that event a dead letter ``internal_error:redact``
(text omitted), never a failed bundle.

With the ``hybrid`` engine, events whose gateway policy flags classify at or above the
settings' ``escalate_class`` have all their texts sent to DLP, whatever the pre-screen found.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import msgspec
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.classify import DEFAULT_POLICY_PATH, ClassificationPolicy, classify, load_policy
from transforms.deadletter import (
    DEAD_LETTER_TAG,
    METRICS_NAMESPACE,
    count_dead_letter,
    internal_error_letter,
    is_element_error,
    make_dead_letter,
)
from transforms.elements import DeadLetter, Event, EventBatch, ParsedBatch, RedactedEvent
from transforms.pii.engine import Redaction, RedactionEngine, RedactionError, redact_each
from transforms.pii.pseudonym import PSEUDONYM_FIELD, pseudonymize
from transforms.pii.settings import NO_ESCALATION, RedactionSettings

__all__ = [
    "IDENTIFIER_FIELDS",
    "TEXT_FIELDS",
    "RedactPii",
    "classify_and_redact",
    "identifiers_of",
    "redact_event",
    "texts_of",
]

TEXT_FIELDS: tuple[str, ...] = ("prompt", "response")
IDENTIFIER_FIELDS: tuple[str, ...] = ("request_id", "model", "model_version", "policy_flags")
PII_IN_FIELD = "pii_in_field"


_GLOBAL = (window.GlobalWindow(),)


def _merge_counts(redactions: list[Redaction]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for redaction in redactions:
        for info_type, n in redaction.counts.items():
            counts[info_type] = counts.get(info_type, 0) + n
    return counts


def redact_event(
    event: Event,
    redactions: list[Redaction],
    *,
    key: bytes,
    data_class: str,
    engine_name: str,
    policy_version: str,
    processed_at: dt.datetime,
    counts: dict[str, int] | None = None,
) -> RedactedEvent:
    """Assembles the redacted event from the engine's results for ``TEXT_FIELDS`` (in order,
    one per field that is not None); ``counts``: their findings per info type, when the caller
    has them already."""
    results = iter(redactions)
    texts = {
        name: (None if getattr(event, name) is None else next(results).text) for name in TEXT_FIELDS
    }
    return RedactedEvent(
        event_id=event.event_id,
        request_id=event.request_id,
        user_key=_user_key(event, key),
        event_time=event.event_time,
        event_date=event.event_time.date(),
        schema_version=event.schema_version,
        model=event.model,
        model_version=event.model_version,
        latency_ms=event.latency_ms,
        token_count=event.token_count,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        policy_flags=event.policy_flags,
        region=event.region,
        prompt=texts["prompt"],
        response=texts["response"],
        data_class=data_class,
        redaction_counts=_merge_counts(redactions) if counts is None else counts,
        unknown_field_count=event.unknown_field_count,
        redaction_engine=engine_name,
        policy_version=policy_version,
        processed_at=processed_at,
        input_id=event.input_id,
        ingested_at=event.ingested_at,
        ttft_ms=event.ttft_ms,
        cached_tokens=event.cached_tokens,
        reasoning_tokens=event.reasoning_tokens,
        tenant_id=event.tenant_id,
        unknown_fields=event.unknown_fields,
    )


def _user_key(event: Event, key: bytes) -> str:
    # A replayed dead-letter payload carries the pseudonym already (parse's replay mode).
    return event.user_key if event.user_key is not None else pseudonymize(event.user_id, key)


def classify_and_redact(
    event: Event,
    redactions: list[Redaction],
    *,
    key: bytes,
    policy: ClassificationPolicy,
    engine_name: str,
    processed_at: dt.datetime,
) -> RedactedEvent:
    """The redacted event of ``event`` from the engine's results for its texts (as
    ``redact_event``), classified by ``policy`` from its findings and policy flags."""
    counts = _merge_counts(redactions)
    data_class = classify(
        policy, has_text=bool(redactions), info_types=counts, policy_flags=event.policy_flags
    )
    return redact_event(
        event,
        redactions,
        key=key,
        data_class=data_class,
        engine_name=engine_name,
        policy_version=policy.version,
        processed_at=processed_at,
        counts=counts,
    )


def texts_of(event: Event) -> list[str]:
    """The texts of ``event`` the engine redacts: its ``TEXT_FIELDS`` that are not None."""
    return [text for name in TEXT_FIELDS if (text := getattr(event, name)) is not None]


def identifiers_of(event: Event) -> list[tuple[str, str]]:
    """``(field, value)`` of every identifier of ``event`` the engine scans, in the order of
    ``IDENTIFIER_FIELDS`` (one per policy flag)."""
    found = [("request_id", event.request_id), ("model", event.model)]
    if event.model_version is not None:
        found.append(("model_version", event.model_version))
    found += [("policy_flags", flag) for flag in event.policy_flags]
    return found


_REPLAY_FIELDS = ("user_key", "input_sha256")
# Contract 1.1's optional fields and the drift names: hashed only when set, so an event without
# them keeps the ids it had before they existed.
_LATER_FIELDS = ("ttft_ms", "cached_tokens", "reasoning_tokens", "tenant_id", "unknown_fields")
_ORIGIN_FIELDS = ("input_id", "ingested_at")  # where the event came from, not its content


def _metadata_payload(
    event: Event, key: bytes, replace: dict[str, object] | None = None
) -> tuple[bytes, str]:
    """(bytes to hash, payload JSON without text and with the user id pseudonymised).

    ``replace``: fields to write as given instead (redacted texts and identifiers), or to
    leave out (None).
    """
    document = event._asdict()
    for name in _ORIGIN_FIELDS:  # not content: a redelivered input hashes the same
        document.pop(name)
    for name in (*_REPLAY_FIELDS, *_LATER_FIELDS):
        if document[name] in (None, ()):  # hashed as before they existed: the same ids as before
            document.pop(name)
    full = msgspec.json.encode(document)
    # The payload is shaped like an input, so that a replay can submit it: no text, the
    # pseudonym in place of the user id, none of the fields parsing adds.
    for name in (*TEXT_FIELDS, *_REPLAY_FIELDS, "unknown_field_count", "unknown_fields"):
        document.pop(name, None)
    document["user_id"] = {PSEUDONYM_FIELD: _user_key(event, key)}
    for name, value in (replace or {}).items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    return full, msgspec.json.encode(document).decode("utf-8")


_Scan = Redaction | RedactionError
_UNSCANNED: dict[str, object] = dict.fromkeys(IDENTIFIER_FIELDS)  # each left out


def _shown(value: str, scan: _Scan) -> str | None:
    """An identifier as a dead-letter payload holds it: redacted when the engine found
    something, None (left out) when the engine failed."""
    if isinstance(scan, RedactionError):
        return None
    return scan.text if scan.counts else value


def _identifier_payload(identifiers: list[tuple[str, str, _Scan]]) -> dict[str, object]:
    """The payload fields to replace (``_metadata_payload``) for these scanned identifiers."""
    replace: dict[str, object] = {}
    for field, value, scan in identifiers:
        if field != "policy_flags" and _shown(value, scan) != value:
            replace[field] = _shown(value, scan)
    flags = [(value, scan) for field, value, scan in identifiers if field == "policy_flags"]
    if any(_shown(value, scan) != value for value, scan in flags):
        replace["policy_flags"] = [
            shown for value, scan in flags if (shown := _shown(value, scan)) is not None
        ]
    return replace


class _RedactBatchFn(beam.DoFn):
    """Redacts a ``ParsedBatch`` into one ``EventBatch`` (same source and offsets, minus the
    events the engine could not redact, which become dead letters). The engine is called with
    the texts of ``batch_size`` events at a time, so engines that call a service (DLP) batch
    their requests."""

    def __init__(self, settings: RedactionSettings, policy_path: str, batch_size: int):
        self._settings = settings
        self._policy_path = policy_path
        self._batch_size = batch_size

    def setup(self):
        self._engine: RedactionEngine
        self._engine, self._key = self._settings.open()
        self._policy = load_policy(self._policy_path)
        self._escalation = _escalation_rank(self._policy, self._settings)
        self._ranks = {name: i for i, name in enumerate(self._policy.classes)}
        self._redacted = Metrics.counter(METRICS_NAMESPACE, "events_redacted")
        self._findings: dict[str, object] = {}

    def process(self, batch: ParsedBatch):
        now = dt.datetime.now(dt.UTC)
        events: list[RedactedEvent] = []
        offsets: list[int] = []
        findings: dict[str, int] = {}
        for start in range(0, len(batch.events), self._batch_size):
            part = batch.events[start : start + self._batch_size]
            for i, outcome in enumerate(self._outcomes(part, now, findings)):
                if isinstance(outcome, RedactedEvent):
                    events.append(outcome)
                    if batch.offsets:
                        offsets.append(batch.offsets[start + i])
                else:  # counted here, once, whichever attempt made it
                    count_dead_letter(outcome.value.value.reason)
                    yield outcome
        for info_type, n in findings.items():
            counter = self._findings.get(info_type)
            if counter is None:
                counter = Metrics.counter(METRICS_NAMESPACE, f"redactions.{info_type}")
                self._findings[info_type] = counter
            counter.inc(n)
        self._redacted.inc(len(events))
        if events:
            earliest = min(event.event_time for event in events)
            yield WindowedValue(
                EventBatch(batch.source, tuple(events), tuple(offsets)),
                Timestamp.from_utc_datetime(earliest),
                _GLOBAL,
            )

    def _outcomes(self, events: tuple[Event, ...], now: dt.datetime, findings: dict[str, int]):
        """``_redact``'s outcomes for ``events``, in order, whatever one event causes: when it
        raises an error of an element (not of the engine's service, see
        ``transforms.deadletter.is_element_error``), each event is redone alone, and the
        events that fail alone become ``internal_error:redact`` dead letters. Findings are
        counted for the outcomes kept only."""
        attempt: dict[str, int] = {}
        try:
            outcomes = list(self._redact(events, now, attempt))
        except Exception as error:
            if not is_element_error(error):
                raise
            outcomes = [self._alone(event, now, attempt) for event in events]
        for info_type, n in attempt.items():
            findings[info_type] = findings.get(info_type, 0) + n
        return outcomes

    def _alone(self, event: Event, now: dt.datetime, findings: dict[str, int]):
        attempt: dict[str, int] = {}
        try:
            (outcome,) = self._redact((event,), now, attempt)
        except Exception as error:
            if not is_element_error(error):
                raise
            return self._internal_error(event, now, error)
        for info_type, n in attempt.items():
            findings[info_type] = findings.get(info_type, 0) + n
        return outcome

    def _internal_error(self, event: Event, now: dt.datetime, error: Exception):
        # The identifiers were not (all) scanned: left out, like the texts.
        try:
            full, payload = _metadata_payload(event, self._key, _UNSCANNED)
        except Exception as payload_error:
            if not is_element_error(payload_error):
                raise
            full, payload = repr(event).encode("utf-8", "surrogatepass"), None
        record = internal_error_letter(
            step="redact",
            error=error,
            failed_at=now,
            payload=payload,
            identity=full,
            event_id=event.event_id,
            request_id=self._clean(event.request_id),
            input_id=event.input_id,
            input_sha256=event.input_sha256,
        )
        timestamp = _event_timestamp(event)
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, WindowedValue(record, timestamp, _GLOBAL))

    def _clean(self, request_id: str) -> str | None:
        """``request_id`` when the engine finds nothing in it, else None (also when the engine
        fails on it): a dead letter keeps only a request id that passed."""
        try:
            (scan,) = redact_each(self._engine, [request_id])
        except Exception as error:
            if not is_element_error(error):
                raise
            return None
        return request_id if isinstance(scan, Redaction) and not scan.counts else None

    def _redact(self, events: tuple[Event, ...], now: dt.datetime, findings: dict[str, int]):
        """One outcome per event, in order: its ``RedactedEvent`` or a dead-letter output.

        One engine call for the texts of every event and each distinct identifier value (a
        batch has few models and flags)."""
        texts_per_event = [texts_of(event) for event in events]
        ids_per_event = [identifiers_of(event) for event in events]
        distinct = list(dict.fromkeys(value for ids in ids_per_event for _, value in ids))
        texts = [t for event_texts in texts_per_event for t in event_texts]
        escalate = [
            self._escalates(event)
            for event, event_texts in zip(events, texts_per_event, strict=True)
            for _ in event_texts
        ]
        flat = redact_each(
            self._engine,
            texts + distinct,
            escalate=escalate + [False] * len(distinct) if any(escalate) else None,
        )
        scans = dict(zip(distinct, flat[len(texts) :], strict=True))
        position = 0
        for event, event_texts, ids in zip(events, texts_per_event, ids_per_event, strict=True):
            outcomes = flat[position : position + len(event_texts)]
            position += len(event_texts)
            identifiers = [(field, value, scans[value]) for field, value in ids]
            failed = [
                o
                for o in [*outcomes, *(scan for _, _, scan in identifiers)]
                if isinstance(o, RedactionError)
            ]
            if failed:
                yield self._dead_letter(event, now, failed[0], identifiers)
            elif any(scan.counts for _, _, scan in identifiers):
                yield self._pii_in_field(event, now, outcomes, identifiers)
            else:
                yield self._assemble(event, outcomes, now, findings)

    def _escalates(self, event: Event) -> bool:
        if self._escalation is None:
            return False
        flags_class = classify(
            self._policy, has_text=False, info_types=(), policy_flags=event.policy_flags
        )
        return self._ranks[flags_class] >= self._escalation

    def _assemble(
        self,
        event: Event,
        redactions: list[Redaction],
        now: dt.datetime,
        findings: dict[str, int],
    ) -> RedactedEvent:
        redacted = classify_and_redact(
            event,
            redactions,
            key=self._key,
            policy=self._policy,
            engine_name=self._engine.name,
            processed_at=now,
        )
        for info_type, n in redacted.redaction_counts.items():
            findings[info_type] = findings.get(info_type, 0) + n
        return redacted

    def _dead_letter(
        self,
        event: Event,
        now: dt.datetime,
        error: RedactionError,
        identifiers: list[tuple[str, str, _Scan]],
    ):
        replace = _identifier_payload(identifiers)
        return self._output(
            event,
            now,
            reason=error.reason,
            error_type=type(error).__name__,
            # Engine messages name positions and causes, never text (RedactionError's rule).
            message=f"the redaction engine could not redact the text fields or identifiers "
            f"({error}); text omitted",
            replace=replace,
        )

    def _pii_in_field(
        self,
        event: Event,
        now: dt.datetime,
        texts: list[Redaction],
        identifiers: list[tuple[str, str, _Scan]],
    ):
        field, found = next(
            (field, scan.counts)
            for field, _, scan in identifiers
            if isinstance(scan, Redaction) and scan.counts
        )
        replace = _identifier_payload(identifiers)
        redacted = iter(texts)
        for name in TEXT_FIELDS:
            if getattr(event, name) is not None:
                replace[name] = next(redacted).text
        return self._output(
            event,
            now,
            reason=f"{PII_IN_FIELD}:{field}",
            error_type="InvalidEvent",
            message=f"{field} holds {', '.join(sorted(found))} (found by the "
            f"{self._engine.name} engine); the value is redacted in the payload",
            replace=replace,
        )

    def _output(
        self,
        event: Event,
        now: dt.datetime,
        *,
        reason: str,
        error_type: str,
        message: str,
        replace: dict[str, object],
    ):
        """The dead letter of ``event``; ``replace`` as ``_metadata_payload`` takes it. The
        request id is kept only when it passed (not replaced by its redaction or left out)."""
        full, payload = _metadata_payload(event, self._key, replace)
        record = make_dead_letter(
            raw=full,
            reason=reason,
            error_type=error_type,
            error_message=message,
            step="redact",
            payload=payload,
            failed_at=now,
            event_id=event.event_id,
            request_id=None if "request_id" in replace else event.request_id,
            input_sha256=event.input_sha256,
            input_id=event.input_id,
        )
        timestamp = _event_timestamp(event)
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, WindowedValue(record, timestamp, _GLOBAL))


def _event_timestamp(event: Event) -> Timestamp:
    try:
        return Timestamp.from_utc_datetime(event.event_time)
    except Exception as error:  # not an aware datetime: the element's, not the step's
        if not is_element_error(error):
            raise
        return Timestamp.now()


def _escalation_rank(policy, settings: RedactionSettings) -> int | None:
    """Rank (in ``policy.classes``) from which events are escalated; None when off."""
    if settings.engine != "hybrid" or settings.dlp.escalate_class == NO_ESCALATION:
        return None
    return policy.classes.index(settings.dlp.escalate_class)


class RedactPii(beam.PTransform):
    """Redacts and classifies events, a batch at a time (bounded or unbounded).

    Input: ``ParsedBatch`` elements in the global window (as ``ParseEvents`` emits them).
    Outputs (``with_outputs``): ``events`` with one ``EventBatch`` per input batch (its
    ``RedactedEvent`` in the same order, with the same source and offsets; timestamped with the
    earliest event time; no element when nothing in the batch could be redacted) and
    ``DEAD_LETTER_TAG`` with a ``DeadLetter`` (reason ``redaction_failed``, no text) for each
    event the engine could not redact. Each input event is in exactly one of them.

    Args:
      settings: engine name and pseudonym key reference, resolved on the workers.
      policy_path: classification policy (``builtin:classification.yaml`` or a file path).
      batch_size: events per engine call (texts of several events go in one request).
    """

    def __init__(
        self,
        settings: RedactionSettings,
        policy_path: str = DEFAULT_POLICY_PATH,
        batch_size: int = 64,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        _escalation_rank(load_policy(policy_path), settings)  # fail here, not on the workers
        self._settings = settings
        self._policy_path = policy_path
        self._batch_size = batch_size

    def expand(self, batches):
        if not isinstance(batches.windowing.windowfn, window.GlobalWindows):
            raise ValueError("RedactPii needs its input in the global window")
        return batches | "Redact" >> beam.ParDo(
            _RedactBatchFn(self._settings, self._policy_path, self._batch_size)
        ).with_output_types(EventBatch, **{DEAD_LETTER_TAG: DeadLetter}).with_outputs(
            DEAD_LETTER_TAG, main="events"
        )
