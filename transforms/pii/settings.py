"""What a DoFn needs to redact: which engine, which pseudonym key. Resolved on the worker."""

from __future__ import annotations

from typing import NamedTuple

from transforms.pii.engine import RedactionEngine, build_engine
from transforms.pii.pseudonym import load_key

__all__ = ["RedactionSettings"]


class RedactionSettings(NamedTuple):
    """Picklable redaction configuration; ``open()`` builds the engine and loads the key.

    Attributes:
      engine: engine name for ``build_engine`` (``offline`` by default).
      pseudonym_key: key reference for ``load_key`` (``env:NAME`` or ``file:PATH``); the key
        itself never travels in the pipeline graph.
    """

    engine: str = "offline"
    pseudonym_key: str = "env:GENAI_PSEUDONYM_KEY"

    def open(self) -> tuple[RedactionEngine, bytes]:
        return build_engine(self.engine), load_key(self.pseudonym_key)
