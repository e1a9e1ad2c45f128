"""Which Pub/Sub messages a local run may acknowledge: ``AckLedger``.

A message is acknowledged only once every output it has is committed (at least once: a run
killed before that leaves it unacknowledged, and Pub/Sub delivers it again):

* its audit record (``audit_log``), which every input gets whatever its outcome; then
* for a ``written`` outcome, the archive file holding it (``redacted_event``), or a dead-letter
  file holding it if a sink turned it into a dead letter instead;
* for an input that was dead-lettered (its audit record names a ``dead_letter_id``), the
  dead-letter file holding it (``dead_letter``);
* nothing more for any other outcome (a duplicate is audited, not archived).

The records carry the input's identity (``input_id``, ``pubsub:<message id>``), which is how
the sinks' commit notifications (``pipelines.io.sinks.commits``) find their message. Metrics
are not waited for: they are a function of the archive, which the reconciliation backfill
recomputes them from (``docs/reliability.md``).

Redeliveries are settled here, not in the pipeline, as Dataflow does by message id: a message
delivered again while its first delivery is in flight is held (not emitted again) and
acknowledged with it; one delivered again after it was acknowledged (a lost acknowledgement)
within ``acked_ttl_s`` is acknowledged at once. Older redeliveries reach the pipeline, whose
dedupe by event id keeps them out of the archive and the metrics.

Plain logic, no client: a message is anything with ``ack()`` and ``nack()``. Thread-safe (the
subscriber's callback and the sinks call it from their own threads).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["ARCHIVE", "AUDIT", "DEAD_LETTERS", "AckLedger", "AckStats", "needs_of"]

AUDIT = "audit_log"
ARCHIVE = "redacted_event"
DEAD_LETTERS = "dead_letter"
_WRITTEN = "written"
_NOTHING: frozenset[str] = frozenset()
_STORED = frozenset({ARCHIVE, DEAD_LETTERS})
_DEAD_LETTERED = frozenset({DEAD_LETTERS})


class Handle(Protocol):
    """A delivery of a message (``google.cloud.pubsub_v1.subscriber.message.Message``)."""

    def ack(self) -> None: ...

    def nack(self) -> None: ...


def needs_of(audit_record: Any) -> frozenset[str]:
    """The outputs besides the audit log one of which must hold an input before its message
    is acknowledged, from its audit record (see the module docstring)."""
    if audit_record.outcome == _WRITTEN:
        return _STORED
    if audit_record.dead_letter_id is not None:
        return _DEAD_LETTERED
    return _NOTHING


class AckStats(NamedTuple):
    """Counts since the ledger was made: ``messages`` emitted into the pipeline,
    ``redelivered`` deliveries of a message in flight (held), ``redelivered_after_ack``
    deliveries of a message already acknowledged (acknowledged at once), ``acknowledged``
    messages, ``in_flight`` messages emitted and not yet acknowledged, ``released`` messages
    given back (``release``: emitted and not acknowledged, or refused once intake closed)."""

    messages: int
    redelivered: int
    redelivered_after_ack: int
    acknowledged: int
    in_flight: int
    released: int


class _InFlight:
    __slots__ = ("committed", "handles", "needs")

    def __init__(self, handle: Handle):
        self.handles = [handle]
        self.committed: set[str] = set()
        self.needs: frozenset[str] | None = None  # None: the audit record is not committed yet

    def done(self) -> bool:
        needs = self.needs
        return needs is not None and (not needs or not needs.isdisjoint(self.committed))


class AckLedger:
    """Tracks the messages a run has emitted until their outputs are committed.

    Args:
        acked_ttl_s: how long an acknowledged message's id is remembered, to acknowledge a
            redelivery of it at once (an acknowledgement lost on the way).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, acked_ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic):
        if acked_ttl_s < 0:
            raise ValueError("acked_ttl_s must be >= 0")
        self._acked_ttl_s = acked_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight: dict[str, _InFlight] = {}
        self._acked: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._refused: list[Handle] = []
        self._open = True
        self._counts = collections.Counter()

    def received(self, input_id: str, handle: Handle) -> bool:
        """Registers a delivery; True when it is new and goes into the pipeline, False when it
        is a redelivery (held with its first delivery, or acknowledged at once) or when intake
        is closed (``close``: held, and given back by ``release``)."""
        with self._lock:
            self._forget_old_acks()
            pending = self._in_flight.get(input_id)
            if pending is not None:
                pending.handles.append(handle)
                self._counts["redelivered"] += 1
                return False
            if input_id not in self._acked:
                if not self._open:
                    self._refused.append(handle)
                    return False
                self._in_flight[input_id] = _InFlight(handle)
                self._counts["messages"] += 1
                return True
            self._counts["redelivered_after_ack"] += 1
        handle.ack()
        return False

    def close(self) -> None:
        """Closes intake: from now on a new message is not taken (``received`` is False and
        ``release`` gives it back); messages in flight still complete."""
        with self._lock:
            self._open = False

    def committed(self, output: str, records: Sequence[Any]) -> None:
        """A sink's commit notification (``pipelines.io.sinks.commits``): acknowledges the
        messages whose outputs are now all committed. Records of other inputs are ignored."""
        done: list[Handle] = []
        is_audit = output == AUDIT
        if not is_audit and output not in _STORED:
            return
        with self._lock:
            in_flight = self._in_flight
            for record in records:
                pending = in_flight.get(record.input_id)
                if pending is None:
                    continue
                if is_audit:
                    pending.needs = needs_of(record)
                else:
                    pending.committed.add(output)
                if pending.done():
                    del in_flight[record.input_id]
                    self._acked[record.input_id] = self._clock()
                    done += pending.handles
                    self._counts["acknowledged"] += 1
        for handle in done:
            handle.ack()

    def release(self) -> int:
        """Closes intake and gives back every message in flight and every one refused
        (``nack``: Pub/Sub delivers it again at once, to the next run); returns how many were
        in flight. For the end of a run."""
        with self._lock:
            self._open = False
            pending = list(self._in_flight.values())
            self._in_flight.clear()
            handles = [h for entry in pending for h in entry.handles] + self._refused
            self._refused = []
            self._counts["released"] += len(pending)
        for handle in handles:
            handle.nack()
        return len(pending)

    def stats(self) -> AckStats:
        with self._lock:
            counts = self._counts
            return AckStats(
                counts["messages"],
                counts["redelivered"],
                counts["redelivered_after_ack"],
                counts["acknowledged"],
                len(self._in_flight),
                counts["released"],
            )

    def _forget_old_acks(self) -> None:
        cutoff = self._clock() - self._acked_ttl_s
        acked = self._acked
        while acked:
            input_id, at = next(iter(acked.items()))
            if at > cutoff:
                break
            del acked[input_id]
