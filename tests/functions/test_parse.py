"""Function layer: parse_event accepts the contract and names every rejection."""

import datetime as dt
import json

import pytest

from schemas.contract import load_schema
from transforms.deadletter import InvalidEvent
from transforms.parse import KNOWN_FIELDS, ParseLimits, parse_event

NOW = dt.datetime(2026, 1, 27, 12, 5, tzinfo=dt.UTC)

SEED_EXAMPLE = {
    "event_id": "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11",
    "request_id": "R-123",
    "user_id": "U-456",
    "event_time": "2026-01-27T12:00:00Z",
    "model": "gpt-4o-mini",
    "latency_ms": 780,
    "token_count": 1420,
    "policy_flags": ["pii_redacted"],
    "region": "us",
}


def raw(**changes) -> bytes:
    document = dict(SEED_EXAMPLE)
    for name, value in changes.items():
        if value is ...:
            document.pop(name, None)
        else:
            document[name] = value
    return json.dumps(document).encode()


def reason_of(data: bytes, **kwargs) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(data, now=NOW, **kwargs)
    return caught.value.reason


def test_seed_example_is_valid_version_1():
    event = parse_event(raw(), now=NOW)
    assert event.event_id == SEED_EXAMPLE["event_id"]
    assert event.schema_version == "1"
    assert event.event_time == dt.datetime(2026, 1, 27, 12, 0, tzinfo=dt.UTC)
    assert event.latency_ms == 780.0
    assert event.token_count == 1420
    assert event.policy_flags == ("pii_redacted",)
    assert event.prompt is None and event.response is None
    assert event.unknown_field_count == 0


def test_optional_fields_and_normalisation():
    event = parse_event(
        raw(
            schema_version="1",
            model_version="2024-07-18",
            prompt="hi",
            response="hello",
            prompt_tokens=10,
            completion_tokens=5,
            region="EU",
            event_id=SEED_EXAMPLE["event_id"].upper(),
            event_time="2026-01-27T13:00:00+01:00",
        ),
        now=NOW,
    )
    assert event.region == "eu"
    assert event.event_id == SEED_EXAMPLE["event_id"]
    assert event.event_time == dt.datetime(2026, 1, 27, 12, 0, tzinfo=dt.UTC)
    assert (event.prompt_tokens, event.completion_tokens) == (10, 5)
    assert parse_event(raw(schema_version=1), now=NOW).schema_version == "1"
    assert parse_event(raw(policy_flags=...), now=NOW).policy_flags == ()


def test_unknown_fields_are_dropped_and_counted():
    event = parse_event(raw(tenant="acme", debug={"x": 1}), now=NOW)
    assert event.unknown_field_count == 2
    assert not hasattr(event, "tenant")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"", "invalid_json"),
        (raw(schema_version=2), "unsupported_schema_version:2"),
        (raw(schema_version="2.1"), "unsupported_schema_version:2"),
        (raw(schema_version=0), "unsupported_schema_version:0"),
        (raw(schema_version="v1"), "bad_value:schema_version"),
        (raw(schema_version="1.01"), "bad_value:schema_version"),
        (raw(schema_version=" 1"), "bad_value:schema_version"),
        (raw(schema_version="1.1.0"), "bad_value:schema_version"),
        (raw(schema_version=-1), "bad_value:schema_version"),
        (raw(schema_version=1000), "bad_value:schema_version"),
        (raw(schema_version=True), "bad_type:schema_version"),
        (raw(schema_version=1.1), "bad_type:schema_version"),
        (raw(schema_version=[1]), "bad_type:schema_version"),
        (raw(ttft_ms=-1), "negative_value:ttft_ms"),
        (raw(ttft_ms="12"), "bad_type:ttft_ms"),
        (raw(cached_tokens=-1), "negative_value:cached_tokens"),
        (raw(reasoning_tokens=1.5), "bad_type:reasoning_tokens"),
        (raw(tenant_id="acme corp"), "bad_value:tenant_id"),
        (raw(tenant_id=""), "bad_value:tenant_id"),
        (raw(tenant_id=7), "bad_type:tenant_id"),
        (raw(user_id=...), "missing_field:user_id"),
        (raw(event_id=...), "missing_field:event_id"),
        (raw(event_time=...), "missing_field:event_time"),
        (raw(model=None), "missing_field:model"),
        (raw(latency_ms="780"), "bad_type:latency_ms"),
        (raw(token_count=14.5), "bad_type:token_count"),
        (raw(token_count=True), "bad_type:token_count"),
        (raw(policy_flags="pii_redacted"), "bad_type:policy_flags"),
        (raw(policy_flags=[1]), "bad_type:policy_flags"),
        (raw(prompt=["a"]), "bad_type:prompt"),
        (raw(event_id="not-a-uuid"), "bad_value:event_id"),
        (raw(region="us/../../etc"), "bad_value:region"),
        (raw(user_id=""), "bad_value:user_id"),
        (raw(event_time="yesterday"), "bad_timestamp"),
        (raw(event_time="2026-01-27T12:00:00"), "bad_timestamp"),
        (raw(event_time=1769515200), "bad_timestamp"),
        (raw(latency_ms=-1), "negative_value:latency_ms"),
        (raw(token_count=-5), "negative_value:token_count"),
        (raw(completion_tokens=-1), "negative_value:completion_tokens"),
        (raw(event_time="2026-01-27T12:11:00Z"), "event_time_in_future"),
        # Nested beyond msgspec's limit: a dead letter, not an error that fails the bundle.
        (b"[" * 5000, "invalid_json"),
        (b'{"a": ' + b"{" * 5000, "invalid_json"),
        # Valid RFC 3339, but outside the range of UTC datetimes.
        (raw(event_time="9999-12-31T23:59:59-01:00"), "bad_timestamp"),
        (raw(event_time="0001-01-01T00:00:00+01:00"), "bad_timestamp"),
        (raw(region="us\n"), "bad_value:region"),  # "$" alone would match before the newline
    ],
)
def test_rejections_have_machine_readable_reasons(data, reason):
    assert reason_of(data) == reason


