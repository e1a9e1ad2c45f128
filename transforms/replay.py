"""Re-submit dead letters through the core transform: ``ReplayDeadLetters``.

For a fix that lets rejected inputs through (a parser fix, a new schema version, a wider clock
skew, a redaction engine that works again), the stored dead letters are run through the same
``AnalyzeEvents`` as the gateway's events, from their redacted payloads.

What happens to a dead letter:
  * Its payload was omitted (``payload_state`` ``omitted``: oversize input, or an engine that
    failed on the payload itself): it cannot be replayed. It is counted and reported
    (``not_replayable``), never skipped silently; the record stays where it is.
  * Otherwise its payload is re-submitted, once per original input: the store is at least once
    per ``dead_letter_id``, and a record that failed again in an earlier replay shares its
    original input's ``payload_sha256``, so the records of one input (by ``payload_sha256``) are
    submitted once, with the payload of the latest failure. Each replayable record gets a
    ``replayed`` audit record.
  * A submission is an input of its own, ``replay:<dead letter id>`` (of the record whose
    payload is submitted): its audit record never collides with the original input's, and
    submitting the same record again is the same input. It ends like any input: ``written``
    (to be archived), ``duplicate`` or ``duplicate_conflict`` (another copy of the event id is
    archived already: first archived wins, ``read_archived``), or dead-lettered again. A
    record that fails again keeps its original input's identity (``payload_sha256``,
    ``payload_bytes``), so its id is ``dead_letter_id(original input, step, new reason)`` and
    ``replay_of`` names the record replayed. Failing again the same way gives the id it
    already has: nothing new is stored. A new reason gives a new record.

Replaying twice therefore writes the same ids again: the same audit records (the audit log is
idempotent, one record per submission), the same dead letters, and the same archived events
(with ``read_archived``, a replayed event archived by the first replay is the same input
coming again: written again, to the same file). The metrics of the replayed events are left
to the reconciliation of their days (``pipelines.replay`` runs it): a metric row of the
replayed events alone would replace the window's complete row.

A replayed ``redaction_failed`` record becomes an event without text: its payload never held
the text (fail closed), so its data class comes from its policy flags alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam

from transforms.analyze import AnalyzeEvents, CoreConfig, CoreOutputs
from transforms.audit import DEAD_LETTERED, audit_dead_letter, audit_replay, flatten_audit
from transforms.deadletter import PAYLOAD_REDACTED, dead_letter_id
from transforms.elements import AuditRecord, DeadLetter, Message, event_micros

__all__ = [
    "ReplayDeadLetters",
    "ReplayOutputs",
    "choose_submission",
    "is_replayable",
    "pair_refailures",
    "rekey_refailure",
    "submission_id",
]

# A submission: the record whose payload is re-submitted, and the ids of every selected record
# of the same original input.
_Submission = tuple[DeadLetter, tuple[str, ...]]


def is_replayable(record: DeadLetter) -> bool:
    """Whether the record holds a payload to re-submit."""
    return record.payload_state == PAYLOAD_REDACTED and record.payload is not None


def choose_submission(records: Iterable[DeadLetter]) -> _Submission:
    """The record to re-submit among the records of one original input: the latest failure
    (then the larger id, so the choice is deterministic), with the ids of them all."""
    records = list(records)
    chosen = max(records, key=lambda r: (r.failed_at, r.dead_letter_id))
    return chosen, tuple(sorted({r.dead_letter_id for r in records}))


def submission_id(record: DeadLetter) -> str:
    """The input identity of the submission of ``record``'s payload."""
    return f"replay:{record.dead_letter_id}"


def _submission(submission: _Submission) -> Message:
    record = submission[0]
    return Message(record.payload.encode("utf-8"), submission_id(record), event_micros(_now()))


