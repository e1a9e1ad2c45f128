"""Property-based tests (hypothesis) of the offline engine and of dead-letter payloads: PII and
secrets generated from their grammars, in the shapes people paste them in, are gone.

The end-to-end property (every output of a pipeline run) is in ``tests/e2e``.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pii_strategies import planted_in_shape
from transforms.pii.engine import build_engine
from transforms.pii.payload import redact_payload
from transforms.pii.pseudonym import pseudonymize

ENGINE = build_engine("offline")
KEY = b"p" * 32
FILLER = st.sampled_from(["", "hi", "see below:", "ok.", "Thanks!", "(urgent)", "\n", "--"])
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _leaks(text: str, values) -> list[str]:
    return [needle for value in values for needle in value.needles if needle in text]


@PROPERTY
@given(st.lists(st.tuples(FILLER, planted_in_shape()), min_size=1, max_size=4), FILLER)
def test_planted_values_are_gone_from_the_redacted_text(parts, tail):
    text = " ".join(f"{filler} {value.text}" for filler, value in parts) + f" {tail}"
    redacted = ENGINE.redact([text])[0].text
    assert _leaks(redacted, [value for _, value in parts]) == [], text


_KEYS = st.sampled_from(["note", "data", "items", "meta", "payload", "x"])
_USER_KEYS = st.sampled_from(["user_id", "userId", "USER_ID", "user-id", "uid", "UserID"])


@st.composite
def documents(draw):
    """A JSON document with planted values as keys and values, and a clear user id, at any
    depth (nested objects and arrays)."""
    values = draw(st.lists(planted_in_shape(), min_size=1, max_size=3))
    user = draw(st.from_regex(r"[a-z]{3,8}-[0-9]{2,6}", fullmatch=True))
    node = {draw(_USER_KEYS): user, values[0].text: draw(st.integers(0, 9))}
    for value in values[1:]:
        node = (
            {draw(_KEYS): [node, value.text]}
            if draw(st.booleans())
            else {
                draw(_KEYS): node,
                "text": value.text,
            }
        )
    for _ in range(draw(st.integers(0, 4))):
        node = [node] if draw(st.booleans()) else {draw(_KEYS): node}
    return node, values, user


@PROPERTY
@given(documents(), st.sampled_from(["json", "truncated"]))
def test_dead_letter_payloads_keep_no_pii_and_no_clear_user_id(document, form):
    node, values, user = document
    raw = json.dumps(node).encode()
    if form == "truncated":
        raw = raw[: max(1, len(raw) - 3)]
    text = redact_payload(raw, ENGINE, KEY, max_bytes=1_000_000)
    assert text is not None
    assert user not in text
    assert _leaks(text, values) == [], raw
    if form == "json":
        assert pseudonymize(user, KEY) in text
