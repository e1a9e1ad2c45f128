"""An event that makes the redaction step fail unexpectedly (``internal_error:redact``) keeps
no identifier the engine did not pass: its payload leaves the identifiers out, and its
``request_id`` is kept only when the engine finds nothing in it."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support.core_inputs import T0, raw
from tests.support.fuzz import _outputs
from transforms import redact
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.elements import ParsedBatch
from transforms.parse import ParseLimits, parse_event
from transforms.pii.settings import RedactionSettings

SETTINGS = RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY")
LIMITS = ParseLimits(now=T0 + dt.timedelta(minutes=10))


def _failing_before_the_scan(monkeypatch):
    # A bug before the engine scanned anything.
    def failing(event):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(redact, "texts_of", failing)


def _letter(**changes):
    event = parse_event(raw(1, **changes), now=LIMITS.now, limits=LIMITS)
    fn = redact._RedactBatchFn(SETTINGS, "builtin:classification.yaml", 64)
    fn.setup()
    (letter,) = _outputs(fn.process(ParsedBatch("in", (event,))))[DEAD_LETTER_TAG]
    assert letter.reason == "internal_error:redact"
    return letter


@pytest.mark.parametrize(
    "field, value",
    [
        ("model", "020-7946-0958"),
        ("model_version", "536-22-8141"),
        ("policy_flags", ["536-22-8140"]),
    ],
)
def test_its_payload_leaves_the_identifiers_out(monkeypatch, field, value):
    _failing_before_the_scan(monkeypatch)
    letter = _letter(**{field: value})
    planted = value[0] if isinstance(value, list) else value
    assert planted not in letter.payload
    assert '"model"' not in letter.payload and '"request_id"' not in letter.payload
    assert '"user_id":{"pseudonym"' in letter.payload  # still traceable to its user key


def test_its_request_id_is_kept_only_when_clean(monkeypatch):
    _failing_before_the_scan(monkeypatch)
    assert _letter(request_id="carol.plant@example.org").request_id is None
    assert _letter().request_id == "R-1"