def payload_digest(payload: str) -> str:
    """What the core records as ``payload_sha256`` when ``payload`` is submitted."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def rekey_refailure(failed: DeadLetter, replayed: DeadLetter) -> DeadLetter:
    """``failed`` (the core's dead letter for ``replayed``'s payload) under the identity of
    ``replayed``'s original input, linked to ``replayed``."""
    return failed._replace(
        dead_letter_id=dead_letter_id(replayed.payload_sha256, failed.step, failed.reason),
        event_id=failed.event_id or replayed.event_id,
        request_id=failed.request_id or replayed.request_id,
        payload_sha256=replayed.payload_sha256,
        payload_bytes=replayed.payload_bytes,
        replay_of=replayed.dead_letter_id,
    )


def pair_refailures(
    submissions: list[_Submission], failures: list[DeadLetter]
) -> list[tuple[_Submission, DeadLetter]]:
    """Pairs the submissions of one payload with the core's dead letters for that payload.

    Two original inputs can redact to the same payload; each was submitted, and each that
    failed gave one dead letter. Submissions are taken by id and failures by (step, reason),
    so the pairing is deterministic; with identical payloads either pairing is right.
    """
    submissions = sorted(submissions, key=lambda s: s[0].dead_letter_id)
    failures = sorted(failures, key=lambda d: (d.step, d.reason, d.dead_letter_id))
    return list(zip(submissions, failures, strict=False))


def _rekey_group(element: tuple[str, dict[str, list]]):
    _, grouped = element
    for (replayed, group_ids), failed in pair_refailures(grouped["submitted"], grouped["failed"]):
        record = rekey_refailure(failed, replayed)
        # Failing again the same way gives an id the store already has: not written again.
        is_new = record.dead_letter_id not in group_ids
        yield record if is_new else beam.pvalue.TaggedOutput("known", record)


def _one_copy(records: Iterable[DeadLetter]) -> DeadLetter:
    # Copies of one id hold the same input, step and reason: prefer one with a payload.
    return max(records, key=lambda r: (is_replayable(r), r.failed_at))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReplayOutputs(NamedTuple):
    """What ``ReplayDeadLetters`` returns (see its docstring)."""

    events: beam.PCollection
    duplicates: beam.PCollection
    conflicts: beam.PCollection
    dead_letters: beam.PCollection
    failed_again: beam.PCollection
    audit: beam.PCollection
    outcomes: beam.PCollection
    submitted: beam.PCollection
    replayed: beam.PCollection
    not_replayable: beam.PCollection

    def core(self, pipeline: beam.Pipeline) -> CoreOutputs:
        """What the sinks write: the core's outputs without metrics or usage (the
        reconciliation of the replayed days writes those)."""
        return CoreOutputs(
            events=self.events,
            duplicates=self.duplicates,
            metrics=pipeline | "NoMetrics" >> beam.Create([]),
            audit=(self.audit,),
            dead_letters=self.dead_letters,
            usage=pipeline | "NoUsage" >> beam.Create([]),
            metric_dead_letters=pipeline | "NoMetricDeadLetters" >> beam.Create([]),
            conflicts=self.conflicts,
        )


