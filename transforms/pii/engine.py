"""The redaction-engine interface shared by the offline engine and a Cloud DLP engine.

An engine takes a batch of free texts (LLM prompts and responses) and returns, for each
text in the same order, the text with every finding replaced by ``[INFO_TYPE]`` and the
number of findings per info type. It never returns, logs or raises with the matched
values: ``Redaction.counts`` holds numbers only, and ``RedactionError`` messages name the
failing element by position, never by content.

Engines fail closed: when a text cannot be redacted, ``redact`` raises ``RedactionError``
for the whole batch instead of returning that text unredacted. The caller decides where
the event goes (a dead-letter output), never the engine. Engines that call a service (Cloud
DLP) can also report failures per text with ``redact_partial``; ``redact_each`` gives every
engine that per-text form, so one failed request does not fail the other texts of a batch.

Info type names are Cloud DLP built-in infoType names, so a DLP engine maps them 1:1.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "AUTH_TOKEN",
    "AWS_CREDENTIALS",
    "CREDIT_CARD_NUMBER",
    "DEFAULT_FAILURE_REASON",
    "DLP_ONLY_INFO_TYPES",
    "EMAIL_ADDRESS",
    "ENCRYPTION_KEY",
    "ENGINE_NAMES",
    "GCP_API_KEY",
    "IBAN_CODE",
    "INFO_TYPES",
    "IP_ADDRESS",
    "JSON_WEB_TOKEN",
    "PERSON_NAME",
    "PHONE_NUMBER",
    "STREET_ADDRESS",
    "US_SOCIAL_SECURITY_NUMBER",
    "Redaction",
    "RedactionEngine",
    "RedactionError",
    "build_engine",
    "redact_each",
]

DEFAULT_FAILURE_REASON = "redaction_failed"

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD_NUMBER = "CREDIT_CARD_NUMBER"
US_SOCIAL_SECURITY_NUMBER = "US_SOCIAL_SECURITY_NUMBER"
IBAN_CODE = "IBAN_CODE"
IP_ADDRESS = "IP_ADDRESS"
AWS_CREDENTIALS = "AWS_CREDENTIALS"
GCP_API_KEY = "GCP_API_KEY"
JSON_WEB_TOKEN = "JSON_WEB_TOKEN"
ENCRYPTION_KEY = "ENCRYPTION_KEY"
AUTH_TOKEN = "AUTH_TOKEN"

# Every info type the offline engine can emit (Cloud DLP built-in names).
INFO_TYPES: tuple[str, ...] = (
    EMAIL_ADDRESS,
    PHONE_NUMBER,
    CREDIT_CARD_NUMBER,
    US_SOCIAL_SECURITY_NUMBER,
    IBAN_CODE,
    IP_ADDRESS,
    AWS_CREDENTIALS,
    GCP_API_KEY,
    JSON_WEB_TOKEN,
    ENCRYPTION_KEY,
    AUTH_TOKEN,
)

PERSON_NAME = "PERSON_NAME"
STREET_ADDRESS = "STREET_ADDRESS"
# Info types only the Cloud DLP engines find (the offline engine has no detector for them):
# the DLP templates inspect them too, and ``hybrid`` sends every text for them.
DLP_ONLY_INFO_TYPES: tuple[str, ...] = (PERSON_NAME, STREET_ADDRESS)


class Redaction(NamedTuple):
    """The redacted form of one text.

    Attributes:
        text: the input with each finding replaced by ``"[INFO_TYPE]"``.
        counts: info type -> number of findings in this text; only types with at least one
            finding appear. Never the matched values.
    """

    text: str
    counts: dict[str, int]


class RedactionError(Exception):
    """The engine could not redact a text (fail closed).

    The message never contains input text: it names the element index and the cause type.
    ``reason`` is the machine-readable dead-letter reason: ``redaction_failed``, or
    ``redaction_failed:<cause>`` when the engine knows the cause (``dlp_resource_exhausted``).
    """

    def __init__(self, message: str, reason: str = DEFAULT_FAILURE_REASON):
        super().__init__(message)
        self.reason = reason


@runtime_checkable
class RedactionEngine(Protocol):
    """Redacts PII and secrets in batches of texts.

    Implementations must be picklable or cheap to rebuild (Beam pickles DoFns) and are
    built once per DoFn in ``setup()``.
    """

    name: str

    def redact(self, texts: Sequence[str]) -> list[Redaction]:
        """Returns one ``Redaction`` per text, same order and length as ``texts``.

        Raises:
            RedactionError: any text could not be redacted; nothing is returned for the batch.
        """
        ...


# name -> "module:attribute" of a factory taking **options. Imported lazily so that the
# offline engine's compiled patterns (and a DLP engine's client library) load only when used.
_ENGINE_FACTORIES: dict[str, str] = {
    "offline": "transforms.pii.offline:OfflineEngine",
    "dlp": "transforms.pii.dlp:DlpEngine",
    "hybrid": "transforms.pii.dlp:HybridEngine",
}
ENGINE_NAMES: tuple[str, ...] = tuple(sorted(_ENGINE_FACTORIES))


def build_engine(name: str, **options: Any) -> RedactionEngine:
    """Builds the engine registered under ``name`` with ``options``.

    Raises:
        ValueError: ``name`` is not a registered engine (the message lists the valid names),
            or the engine rejected an option.
    """
    target = _ENGINE_FACTORIES.get(name)
    if target is None:
        raise ValueError(
            f"unknown redaction engine {name!r}; valid engines: {', '.join(ENGINE_NAMES)}"
        )
    module_name, _, attribute = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(**options)


def redact_each(
    engine: RedactionEngine, texts: Sequence[str], *, escalate: Sequence[bool] | None = None
) -> list[Redaction | RedactionError]:
    """One outcome per text, same order: its ``Redaction``, or the ``RedactionError`` that
    stopped it (fail closed per text instead of per batch).

    Engines with a ``redact_partial(texts, escalate=...)`` method answer directly (``escalate``
    marks texts a hybrid engine must send to its service whatever its pre-screen says; other
    engines ignore it). For the others the batch is tried whole, and only if that fails each
    text alone, so a failing text costs the batch one retry per text, not its results.
    """
    partial = getattr(engine, "redact_partial", None)
    if partial is not None:
        return partial(texts, escalate=escalate)
    try:
        return list(engine.redact(texts))
    except RedactionError:
        pass
    outcomes: list[Redaction | RedactionError] = []
    for text in texts:
        try:
            outcomes.append(engine.redact([text])[0])
        except RedactionError as error:
            outcomes.append(error)
    return outcomes
