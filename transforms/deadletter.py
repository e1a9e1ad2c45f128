"""The one dead-letter contract of the pipeline.

Every step that can reject an input raises (or is given) an ``InvalidEvent`` carrying a
machine-readable ``reason`` and a message that names fields and limits, never values. The step's
DoFn turns it into a ``DeadLetter`` record (``schemas/avro/dead_letter.avsc``) on the output
tagged ``DEAD_LETTER_TAG`` and increments the counter ``dead_letter.<reason family>``. Only
``InvalidEvent`` (and, in the redaction step, ``RedactionError``) is routed; any other exception
fails the bundle, which the runner retries, so nothing is dropped by a catch-all.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from apache_beam.metrics import Metrics

from transforms.elements import DeadLetter

__all__ = [
    "DEAD_LETTER_TAG",
    "METRICS_NAMESPACE",
    "PAYLOAD_OMITTED",
    "PAYLOAD_REDACTED",
    "InvalidEvent",
    "count_dead_letter",
    "dead_letter_id",
    "make_dead_letter",
]

DEAD_LETTER_TAG = "dead_letter"
METRICS_NAMESPACE = "genai"
PAYLOAD_REDACTED = "redacted"
PAYLOAD_OMITTED = "omitted"


class InvalidEvent(Exception):
    """An input the contract rejects. ``reason`` is machine-readable (``missing_field:user_id``).

    The message must never contain input values: it ends up in logs and dead-letter records.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def dead_letter_id(payload_sha256: str, step: str, reason: str) -> str:
    """The deterministic id of a dead letter: the same input failing the same way, same id."""
    return hashlib.sha256(f"{payload_sha256}|{step}|{reason}".encode()).hexdigest()


def make_dead_letter(
    *,
    raw: bytes,
    reason: str,
    error_type: str,
    error_message: str,
    step: str,
    payload: str | None,
    failed_at: dt.datetime,
    event_id: str | None = None,
    request_id: str | None = None,
    input_sha256: str | None = None,
    input_id: str | None = None,
) -> DeadLetter:
    """Builds a dead-letter record. ``payload`` must already be redacted (or None).

    ``input_sha256`` overrides the hash of ``raw`` when the step knows the input's own hash
    (a replayed payload that failed after parsing).
    """
    payload_sha256 = input_sha256 or hashlib.sha256(raw).hexdigest()
    return DeadLetter(
        dead_letter_id=dead_letter_id(payload_sha256, step, reason),
        event_id=event_id,
        request_id=request_id,
        reason=reason,
        error_type=error_type,
        error_message=error_message,
        step=step,
        failed_at=failed_at,
        payload=payload,
        payload_state=PAYLOAD_OMITTED if payload is None else PAYLOAD_REDACTED,
        payload_sha256=payload_sha256,
        payload_bytes=len(raw),
        input_id=input_id,
    )


def count_dead_letter(reason: str) -> None:
    """Increments the Beam counter for ``reason``'s family (``missing_field:x`` -> per field)."""
    Metrics.counter(METRICS_NAMESPACE, f"dead_letter.{reason}").inc()
