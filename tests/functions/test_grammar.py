"""The grammar of the contract's identifiers and the bounds of its numbers (transforms.grammar),
as parsing applies them: a value outside them is a dead letter that names the rule, not the
value."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.support.core_inputs import document
from transforms.deadletter import InvalidEvent
from transforms.grammar import DEFAULT_REGIONS, MAX_TOKENS, identifier_problem, parse_regions
from transforms.parse import DEFAULT_LIMITS, ParseLimits, _parse_event_reference, parse_event

NOW = dt.datetime(2026, 1, 27, 12, 0, tzinfo=dt.UTC)


def event_document(**changes) -> dict:
    return document(1, **changes)


def _parse(document: dict, limits: ParseLimits = DEFAULT_LIMITS):
    raw = json.dumps(document).encode()
    return parse_event(raw, now=NOW, limits=limits)


def _reason(document: dict, limits: ParseLimits = DEFAULT_LIMITS) -> tuple[str, str]:
    raw = json.dumps(document).encode()
    with pytest.raises(InvalidEvent) as fast:
        parse_event(raw, now=NOW, limits=limits)
    with pytest.raises(InvalidEvent) as reference:
        _parse_event_reference(raw, now=NOW, limits=limits)
    assert (fast.value.reason, fast.value.message) == (
        reference.value.reason,
        reference.value.message,
    )
    return fast.value.reason, fast.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "jane.doe@example.com is asking"),
        ("request_id", "R 123"),
        ("request_id", "-leading-dash"),
        ("request_id", "x" * 129),
        ("request_id", "R-1\n"),
        ("model", "gpt 4o"),
        ("model", "call me at +44 7911 123456"),
        ("model", "ẞigmodel"),
        ("model_version", "v1 (beta)"),
        ("region", "536-22-8141"),
        ("region", "us/../../etc"),
        ("region", "mars-north1"),
        ("policy_flags", ["pii redacted"]),
        ("policy_flags", ["PII_REDACTED"]),
        ("policy_flags", [f"flag_{i}" for i in range(33)]),
        ("policy_flags", ["x" * 65]),
    ],
)
def test_identifiers_outside_their_grammar_are_bad_values_without_the_value(field, value):
    document = event_document(**{field: value})
    reason, message = _reason(document)
    assert reason == f"bad_value:{field}"
    assert str(value)[:20] not in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "R-123"),
        ("request_id", "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11"),
        ("request_id", "req_01HX3Y:span/7+a=b@c"),
        ("model", "claude-3-5-sonnet@20240620"),
        ("model", "models/gemini-2.5-pro"),
        ("model_version", "2024-07-18"),
        ("region", "EUROPE-WEST1"),
        ("region", "us"),
        ("policy_flags", ["pii_redacted", "jailbreak_suspected", "v1.2-x"]),
    ],
)
def test_identifiers_in_their_grammar_pass(field, value):
    event = _parse(event_document(**{field: value}))
    expected = value.lower() if field == "region" else value
    assert getattr(event, field) == (tuple(value) if isinstance(value, list) else expected)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("token_count", 2**64, "bad_value:token_count"),
        ("token_count", MAX_TOKENS + 1, "bad_value:token_count"),
        ("prompt_tokens", 2**64 - 1, "bad_value:prompt_tokens"),
        ("completion_tokens", 2**63, "bad_value:completion_tokens"),
        ("latency_ms", 1.79e308, "bad_value:latency_ms"),
        ("latency_ms", 86_400_001, "bad_value:latency_ms"),
        ("latency_ms", -1, "negative_value:latency_ms"),
    ],
)
def test_numbers_beyond_their_bounds_are_dead_lettered(field, value, reason):
    assert _reason(event_document(**{field: value}))[0] == reason


def test_the_largest_allowed_numbers_pass():
    event = _parse(event_document(token_count=MAX_TOKENS, latency_ms=86_400_000))
    assert (event.token_count, event.latency_ms) == (MAX_TOKENS, 86_400_000.0)


@pytest.mark.parametrize("year", ["0001", "1900", "2014"])
def test_event_times_before_the_earliest_are_too_old(year):
    document = event_document(event_time=f"{year}-06-01T00:00:00Z")
    assert _reason(document)[0] == "event_time_too_old"


def test_the_earliest_event_time_is_configurable():
    document = event_document(event_time="2014-06-01T00:00:00Z")
    limits = ParseLimits(earliest=dt.datetime(2010, 1, 1, tzinfo=dt.UTC))
    assert _parse(document, limits).event_time.year == 2014


def test_allowed_regions_are_configurable_and_case_folded():
    limits = ParseLimits(regions=parse_regions(" Moon-1 ,us"))
    assert _parse(event_document(region="MOON-1"), limits).region == "moon-1"
    assert _reason(event_document(region="europe-west1"), limits)[0] == "bad_value:region"
    assert parse_regions("") == DEFAULT_REGIONS == parse_regions(" , ")


def test_a_byte_order_mark_before_an_event_is_ignored():
    raw = b"\xef\xbb\xbf" + json.dumps(event_document()).encode()
    assert parse_event(raw, now=NOW).event_id == event_document()["event_id"]


def test_identifier_problem_names_the_first_field_and_its_rule():
    problem = identifier_problem("R-1", "gpt", None, "us", ("a b",), DEFAULT_REGIONS)
    assert problem is not None and problem[0] == "policy_flags" and "[a-z0-9_.-]" in problem[1]
    assert identifier_problem("R-1", "gpt", "v1", "US", ("ok",), DEFAULT_REGIONS) is None