class ReplayDeadLetters(beam.PTransform):
    """Re-submits the replayable dead letters whose reason starts with ``reason_prefix``.

    Input: PCollection[DeadLetter], bounded (the records of a date range, duplicates of an id
    allowed). Returns ``ReplayOutputs``, PCollections:
      ``events``, ``duplicates``, ``conflicts``: as ``AnalyzeEvents`` returns them (events to
        archive);
      ``dead_letters``: ``DeadLetter`` records that failed again for a new reason (to store);
      ``failed_again``: every submission that failed again (new reason or not), rekeyed;
      ``audit``: ``AuditRecord`` for the sinks: one per submission (written, duplicate or
        dead_lettered) and one ``replayed`` per replayable record;
      ``outcomes``: the same without the ``replayed`` records (one per submission);
      ``submitted``: the payloads submitted (``Message``: the payload and the submission's
        identity ``replay:<dead letter id>``), one per original input;
      ``replayed``: the replayable records selected (distinct ids);
      ``not_replayable``: the selected records without a payload (distinct ids).

    Args:
      config: the core configuration the payloads are processed with.
      reason_prefix: a reason (``event_time_in_future``) or a prefix of reasons
        (``missing_field:``, ``redaction_failed``); required, not empty.
      read_archived: as ``AnalyzeEvents``' (None: the archive is not consulted, and a replayed
        event already archived by another input is written again).
    """

    def __init__(
        self,
        config: CoreConfig,
        reason_prefix: str,
        read_archived: beam.PTransform | None = None,
    ):
        super().__init__()
        if not reason_prefix:
            raise ValueError("reason_prefix must name a reason or a prefix of reasons")
        self._config = config
        self._reason_prefix = reason_prefix
        self._read_archived = read_archived

    def expand(self, dead_letters):
        prefix = self._reason_prefix
        distinct = (
            dead_letters
            | "SelectReason" >> beam.Filter(lambda d: d.reason.startswith(prefix))
            | "KeyById" >> beam.Map(lambda d: (d.dead_letter_id, d))
            | "DistinctIds" >> beam.CombinePerKey(_one_copy)
            | "Records" >> beam.Values().with_output_types(DeadLetter)
        )
        replayable, not_replayable = distinct | "SplitByPayload" >> beam.Partition(
            lambda d, _: 0 if is_replayable(d) else 1, 2
        )
        submissions = (
            replayable
            | "KeyByInput" >> beam.Map(lambda d: (d.payload_sha256, d))
            | "GroupByInput" >> beam.GroupByKey()
            | "ChooseSubmission" >> beam.MapTuple(lambda _, records: choose_submission(records))
        )
        payloads = submissions | "Payloads" >> beam.Map(_submission).with_output_types(Message)
        core = payloads | "AnalyzeEvents" >> AnalyzeEvents(
            self._config, input_format="replay", read_archived=self._read_archived
        )
        rekeyed = (
            {
                "submitted": submissions
                | "KeyByPayload" >> beam.Map(lambda s: (payload_digest(s[0].payload), s)),
                "failed": core.dead_letters
                | "KeyFailuresByPayload" >> beam.Map(lambda d: (d.payload_sha256, d)),
            }
            | "JoinFailures" >> beam.CoGroupByKey()
            | "RekeyFailures"
            >> beam.FlatMap(_rekey_group)
            .with_output_types(DeadLetter)
            .with_outputs("known", main="new")
        )
        failed_again = (
            rekeyed.new,
            rekeyed.known,
        ) | "FailedAgain" >> beam.Flatten().with_output_types(DeadLetter)
        outcomes = (
            flatten_audit(core.audit, "FlattenCoreAudit")
            # The core's dead_lettered records name the ids before rekeying; these replace them.
            | "ProcessedOutcomes" >> beam.Filter(lambda a: a.outcome != DEAD_LETTERED),
            failed_again
            # The submission's record (keyed by its input, replay:<dead letter id>), naming the
            # rekeyed dead letter.
            | "AuditFailedAgain"
            >> beam.Map(lambda d: audit_dead_letter(d, _now())).with_output_types(AuditRecord),
        ) | "FlattenOutcomes" >> beam.Flatten().with_output_types(AuditRecord)
        replayed_audit = replayable | "AuditReplayed" >> beam.Map(
            lambda d: audit_replay(d, _now())
        ).with_output_types(AuditRecord)
        return ReplayOutputs(
            events=core.events,
            duplicates=core.duplicates,
            conflicts=core.conflicts,
            dead_letters=rekeyed.new,
            failed_again=failed_again,
            audit=(outcomes, replayed_audit)
            | "FlattenAudit" >> beam.Flatten().with_output_types(AuditRecord),
            outcomes=outcomes,
            submitted=payloads,
            replayed=replayable,
            not_replayable=not_replayable,
        )
