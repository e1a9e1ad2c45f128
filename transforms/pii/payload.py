"""Redaction of whole input payloads, for dead-letter records.

A rejected input is still kept (so it can be fixed and replayed), but only after the same
protections as a valid event, whatever its shape:

* **JSON** (any value, at any depth): every object key, every string and every integer goes
  through the redaction engine in one call (a key holding an e-mail address becomes
  ``[EMAIL_ADDRESS]``; keys that collide after redaction get ``#2``, ``#3`` …); the value of a
  user-id key is replaced by its keyed pseudonym, ``{"pseudonym": "<hex>"}`` (a string or an
  integer; in an object or array under such a key, every string and integer). User-id keys are
  recognised in any common spelling: once lower-cased without ``_``, ``-``, ``.`` and spaces,
  ``userid``, ``uid``, ``user``, ``username`` or ``enduserid`` (so ``user_id``, ``userId``,
  ``USER_ID``, ``user-id``, ``User ID``). The walk is iterative: no depth makes it recurse.
* **Not JSON but UTF-8** (truncated, bad escapes, deeper than the decoder's limit of about a
  thousand levels, form-encoded): kept only as redacted text. Each ``<user-id key>: <value>``
  or ``<user-id key>=<value>`` pair (quoted or not) first has its value replaced by
  ``pseudonym:<hex>``, then the whole text goes through the engine.
* **Not UTF-8**: omitted. A decoder that replaces invalid bytes would keep what the engine
  cannot read (UTF-16 text, say) in the clear.

A field named in ``withhold`` (a contract field whose value failed its grammar or type:
``bad_value:region``) has its value replaced by ``[WITHHELD]`` in a JSON object: a value that
fits no rule may be anything, including what no detector recognises.

When the payload cannot be redacted safely (oversize input, engine failure, a structure the
encoder cannot write back) it is omitted and only its hash and size are kept: fail closed.

A dead-letter replay re-submits such payloads; when one fails again its payload is redacted
again with ``keep_pseudonyms``, so a user id already in pseudonym form is kept as it is instead
of being pseudonymised twice (which would lose the link to the user).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import msgspec

from transforms.pii.engine import RedactionEngine, RedactionError
from transforms.pii.pseudonym import PSEUDONYM_FIELD, pseudonym_of, pseudonymize

__all__ = ["USER_ID_KEYS", "WITHHELD", "is_user_id_key", "redact_payload"]

WITHHELD = "[WITHHELD]"

# Keys whose value is a user id, once normalised by ``_normal_key``.
USER_ID_KEYS = frozenset(("userid", "uid", "user", "username", "enduserid"))
_KEY_NOISE = re.compile(r"[\s_.\-]")

# A "<user-id key>: <value>" (or "=") pair inside text that is not valid JSON: the key quoted
# or not, the value a quoted string (possibly truncated) or a bare token.
_USER_ID_PAIR = re.compile(
    r"""(?<![A-Za-z0-9_])(?P<key>(?P<kq>["']?)(?i:user[\s_.\-]?id|uid|user|user[\s_.\-]?name|end[\s_.\-]?user"""
    r"""[\s_.\-]?id)(?P=kq))(?P<sep>\s*[:=]\s*)"""
    r"""(?:(?P<q>["'])(?P<quoted>(?:[^"'\\]|\\.)*)(?P=q)?|(?P<bare>[^\s,;&}\]"'<>]+))""",
)


def _normal_key(key: str) -> str:
    return _KEY_NOISE.sub("", key).lower()


def is_user_id_key(key: str) -> bool:
    """Whether an object key names a user id (see the module docstring)."""
    return _normal_key(key) in USER_ID_KEYS


def _pseudonym(value: str | int, key: bytes, keep: bool) -> Any:
    if keep and pseudonym_of(value):
        return value
    return {PSEUDONYM_FIELD: pseudonymize(str(value), key)}


def _is_scanned(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _walk(document: Any, keep: bool):
    """Every container of ``document`` with whether it is under a user-id key, iteratively;
    with ``keep``, not into a pseudonym object under a user-id key (it is kept as it is)."""
    stack = [(document, False)]
    while stack:
        container, under_user = stack.pop()
        yield container, under_user
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for name, value in items:
            if isinstance(value, dict | list):
                user = under_user or (isinstance(name, str) and is_user_id_key(name))
                if not (user and keep and pseudonym_of(value)):
                    stack.append((value, user))


def _redact_json(document: Any, engine: RedactionEngine, key: bytes, keep: bool) -> str:
    if not isinstance(document, dict | list):
        document = [document]  # a bare scalar: redacted as a one-element array, written back
        unwrap = True
    else:
        unwrap = False
    containers = list(_walk(document, keep))
    # One engine call for every key, string and integer outside the user ids (deduplicated).
    scanned: dict[str, str] = {}
    for container, under_user in containers:
        if isinstance(container, dict):
            for name, value in container.items():
                scanned.setdefault(name, name)
                if not (under_user or is_user_id_key(name)) and _is_scanned(value):
                    scanned.setdefault(str(value), str(value))
        elif not under_user:
            for value in container:
                if _is_scanned(value):
                    scanned.setdefault(str(value), str(value))
    texts = list(scanned)
    for text, redaction in zip(texts, engine.redact(texts) if texts else [], strict=True):
        scanned[text] = redaction.text

    def value_of(value: Any, user: bool) -> Any:
        if not _is_scanned(value):
            return value  # containers are rewritten in place; bool, float, None as they are
        if user:
            return _pseudonym(value, key, keep)
        redacted = scanned[str(value)]
        return value if redacted == str(value) else redacted

    for container, under_user in containers:
        if isinstance(container, dict):
            items = list(container.items())
            container.clear()
            for name, value in items:
                user = under_user or is_user_id_key(name)
                if user and isinstance(value, dict) and keep and pseudonym_of(value):
                    new_value: Any = value
                else:
                    new_value = value_of(value, user)
                new_name, n = scanned[name], 1
                while new_name in container:  # two keys redacted to the same placeholder
                    n += 1
                    new_name = f"{scanned[name]}#{n}"
                container[new_name] = new_value
        else:
            container[:] = [value_of(value, under_user) for value in container]
    return msgspec.json.encode(document[0] if unwrap else document).decode("utf-8")


def _redact_text(text: str, engine: RedactionEngine, key: bytes, keep: bool) -> str:
    def pseudonymised(match: re.Match[str]) -> str:
        value = match.group("quoted") if match.group("q") else match.group("bare")
        if keep and pseudonym_of(value):
            return match.group(0)
        quote = match.group("q") or '"'
        return (
            f"{match.group('key')}{match.group('sep')}"
            f"{quote}{PSEUDONYM_FIELD}:{pseudonymize(value, key)}{quote}"
        )

    return engine.redact([_USER_ID_PAIR.sub(pseudonymised, text)])[0].text


def redact_payload(
    raw: bytes,
    engine: RedactionEngine,
    key: bytes,
    *,
    max_bytes: int,
    keep_pseudonyms: bool = False,
    withhold: Collection[str] = (),
) -> str | None:
    """Returns ``raw`` redacted for a dead-letter record, or None when it must be omitted.

    ``withhold``: top-level fields of a JSON object whose values are replaced by ``WITHHELD``.

    The pseudonymised user id is written as ``{"pseudonym": "<hex>"}`` in JSON payloads (and as
    ``pseudonym:<hex>`` in non-JSON text), so a replay can tell it from a clear id. With
    ``keep_pseudonyms`` (a replayed payload failing again) a user id already in one of these
    forms is kept; every other string still goes through the engine.
    """
    if len(raw) > max_bytes:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        try:
            document = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # not JSON, or nested beyond msgspec's limit
            return _redact_text(text, engine, key, keep_pseudonyms)
        if isinstance(document, dict):
            for name in withhold:
                if name in document:
                    document[name] = WITHHELD
        try:
            return _redact_json(document, engine, key, keep_pseudonyms)
        except RecursionError:  # the encoder's own limit: write it back as redacted text
            return _redact_text(text, engine, key, keep_pseudonyms)
    except RedactionError:
        return None
