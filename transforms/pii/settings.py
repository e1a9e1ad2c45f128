"""What a DoFn needs to redact: which engine, which pseudonym key. Resolved on the worker."""

from __future__ import annotations

import threading
from typing import NamedTuple

from transforms.pii.engine import RedactionEngine, build_engine
from transforms.pii.pseudonym import load_key

__all__ = ["RedactionSettings"]

# Engines are built once per worker thread, not once per DoFn instance: some runners (the
# DirectRunner in streaming) call setup() for every bundle, and building the offline engine
# compiles its pattern database (~80 ms). Per thread, because a compiled scanner keeps
# scratch space that concurrent scans must not share.
_PER_THREAD = threading.local()


class RedactionSettings(NamedTuple):
    """Picklable redaction configuration; ``open()`` builds the engine and loads the key.

    Attributes:
      engine: engine name for ``build_engine`` (``offline`` by default).
      pseudonym_key: key reference for ``load_key`` (``env:NAME``, ``file:PATH`` or
        ``secret:projects/P/secrets/S/versions/V``); the key itself never travels in the
        pipeline graph.
    """

    engine: str = "offline"
    pseudonym_key: str = "env:GENAI_PSEUDONYM_KEY"

    def open(self) -> tuple[RedactionEngine, bytes]:
        """Returns (engine, key bytes), reusing this thread's engine for the same settings."""
        cache: dict = _PER_THREAD.__dict__.setdefault("opened", {})
        opened = cache.get(self)
        if opened is None:
            opened = cache[self] = (build_engine(self.engine), load_key(self.pseudonym_key))
        return opened
