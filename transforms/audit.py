"""Audit records: exactly one per input, whatever its outcome (written, duplicate,
duplicate_conflict, dead_lettered), and one per dead letter a replay re-submitted (replayed).

Audit records carry ids, the data class and redaction counts; never text, never a clear user id.

Key: ``audit_id`` is the SHA-256 of the input's identity (``input_id``: ``pubsub:<message
id>``, ``<file>#<byte offset>``, ``synthetic:<run>:<n>``, ``replay:<dead letter id>``), so an
input has one record however often it is processed: a re-run writes the same ids, and a Pub/Sub
redelivery (same message id) is the same input. A dead-letter replay submits each payload as
the input ``replay:<dead letter id>``: its outcome gets a record of its own, never colliding
with the original input's, and the ``replayed`` note is keyed by (dead letter id, replayed).
Inputs without an identity (bytes fed to the core in tests) fall back to (event_id, outcome),
or (dead_letter_id, outcome) for a dead letter: there, copies of one event with one outcome
share a record.

Precedence: when two records of one input meet in a store (a redelivery processed again, a
record re-emitted by a reconciliation), the store keeps the one whose outcome ranks higher in
``OUTCOME_PRECEDENCE`` (written over duplicate_conflict over duplicate over dead_lettered), else
the first stored, so the record does not depend on the order the records arrive in and says
``written`` whenever the input's event is in the archive.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import apache_beam as beam

from transforms.elements import AuditRecord, DeadLetter, EventBatch, RedactedEvent

__all__ = [
    "DEAD_LETTERED",
    "DUPLICATE",
    "DUPLICATE_CONFLICT",
    "OUTCOMES",
    "OUTCOME_PRECEDENCE",
    "REPLAYED",
    "WRITTEN",
    "RecordOutcomes",
    "audit_dead_letter",
    "audit_event",
    "audit_replay",
    "flatten_audit",
    "input_audit_id",
    "outcome_precedence_sql",
]

WRITTEN = "written"
DUPLICATE = "duplicate"
# Another copy of an event id already written, whose content differs from the written copy's.
DUPLICATE_CONFLICT = "duplicate_conflict"
DEAD_LETTERED = "dead_lettered"
OUTCOMES = (WRITTEN, DUPLICATE, DUPLICATE_CONFLICT, DEAD_LETTERED)  # what an input ends in
# Not an outcome of processing: the note that a dead-letter replay re-submitted a dead letter's
# payload. What became of it is recorded under one of OUTCOMES.
REPLAYED = "replayed"
# Which record of one input a store keeps (the higher); see the module docstring.
OUTCOME_PRECEDENCE = {
    REPLAYED: 0,
    DEAD_LETTERED: 1,
    DUPLICATE: 2,
    DUPLICATE_CONFLICT: 3,
    WRITTEN: 4,
}


def outcome_precedence_sql(relation: str) -> str:
    """The SQL twin of ``OUTCOME_PRECEDENCE`` for ``relation.outcome`` (any of the stores'
    dialects: a plain CASE)."""
    cases = " ".join(f"WHEN '{o}' THEN {rank}" for o, rank in OUTCOME_PRECEDENCE.items())
    return f"(CASE {relation}.outcome {cases} ELSE 0 END)"


def _audit_id(key: str, outcome: str) -> str:
    # Concatenation rather than a join over *parts (cheaper); unlike an f-string, a None key
    # still raises TypeError.
    return hashlib.sha256((key + "|" + outcome).encode("utf-8")).hexdigest()


def input_audit_id(input_id: str) -> str:
    """The ``audit_id`` of the one record of the input ``input_id``."""
    return hashlib.sha256(("input|" + input_id).encode("utf-8")).hexdigest()


# Builds a NamedTuple from a tuple of its fields in order, skipping its Python-level keyword
# __new__, which was 7k of the 19k instructions of audit_event (run once per event).
_new_record = tuple.__new__


def audit_event(event: RedactedEvent, outcome: str, recorded_at: dt.datetime) -> AuditRecord:
    """The audit record of a written, duplicate or conflicting event."""
    event_id = event.event_id
    input_id = event.input_id
    return _new_record(
        AuditRecord,
        (
            _audit_id(event_id, outcome) if input_id is None else input_audit_id(input_id),
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
            input_id,
        ),
    )


def _dead_letter_record(
    record: DeadLetter, outcome: str, event_id: str | None, recorded_at: dt.datetime
) -> AuditRecord:
    by_input = outcome != REPLAYED and record.input_id is not None
    return AuditRecord(
        audit_id=(
            input_audit_id(record.input_id)
            if by_input
            else _audit_id(record.dead_letter_id, outcome)
        ),
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
    """The note that ``record``'s payload was re-submitted by a dead-letter replay.

    Keyed by the dead letter (``audit_id`` from (dead_letter_id, replayed)), so every replayed
    dead letter has its note; ``event_id`` is left null (the dead letter and the records of its
    input hold it). ``reason`` is the reason the record was dead-lettered for. What became of
    the submission is the record of the input ``replay:<dead letter id>``.
    """
    return _dead_letter_record(record, REPLAYED, None, recorded_at)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _audit_written(batch: EventBatch) -> list[AuditRecord]:
    recorded_at = _now()
    return [audit_event(event, WRITTEN, recorded_at) for event in batch.events]


class RecordOutcomes(beam.PTransform):
    """Builds the audit log from the four outcome streams.

    Input: a tuple ``(written, duplicates, conflicts, dead_letters)`` of PCollections:
    ``EventBatch``, ``RedactedEvent``, ``RedactedEvent`` and ``DeadLetter``. Output: a tuple
    of four PCollection[AuditRecord], one per outcome stream, in the inputs' windows and
    timestamps: together one record per written event, duplicate, conflicting copy and dead
    letter, so one per input. ``flatten_audit`` joins them where one PCollection is needed.

    Kept apart because Beam's local batch runner (the FnApiRunner) materializes every Flatten
    of several inputs in its controller process (``sink_flattens`` in its translations: "always
    materialize"): one Flatten here held every audit record of a backfill in memory, and a
    writer per part needs none. Dataflow fuses a Flatten, so the Google Cloud sinks flatten.
    """

    def expand(self, outcomes) -> tuple[beam.PCollection, ...]:
        written, duplicates, conflicts, dead_letters = outcomes
        return (
            written | "AuditWritten" >> beam.FlatMap(_audit_written).with_output_types(AuditRecord),
            duplicates
            | "AuditDuplicates"
            >> beam.Map(lambda e: audit_event(e, DUPLICATE, _now())).with_output_types(AuditRecord),
            conflicts
            | "AuditConflicts"
            >> beam.Map(lambda e: audit_event(e, DUPLICATE_CONFLICT, _now())).with_output_types(
                AuditRecord
            ),
            dead_letters
            | "AuditDeadLetters"
            >> beam.Map(lambda d: audit_dead_letter(d, _now())).with_output_types(AuditRecord),
        )


def flatten_audit(parts: tuple[beam.PCollection, ...], label: str) -> beam.PCollection:
    """The audit parts of ``RecordOutcomes`` (or ``CoreOutputs.audit``) as one
    PCollection[AuditRecord], applied under ``label``."""
    parts = tuple(parts)
    if len(parts) == 1:
        return parts[0]
    return parts | label >> beam.Flatten().with_output_types(AuditRecord)