def test_clock_skew_is_configurable():
    data = raw(event_time="2026-01-27T12:11:00Z")
    assert parse_event(data, now=NOW, limits=ParseLimits(max_clock_skew_s=600)).event_id
    assert reason_of(raw(event_time="2026-01-27T12:06:00Z"), limits=ParseLimits(1 << 20, 0)) == (
        "event_time_in_future"
    )


def test_oversize_is_checked_before_decoding():
    data = raw(prompt="x" * 2000)
    assert reason_of(data, limits=ParseLimits(max_event_bytes=1000)) == "oversize"
    assert reason_of(b"{" * 2000, limits=ParseLimits(max_event_bytes=1000)) == "oversize"
    assert parse_event(data, now=NOW).prompt == "x" * 2000  # default limit is 1 MiB


def test_error_messages_never_contain_values():
    secret = "alice.secret@example.com"
    for data in (
        raw(user_id=secret, latency_ms="780"),
        raw(user_id=secret, event_id=secret),
        raw(user_id=secret, event_time=secret),
        raw(user_id=secret, region=secret),
        raw(user_id=[secret]),
        (b'{"user_id": "' + secret.encode() + b'", '),
    ):
        with pytest.raises(InvalidEvent) as caught:
            parse_event(data, now=NOW)
        assert secret not in str(caught.value)
        assert "alice" not in caught.value.message


def test_wire_format_matches_the_avro_contract():
    avro_fields = {f["name"] for f in load_schema("gateway_event")["fields"]}
    assert avro_fields == KNOWN_FIELDS


@pytest.mark.parametrize(
    ("value", "stored"),
    [(..., "1"), (None, "1"), (1, "1"), ("1", "1"), ("1.0", "1.0"), ("1.1", "1.1"), ("1.7", "1.7")],
)
def test_every_minor_of_major_1_is_accepted_and_stored_as_given(value, stored):
    # An independent generator writes "1.0" and "1.1"; a minor newer than this pipeline's
    # contract (1.7) is accepted too: minors only add optional fields.
    assert parse_event(raw(schema_version=value), now=NOW).schema_version == stored


def test_fields_of_contract_1_1_are_parsed():
    event = parse_event(
        raw(
            schema_version="1.1",
            ttft_ms=210,
            cached_tokens=512,
            reasoning_tokens=90,
            tenant_id="acme-eu.prod",
        ),
        now=NOW,
    )
    assert (event.ttft_ms, event.cached_tokens, event.reasoning_tokens, event.tenant_id) == (
        210.0,
        512,
        90,
        "acme-eu.prod",
    )
    assert isinstance(event.ttft_ms, float)
    assert event.unknown_field_count == 0 and event.unknown_fields == ()
    assert parse_event(raw(), now=NOW)[-5:] == (None, None, None, None, ())


def test_unknown_field_names_are_kept_bounded_and_sorted():
    event = parse_event(
        raw(schema_version="1.3", service_tier="flex", **{"Weird Name": 1, "x" * 65: 2}),
        now=NOW,
    )
    assert event.unknown_field_count == 3
    assert event.unknown_fields == ("other", "service_tier")
    many = parse_event(raw(**{f"f{i:02d}": i for i in range(20)}), now=NOW)
    assert many.unknown_field_count == 20
    assert many.unknown_fields == (*(f"f{i:02d}" for i in range(7)), "other")


def test_another_major_goes_through_its_converter(monkeypatch):
    from transforms import versions

    def from_v2(document):
        # A made-up major 2 that renamed latency_ms and nested the tokens.
        document["latency_ms"] = document.pop("latency")
        document["token_count"] = document.pop("tokens")["total"]
        return document

    monkeypatch.setitem(versions.CONVERTERS, 2, from_v2)
    v2 = raw(
        schema_version="2.0", latency=12.5, tokens={"total": 7}, latency_ms=..., token_count=...
    )
    event = parse_event(v2, now=NOW)
    assert (event.schema_version, event.latency_ms, event.token_count) == ("2.0", 12.5, 7)
    assert reason_of(raw(schema_version=3)) == "unsupported_schema_version:3"
