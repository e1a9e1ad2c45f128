"""Audit records: one per event and outcome (written, duplicate, dead_lettered), and one per
dead letter a replay re-submitted (replayed).

Audit records carry ids, the data class and redaction counts; never text, never a clear user id.
``audit_id`` is derived from the idempotency key, so sinks can upsert and a replay writes the
same ids: (event_id, outcome) for written and duplicate events, and the dead-letter id for
dead-lettered inputs (which may have no usable event id).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import apache_beam as beam

from transforms.elements import AuditRecord, DeadLetter, EventBatch, RedactedEvent

__all__ = [
    "DEAD_LETTERED",
    "DUPLICATE",
    "OUTCOMES",
    "REPLAYED",
    "WRITTEN",
    "RecordOutcomes",
    "audit_dead_letter",
    "audit_event",
    "audit_replay",
]

WRITTEN = "written"
DUPLICATE = "duplicate"
DEAD_LETTERED = "dead_lettered"
OUTCOMES = (WRITTEN, DUPLICATE, DEAD_LETTERED)  # what processing an input ends in
# Not an outcome of processing: the note that a dead-letter replay re-submitted a dead letter's
# payload. What became of it is recorded under one of OUTCOMES.
REPLAYED = "replayed"


def _audit_id(key: str, outcome: str) -> str:
    # Concatenation rather than a join over *parts (cheaper); unlike an f-string, a None key
    # still raises TypeError.
    return hashlib.sha256((key + "|" + outcome).encode("utf-8")).hexdigest()


# Builds a NamedTuple from a tuple of its fields in order, skipping its Python-level keyword
# __new__, which was 7k of the 19k instructions of audit_event (run once per event).
_new_record = tuple.__new__


def audit_event(event: RedactedEvent, outcome: str, recorded_at: dt.datetime) -> AuditRecord:
    """The audit record of a written or duplicate event."""
    event_id = event.event_id
    return _new_record(
        AuditRecord,
        (
            _audit_id(event_id, outcome),  # audit_id
            event_id,
            event.request_id,
            event.user_key,
            outcome,
            None,  # reason
            event.data_class,
            dict(event.redaction_counts),  # a copy: the record does not share the event's
            event.model,
            event.region,
            event.event_time,
            None,  # dead_letter_id
            recorded_at,
            event.input_id,
        ),
    )


def _dead_letter_record(
    record: DeadLetter, outcome: str, event_id: str | None, recorded_at: dt.datetime
) -> AuditRecord:
    return AuditRecord(
        audit_id=_audit_id(record.dead_letter_id, outcome),
        event_id=event_id,
        request_id=record.request_id,
        user_key=None,
        outcome=outcome,
        reason=record.reason,
        data_class=None,
        redaction_counts={},
        model=None,
        region=None,
        event_time=None,
        dead_letter_id=record.dead_letter_id,
        recorded_at=recorded_at,
        input_id=record.input_id,
    )


def audit_dead_letter(record: DeadLetter, recorded_at: dt.datetime) -> AuditRecord:
    """The audit record of a dead-lettered input."""
    return _dead_letter_record(record, DEAD_LETTERED, record.event_id, recorded_at)


def audit_replay(record: DeadLetter, recorded_at: dt.datetime) -> AuditRecord:
    """The record that ``record``'s payload was re-submitted by a dead-letter replay.

    Keyed by the dead letter (``audit_id`` from (dead_letter_id, replayed)), with ``event_id``
    left null so that every replayed dead letter has its own record even when two share an
    event id; the dead letter and its ``dead_lettered`` record hold the event id. ``reason`` is
    the reason the record was dead-lettered for.
    """
    return _dead_letter_record(record, REPLAYED, None, recorded_at)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _audit_written(batch: EventBatch) -> list[AuditRecord]:
    recorded_at = _now()
    return [audit_event(event, WRITTEN, recorded_at) for event in batch.events]


class RecordOutcomes(beam.PTransform):
    """Builds the audit log from the three outcome streams.

    Input: a tuple ``(written, duplicates, dead_letters)`` of PCollections: ``EventBatch``,
    ``RedactedEvent`` and ``DeadLetter``. Output: PCollection[AuditRecord], one per written
    event, duplicate and dead letter, in the inputs' windows and timestamps.
    """

    def expand(self, outcomes):
        written, duplicates, dead_letters = outcomes
        return (
            written | "AuditWritten" >> beam.FlatMap(_audit_written).with_output_types(AuditRecord),
            duplicates
            | "AuditDuplicates"
            >> beam.Map(lambda e: audit_event(e, DUPLICATE, _now())).with_output_types(AuditRecord),
            dead_letters
            | "AuditDeadLetters"
            >> beam.Map(lambda d: audit_dead_letter(d, _now())).with_output_types(AuditRecord),
        ) | "FlattenAudit" >> beam.Flatten().with_output_types(AuditRecord)
