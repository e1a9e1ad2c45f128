"""The one dead-letter contract of the pipeline.

Every step that can reject an input raises (or is given) an ``InvalidEvent`` carrying a
machine-readable ``reason`` and a message that names fields and limits, never values. The step's
DoFn turns it into a ``DeadLetter`` record (``schemas/avro/dead_letter.avsc``) on the output
tagged ``DEAD_LETTER_TAG`` and increments the counter ``dead_letter.<reason family>``.

Which errors are routed where (docs/adr/0015-element-errors-become-dead-letters.md):

* the contract's rejections (``InvalidEvent``; ``RedactionError`` in the redaction step) get
  their own reasons;
* any other error that one element's data causes in a per-element step (``is_element_error``:
  a deterministic error, which a retry of the bundle would meet again) becomes a dead letter
  ``internal_error:<step>`` (``internal_error_letter``): the message names the error type, never
  its text (which may quote values), and the payload is redacted or omitted;
* errors of the environment (``is_element_error`` is False: I/O and connections, memory, the
  service clients' errors) are not the element's: they keep their bounded retries where a sink
  has them, then fail the bundle, which the runner retries. Nothing is dropped by a catch-all.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import sys
from typing import Any, NamedTuple

from apache_beam.metrics import Metrics

from transforms.elements import DeadLetter, RedactedEvent, to_record
from transforms.pii.pseudonym import PSEUDONYM_FIELD

__all__ = [
    "DEAD_LETTER_TAG",
    "INTERNAL_ERROR",
    "METRICS_NAMESPACE",
    "PAYLOAD_OMITTED",
    "PAYLOAD_REDACTED",
    "InvalidEvent",
    "count_dead_letter",
    "dead_letter_id",
    "internal_error_letter",
    "internal_error_of",
    "internal_error_reason",
    "is_element_error",
    "make_dead_letter",
    "record_json",
    "redacted_event_payload",
    "storable_dead_letter",
    "storable_text",
]

DEAD_LETTER_TAG = "dead_letter"
METRICS_NAMESPACE = "genai"
PAYLOAD_REDACTED = "redacted"
PAYLOAD_OMITTED = "omitted"
_SURROGATE = re.compile("[\ud800-\udfff]")
# The reason family of an unexpected, deterministic error of one element: internal_error:<step>.
INTERNAL_ERROR = "internal_error"

# Errors of the environment, not of an element: I/O, connections and timeouts (OSError and its
# subclasses, which include requests' and Beam's I/O errors), memory.
_ENVIRONMENT_ERRORS = (OSError, MemoryError)
# ...and the errors of the service clients, named by module so that none of them is imported
# here (an error of a module that was never imported cannot be raised).
_SERVICE_ERRORS = (
    ("google.api_core.exceptions", "GoogleAPIError"),
    ("google.auth.exceptions", "GoogleAuthError"),
    ("grpc", "RpcError"),
    ("transforms.pii.dlp_client", "DlpServiceError"),
    ("psycopg", "OperationalError"),
    ("psycopg", "InterfaceError"),
    ("sqlite3", "OperationalError"),
    ("duckdb", "IOException"),
    ("duckdb", "TransactionException"),
)


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


def internal_error_reason(step: str) -> str:
    """The reason of an unexpected error of one element in ``step``: ``internal_error:<step>``."""
    return f"{INTERNAL_ERROR}:{step}"


def is_element_error(error: BaseException) -> bool:
    """Whether ``error`` is one element's own: any ``Exception`` but the environment's.

    The environment's are I/O and connection errors (``OSError``), ``MemoryError`` and the
    errors of the service clients (Google API, auth and gRPC errors, ``DlpServiceError``,
    PostgreSQL, SQLite and DuckDB operational errors). A retry may cure those, so they keep
    the bundle's retries (or a sink's own); an element's error would only come back.
    """
    if not isinstance(error, Exception) or isinstance(error, _ENVIRONMENT_ERRORS):
        return False
    for module_name, class_name in _SERVICE_ERRORS:
        service_error = getattr(sys.modules.get(module_name), class_name, None)
        if service_error is not None and isinstance(error, service_error):
            return False
    return True


def storable_text(text: str | None) -> str | None:
    """``text`` as valid Unicode: lone surrogates (which UTF-8 cannot encode, so no sink can
    store them) become U+FFFD. Any other text is returned as it is."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


_STORABLE_FIELDS = ("event_id", "request_id", "reason", "error_type", "error_message", "step")


