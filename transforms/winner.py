"""One winner per ``event_id``: which copy of an event is kept, and what the others are.

Plain functions, no Beam: every dedupe path (``transforms.dedupe``, ``transforms.copies``)
applies this one rule, so archive, audit and metrics agree on the copy kept. The rule
(``docs/adr/0013-one-winner-per-event-id.md``):

1. **First archived wins.** A copy already in the raw archive wins over every copy a later run
   reads. Among archived copies, the one processed first (``processed_at``), then the lowest
   input identity (``input_id``), wins: what a reconciliation counts.
2. **Within a run, the first copy delivered wins.** Streaming: the first copy to reach the
   dedupe state. Batch: the first in the input, by (file, byte offset). A dead-letter replay:
   the lowest input identity (``replay:<dead letter id>``). Never the event time: a forged
   copy with an earlier event time must not shadow the event it copies.
3. **The winning input is the same input when it comes again** (a re-run of a backfill over the
   same file, a Pub/Sub redelivery): it is written again, with the same outcome, never counted
   as a duplicate of itself. Batch paths check it by ``input_id``; the streaming dedupe keeps no
   input ids, and the audit log's precedence (``transforms.audit``) keeps ``written``.

Every other copy is a ``duplicate`` when its content (``content_digest``: what the gateway
reported) equals the winner's, else a ``duplicate_conflict``: audited and counted, neither
archived nor in the metrics.

A candidate is ``(rank, input_id, content)``: the lowest ``rank`` wins. Ranks are plain tuples
of the same shape, ``(tier, µs, text, offset)``, so they compare across kinds and code cheaply.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from transforms.audit import DUPLICATE, DUPLICATE_CONFLICT, WRITTEN
from transforms.elements import RedactedEvent, event_micros

__all__ = [
    "ARCHIVED",
    "ArchivedCopy",
    "Candidate",
    "archived_copy",
    "archived_rank",
    "content_digest",
    "copy_outcome",
    "input_rank",
    "line_rank",
    "run_candidate",
]

_CONTENT_DIGEST_BYTES = 8
# The tier of a rank: an archived copy (0) outranks every copy of the run (1).
ARCHIVED, IN_RUN = 0, 1

Rank = tuple[int, int, str, int]
Candidate = tuple[Rank, str, bytes]
"""``(rank, input_id, content digest)`` of one copy of an event: the lowest rank wins."""


class ArchivedCopy(NamedTuple):
    """What the dedupe needs of an archived copy of an event (``archived_copy``)."""

    event_id: str
    input_id: str
    processed_us: int  # processed_at, µs since the epoch
    content: bytes  # content_digest


def content_digest(event) -> bytes:
    """An 8-byte BLAKE2b digest of what the gateway reported about an event (a
    ``RedactedEvent``, or an ``Event`` whose ``user_key`` is set), the same in every process:
    two copies of an id with different digests carry different content.

    Left out: what this pipeline derived (redaction and classification results, the parse's
    counts, ``processed_at``), which may differ between two deliveries of one event without the
    event differing, where the event came from (``input_id``, ``ingested_at``), and the texts
    (redacted, so they change with the redaction, and long to hash on every event). ``repr`` of
    str, int, float, None and tuples of str is exact and stable; the event time goes in as µs
    since the epoch."""
    reported = (
        event.request_id,
        event.user_key,
        event_micros(event.event_time),
        event.schema_version,
        event.model,
        event.model_version,
        float(event.latency_ms),
        event.token_count,
        event.prompt_tokens,
        event.completion_tokens,
        tuple(event.policy_flags),
        event.region,
    )
    return hashlib.blake2b(
        repr(reported).encode("utf-8"), digest_size=_CONTENT_DIGEST_BYTES
    ).digest()


def archived_rank(processed_us: int, input_id: str) -> Rank:
    """Rank of an archived copy: first processed, then the lowest input identity."""
    return (ARCHIVED, processed_us, input_id, 0)


def line_rank(source: str, offset: int) -> Rank:
    """Rank of a line of this run's input: first file (by name), then first byte offset."""
    return (IN_RUN, 0, source, offset)


def input_rank(input_id: str) -> Rank:
    """Rank of an input of this run known by its identity only (a dead-letter replay's)."""
    return (IN_RUN, 0, input_id, 0)


def _archived_id(event: RedactedEvent) -> str:
    # Events archived before input identities existed have none: a stand-in that no input of a
    # later run can carry, so such a copy never counts as that input coming again.
    return event.input_id or f"archived:{event.event_id}"


def archived_copy(event: RedactedEvent) -> ArchivedCopy:
    """The ``ArchivedCopy`` of an event read back from the archive."""
    return ArchivedCopy(
        event.event_id,
        _archived_id(event),
        event_micros(event.processed_at),
        content_digest(event),
    )


def run_candidate(event: RedactedEvent, archived: bool) -> Candidate:
    """The candidate of an event of this run: an archived copy (``archived``: the run reads the
    archive, as a reconciliation does) or an input identified by its ``input_id``."""
    if archived:
        copy = archived_copy(event)
        return archived_rank(copy.processed_us, copy.input_id), copy.input_id, copy.content
    input_id = event.input_id or ""
    return input_rank(input_id), input_id, content_digest(event)


def copy_outcome(input_id: str | None, content: bytes, winner: tuple[str, bytes]) -> str:
    """What a copy is against the winner ``(input_id, content)`` of its event id: ``written``
    (it is the winning input), ``duplicate`` (same content) or ``duplicate_conflict``."""
    winner_input, winner_content = winner
    if input_id is not None and input_id == winner_input:
        return WRITTEN
    return DUPLICATE if content == winner_content else DUPLICATE_CONFLICT
