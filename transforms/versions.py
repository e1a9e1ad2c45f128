"""Versions of the input contract and schema drift: plain functions ``transforms.parse`` calls.

``schema_version`` is ``"MAJOR"`` or ``"MAJOR.MINOR"`` as a string, or ``MAJOR`` as an integer;
absent or null means ``1``. A minor version only ever adds optional fields, so every minor of
the major this pipeline reads (``CONTRACT_MAJOR``) is accepted, including minors newer than the
contract it was built with (``CONTRACT_VERSION``): their new fields are unknown here, dropped
and counted by name, never fatal. Another major is a different contract: it goes through its
converter (``CONVERTERS``: a function from a document of that major to a document of the
current one), or is rejected with reason ``unsupported_schema_version:<major>``, counted like
every dead-letter reason (counter ``dead_letter.unsupported_schema_version:<major>``, what the
alert on a gateway rollout watches). The version is stored as given, normalised (``1``,
``1.0``, ``1.1``, ``2.0``): a converted event keeps the version it arrived with.

Drift: the names of the fields a document carries that the contract does not know
(``drift_names``) are counted per name (counter ``schema_drift_field.<name>``) and per metrics
window (``metrics_minute.schema_drift_counts``, view ``schema_drift_daily``). Names are bounded:
a name outside ``[a-z0-9_]{1,64}`` counts as ``other`` (a field name can be anything a caller
sends, PII included), and at most ``MAX_DRIFT_NAMES`` names per event are kept, the rest
counting as ``other``. Names are data, never logged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from transforms.deadletter import InvalidEvent

__all__ = [
    "CONTRACT_MAJOR",
    "CONTRACT_VERSION",
    "CONVERTERS",
    "MAX_DRIFT_NAMES",
    "OTHER_FIELD",
    "SchemaVersion",
    "current_major_version",
    "drift_names",
    "schema_version_of",
    "to_current_major",
]

CONTRACT_MAJOR = 1
# The contract this code knows (schemas/avro/gateway_event.avsc, "version"); a test keeps them
# equal, and schemas/avro/history/gateway_event/ holds every earlier one.
CONTRACT_VERSION = "1.1"
MAX_DRIFT_NAMES = 8
OTHER_FIELD = "other"

# MAJOR (0-999) and an optional MINOR (0-99999), decimal without leading zeros: the reason of a
# rejected major names it, so majors are few, and a version is an identifier, not free text.
_VERSION = re.compile(r"(0|[1-9][0-9]{0,2})(?:\.(0|[1-9][0-9]{0,4}))?\Z")
_DRIFT_NAME = re.compile(r"[a-z0-9_]{1,64}\Z")
_VERSION_RULE = 'a string "MAJOR" or "MAJOR.MINOR" (MAJOR 0-999, MINOR 0-99999) or an integer'

# Major version -> converter of its documents to the current major's shape. Empty while no
# other major exists; a converter takes the decoded JSON object and returns one that the current
# contract validates (it may leave fields it cannot map: they are counted as drift).
Converter = Callable[[dict[str, Any]], dict[str, Any]]
CONVERTERS: dict[int, Converter] = {}


class SchemaVersion(NamedTuple):
    major: int
    text: str  # normalised: "1", "1.1", "2.0"


def current_major_version(value: object) -> str | None:
    """The normalised version when ``value`` is a canonical version of ``CONTRACT_MAJOR``
    (absent, ``1``, ``"1"``, ``"1.N"``); None otherwise (another major, or not a version: ask
    ``schema_version_of``). The parser's fast path, so no exception."""
    if value is None or value == 1 or value == "1":
        return "1"
    if type(value) is not str:
        return None
    match = _VERSION.match(value)
    if match is None or int(match.group(1)) != CONTRACT_MAJOR:
        return None
    return value


def schema_version_of(value: object) -> SchemaVersion:
    """The major and normalised text of a ``schema_version`` value.

    Raises ``InvalidEvent``: ``bad_type:schema_version`` (not a string or an integer; ``1.1``
    as a JSON number is one: it cannot tell minor 1 from minor 10) or
    ``bad_value:schema_version`` (outside the grammar). The major itself is not checked here.
    """
    if value is None:
        return SchemaVersion(CONTRACT_MAJOR, str(CONTRACT_MAJOR))
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidEvent("bad_type:schema_version", f"schema_version must be {_VERSION_RULE}")
    text = str(value)
    match = _VERSION.match(text)
    if match is None:
        raise InvalidEvent("bad_value:schema_version", f"schema_version must be {_VERSION_RULE}")
    return SchemaVersion(int(match.group(1)), text)


def to_current_major(
    version: SchemaVersion,
    document: dict[str, Any],
    converters: Mapping[int, Converter] | None = None,
) -> dict[str, Any]:
    """``document`` in the current major's shape: itself for the current major, else its
    major's converter's output. Raises ``InvalidEvent`` ``unsupported_schema_version:<major>``
    when no converter exists."""
    if version.major == CONTRACT_MAJOR:
        return document
    converter = (CONVERTERS if converters is None else converters).get(version.major)
    if converter is None:
        raise InvalidEvent(
            f"unsupported_schema_version:{version.major}",
            f"schema_version major {version.major} is not supported: this pipeline reads major "
            f"{CONTRACT_MAJOR} (any minor) and converts majors "
            f"{sorted(CONVERTERS) or 'none'}",
        )
    return converter(dict(document))


def drift_names(unknown: Iterable[str]) -> tuple[str, ...]:
    """The names to count for a document's unknown fields: sorted, each name as sent when it
    matches ``[a-z0-9_]{1,64}``, else ``other``; at most ``MAX_DRIFT_NAMES``, the last one
    ``other`` when there were more."""
    names = sorted({n if _DRIFT_NAME.match(n) else OTHER_FIELD for n in unknown})
    if len(names) <= MAX_DRIFT_NAMES:
        return tuple(names)
    kept = [n for n in names if n != OTHER_FIELD][: MAX_DRIFT_NAMES - 1]
    return (*kept, OTHER_FIELD)
