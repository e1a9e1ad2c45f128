"""Test doubles. ``FailingEngine`` is a redaction engine that refuses chosen texts.

It wraps the real offline engine and raises ``RedactionError`` for any batch holding a text
with ``FAIL_MARKER``, the way a real engine fails closed (for example DLP after its retries).
Tests register it with ``register_failing_engine(monkeypatch)`` under the name ``failing``.
"""

from __future__ import annotations

from collections.abc import Sequence

from transforms.pii import engine as engine_module
from transforms.pii.engine import Redaction, RedactionError
from transforms.pii.offline import OfflineEngine

FAIL_MARKER = "<<engine-cannot-redact-this>>"


class FailingEngine:
    name = "failing"

    def __init__(self):
        self._inner = OfflineEngine()

    def redact(self, texts: Sequence[str]) -> list[Redaction]:
        for i, text in enumerate(texts):
            if FAIL_MARKER in text:
                raise RedactionError(f"text {i}: refused by the test engine")
        return self._inner.redact(texts)


def register_failing_engine(monkeypatch) -> None:
    monkeypatch.setitem(
        engine_module._ENGINE_FACTORIES, "failing", "tests.support.fakes:FailingEngine"
    )
