"""Commit notifications: a sink says which records it has just committed.

The embedded writers call ``notify_committed`` after each durable write: the Avro file writer
(raw archive, dead letters) once a file is in place under its final name, the embedded table
writer (``audit_log``, ``metrics_minute``) once a transaction has committed. Nothing listens by
default, so on Dataflow and in batch this is one check of an empty list per write.

Who listens: the local Pub/Sub source (``pipelines.local.pubsub``) installs a listener for the
length of a local run, and acknowledges a message once every output of it is committed. It
runs in the same process as the sinks (the local streaming runner is one process); nothing
here imports ``pipelines.local``.

Output names: the schema of the records for the file writers (``redacted_event``,
``dead_letter``), the table name for the table writer (``audit_log``, ``metrics_minute``).
A listener must be quick and must not raise: it runs in the sink's thread, after the commit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["Listener", "listening", "notify_committed"]

Listener = Callable[[str, Sequence[Any]], None]
"""Called with the output's name and the records committed to it."""

_LISTENERS: tuple[Listener, ...] = ()
_LOCK = threading.Lock()


def notify_committed(output: str, records: Sequence[Any]) -> None:
    """Tells the listeners that ``records`` are committed to ``output`` (none: nothing)."""
    for listener in _LISTENERS:
        listener(output, records)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Installs ``listener`` for the block (process-global: every sink of this process)."""
    global _LISTENERS
    with _LOCK:
        _LISTENERS = (*_LISTENERS, listener)
    try:
        yield
    finally:
        with _LOCK:
            _LISTENERS = tuple(installed for installed in _LISTENERS if installed is not listener)
