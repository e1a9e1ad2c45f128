"""The single lines that stopped a run before issue 21 (its "What was found"), each with the
reason it is dead-lettered for now; shared by the end-to-end and streaming regression tests."""

from __future__ import annotations

import itertools

from tests.support.core_inputs import document

__all__ = ["STOPPED_A_RUN", "gateway_event"]

_NUMBERS = itertools.count(100)


def gateway_event(**changes) -> dict:
    """A valid event (``core_inputs.document``: 10 tokens, flagged ``pii_redacted``) with a new
    event id each time, and ``changes``."""
    return document(
        next(_NUMBERS), **{"token_count": 10, "policy_flags": ["pii_redacted"], **changes}
    )


def _nested(depth: int):
    value = "x"
    for _ in range(depth):
        value = [value]
    return value


def _invalid_and_deep() -> dict:
    document = gateway_event(extra=_nested(600))
    del document["region"]  # invalid: its dead letter's payload is redacted (or omitted)
    return document


# line -> the reason it is dead-lettered for
STOPPED_A_RUN = {
    "invalid, a field nested 600 deep": (_invalid_and_deep(), "missing_field:region"),
    "token_count 2**64": (gateway_event(token_count=2**64), "bad_value:token_count"),
    "prompt_tokens 2**64-1": (gateway_event(prompt_tokens=2**64 - 1), "bad_value:prompt_tokens"),
    "token_count 2**63-1, first": (gateway_event(token_count=2**63 - 1), "bad_value:token_count"),
    "token_count 2**63-1, second": (gateway_event(token_count=2**63 - 1), "bad_value:token_count"),
    "latency_ms 1.79e308": (gateway_event(latency_ms=1.79e308), "bad_value:latency_ms"),
    "year 0001": (gateway_event(event_time="0001-01-01T00:00:00Z"), "event_time_too_old"),
    "year 1900": (gateway_event(event_time="1900-01-01T00:00:00Z"), "event_time_too_old"),
    "50k policy flags": (
        gateway_event(policy_flags=[f"flag_{i}" for i in range(50_000)]),
        "bad_value:policy_flags",
    ),
}