def storable_dead_letter(letter: DeadLetter) -> DeadLetter:
    """``letter`` as every sink can store it: its text fields as valid Unicode
    (``storable_text``), and its payload omitted when it cannot be stored as it is. The id,
    reason family, hash and size are kept, so the record still accounts for its input. Dead
    letters have nowhere further to go, so their writers store this form of a record that
    fails to encode instead of failing the bundle."""
    fixed = {name: storable_text(getattr(letter, name)) for name in _STORABLE_FIELDS}
    payload = _storable_payload(letter.payload)
    fixed["input_id"] = storable_text(letter.input_id)
    fixed["replay_of"] = storable_text(letter.replay_of)
    return letter._replace(
        **fixed,
        payload=payload,
        payload_state=PAYLOAD_OMITTED if payload is None else letter.payload_state,
    )


def _storable_payload(payload: str | None) -> str | None:
    # A payload is kept as it is or not at all (a repaired payload would not be the input's).
    return payload if storable_text(payload) is payload else None


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def record_json(element: NamedTuple) -> str:
    """``element`` as compact JSON (times ISO 8601, bytes base64, keys in field order). ASCII:
    every non-ASCII character, a lone surrogate included, is escaped, so any text is
    storable."""
    return json.dumps(to_record(element), default=_json_default, separators=(",", ":"))


# What this pipeline derived from an input, left out of the payload of a redacted event (the
# payload is shaped like an input, so a dead-letter replay can submit it once fixed).
_DERIVED_FIELDS = (
    "user_key",
    "event_date",
    "data_class",
    "redaction_counts",
    "unknown_field_count",
    "redaction_engine",
    "policy_version",
    "processed_at",
    "input_id",
    "ingested_at",
)


def redacted_event_payload(event: RedactedEvent) -> str:
    """The dead-letter payload of an event that failed after redaction: shaped like an input
    (redacted texts, the user id as its pseudonym ``{"pseudonym": ...}``, none of the fields
    the pipeline derives), as ASCII JSON. A dead-letter replay can re-submit it."""
    document = to_record(event)
    for name in _DERIVED_FIELDS:
        document.pop(name, None)
    document["user_id"] = {PSEUDONYM_FIELD: event.user_key}
    return json.dumps(document, default=_json_default, separators=(",", ":"))


def internal_error_letter(
    *,
    step: str,
    error: BaseException,
    failed_at: dt.datetime,
    payload: str | None,
    identity: bytes,
    event_id: str | None = None,
    request_id: str | None = None,
    input_id: str | None = None,
    input_sha256: str | None = None,
) -> DeadLetter:
    """The dead letter of an unexpected error ``error`` of one element in ``step``
    (``internal_error:<step>``). Its message names the step and the error type only: an
    error's own text may quote the values that caused it.

    ``payload``: the element, already redacted, or None (omitted); ``identity``: the bytes its
    ``payload_sha256`` and so its ``dead_letter_id`` come from (the input's own bytes where the
    step has them), so the same element failing the same way gets the same id.
    """
    return make_dead_letter(
        raw=identity,
        reason=internal_error_reason(step),
        error_type=type(error).__name__,
        error_message=f"{step}: unexpected {type(error).__name__} on this element "
        "(its message is not kept: it may quote values)",
        step=step,
        payload=_storable_payload(payload),
        failed_at=failed_at,
        event_id=storable_text(event_id),
        request_id=storable_text(request_id),
        input_sha256=input_sha256,
        input_id=storable_text(input_id),
    )


def internal_error_of(
    step: str, element: Any, error: BaseException, failed_at: dt.datetime | None = None
) -> DeadLetter:
    """The ``internal_error:<step>`` dead letter of a typed element (an event, a row, a record)
    that ``step`` could not handle, counted. Payload: a ``RedactedEvent`` as an input
    (``redacted_event_payload``), anything else as JSON (``record_json``); omitted when even
    that fails. Its ids are the element's ``event_id``, ``request_id`` and ``input_id``."""
    try:
        payload = (
            redacted_event_payload(element)
            if isinstance(element, RedactedEvent)
            else record_json(element)
        )
        identity = payload.encode("ascii")
    except Exception as payload_error:
        if not is_element_error(payload_error):
            raise
        payload, identity = None, repr(element).encode("utf-8", "surrogatepass")
    letter = internal_error_letter(
        step=step,
        error=error,
        failed_at=failed_at or dt.datetime.now(dt.UTC),
        payload=payload,
        identity=identity,
        event_id=getattr(element, "event_id", None),
        request_id=getattr(element, "request_id", None),
        input_id=getattr(element, "input_id", None),
    )
    count_dead_letter(letter.reason)
    return letter
