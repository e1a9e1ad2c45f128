"""``RecordingSink``: a fake of this project's own ``BatchSink`` interface (not of a Google API)
that fails on purpose, to show what the retry and dead-letter machinery of the Google Cloud
sinks does."""

from __future__ import annotations

import threading
from typing import ClassVar

from pipelines.io.sinks.batches import BatchSink, SinkRetry
from tests.support.sink_factories import audit_record

__all__ = ["FAST", "RecordingSink", "audit_records"]


FAST = SinkRetry(max_attempts=3, first_backoff_s=0.0, max_backoff_s=0.0)


class _Flaky(Exception):
    pass


class _Refused(Exception):
    pass


class RecordingSink(BatchSink):
    """Records batches in a class-level log (DoFns are copies); fails as scripted per batch:
    ``failures`` transient errors before each success, or always ``refuse`` / ``crash``, or for
    any batch holding a row whose event id starts with "bad": ``poison`` (its conversion
    fails) or ``refuse_poison`` (the service refuses the batch)."""

    name = "recording"
    step = "write_recording"
    written: ClassVar[dict[str, list[list[str]]]] = {}
    attempts: ClassVar[dict[str, int]] = {}
    _lock = threading.Lock()

    def __init__(self, token: str, failures: int = 0, mode: str = "flaky"):
        self._token, self._failures, self._mode = token, failures, mode
        with self._lock:
            self.written[token] = []
            self.attempts[token] = 0

    def write(self, batch):
        with self._lock:
            self.attempts[self._token] += 1
            if self._mode == "refuse":
                raise _Refused()
            if self._mode == "crash":
                raise KeyError("a bug")
            if self.unencodable(batch):  # a row it cannot convert, or the service refuses
                raise (
                    ValueError("a row cannot be encoded") if self._mode == "poison" else _Refused()
                )
            if self.attempts[self._token] % (self._failures + 1):
                raise _Flaky()
            self.written[self._token].append(sorted(r.audit_id for r in batch))

    def is_transient(self, error):
        return isinstance(error, _Flaky)

    def is_rejected(self, error):
        return isinstance(error, _Refused)

    def unencodable(self, batch):
        # Modes "poison" (the sink's own conversion fails) and "refuse_poison" (the service
        # refuses the batch): the rows whose event id starts with "bad" are the culprits.
        if self._mode not in ("poison", "refuse_poison"):
            return {}
        return {
            i: ValueError("bad row") for i, r in enumerate(batch) if r.event_id.startswith("bad")
        }


def audit_records(n: int) -> list:
    return [audit_record(event_id=f"evt-{i:03d}") for i in range(n)]
