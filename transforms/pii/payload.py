"""Redaction of whole input payloads, for dead-letter records.

A rejected input is still kept (so it can be fixed and replayed), but only after the same
protections as a valid event: ``user_id`` becomes its pseudonym and every other string value goes
through the redaction engine. When the payload is not a JSON object the whole text goes through
the engine and anything shaped like a ``"user_id": "..."`` pair is pseudonymised. When that cannot
be done safely (oversize input, engine failure) the payload is omitted and only its hash and size
are kept: fail closed.

A dead-letter replay re-submits such payloads; when one fails again its payload is redacted
again with ``keep_pseudonyms``, so the user id, already a pseudonym, is kept as it is instead of
being pseudonymised twice (which would lose the link to the user).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from transforms.pii.engine import RedactionEngine, RedactionError
from transforms.pii.pseudonym import PSEUDONYM_FIELD, pseudonym_of, pseudonymize

__all__ = ["redact_payload"]

_USER_ID_FIELD = "user_id"
# A "user_id": "value" pair inside text that is not valid JSON (truncated, bad escapes, ...).
_USER_ID_PAIR = re.compile(r'("user_id"\s*:\s*")((?:[^"\\]|\\.)*)(")?')


def _collect_strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, out)


def _replace_strings(value: Any, redacted: list[str], position: list[int]) -> Any:
    if isinstance(value, str):
        text = redacted[position[0]]
        position[0] += 1
        return text
    if isinstance(value, dict):
        return {k: _replace_strings(v, redacted, position) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, redacted, position) for v in value]
    return value


def _redact_json(document: Any, engine: RedactionEngine, key: bytes, keep: bool) -> str:
    if isinstance(document, dict) and _USER_ID_FIELD in document:
        clear = document[_USER_ID_FIELD]
        if clear is not None and not (keep and pseudonym_of(clear)):
            document[_USER_ID_FIELD] = {PSEUDONYM_FIELD: pseudonymize(str(clear), key)}
    strings: list[str] = []
    _collect_strings(document, strings)
    redacted = [r.text for r in engine.redact(strings)] if strings else []
    return msgspec.json.encode(_replace_strings(document, redacted, [0])).decode("utf-8")


def _redact_text(raw: bytes, engine: RedactionEngine, key: bytes, keep: bool) -> str:
    text = raw.decode("utf-8", errors="replace")

    def pseudonymised(match: re.Match) -> str:
        if keep and pseudonym_of(match.group(2)) and match.group(3):
            return match.group(0)
        return f'{match.group(1)}{PSEUDONYM_FIELD}:{pseudonymize(match.group(2), key)}"'

    text = _USER_ID_PAIR.sub(pseudonymised, text)
    return engine.redact([text])[0].text


def redact_payload(
    raw: bytes,
    engine: RedactionEngine,
    key: bytes,
    *,
    max_bytes: int,
    keep_pseudonyms: bool = False,
) -> str | None:
    """Returns ``raw`` redacted for a dead-letter record, or None when it must be omitted.

    The pseudonymised user id is written as ``{"pseudonym": "<hex>"}`` in JSON payloads (and as
    ``pseudonym:<hex>`` in non-JSON text), so a replay can tell it from a clear id. With
    ``keep_pseudonyms`` (a replayed payload failing again) a user id already in one of these
    forms is kept; every other string still goes through the engine.
    """
    if len(raw) > max_bytes:
        return None
    try:
        try:
            document = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # not JSON, or nested beyond msgspec's limit
            return _redact_text(raw, engine, key, keep_pseudonyms)
        return _redact_json(document, engine, key, keep_pseudonyms)
    except RedactionError:
        return None
