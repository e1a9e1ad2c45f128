"""Differential: parse_event (fast path + fallback) and the reference path agree on every input.

Each case runs ``parse_event`` and ``_parse_event_reference`` on the same bytes, ``now`` and
limits, and compares the outcomes exactly: the Event's fields with their types and reprs (so
``-0.0`` differs from ``0.0`` and ``1`` from ``1.0``), or the InvalidEvent's reason and message,
or any other exception's type and text. The corpus: loadgen output (valid, late, duplicate and
every malformed kind), systematic mutations of valid events, truncations and seeded byte flips.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Iterator

import pytest

from pipelines.local.loadgen import MALFORMATIONS, MALFORMED, EventGenerator, LoadProfile
from transforms import parse
from transforms.deadletter import InvalidEvent
from transforms.parse import KNOWN_FIELDS, ParseLimits, parse_event

NOW = dt.datetime(2026, 1, 27, 12, 5, tzinfo=dt.UTC)
LIMITS = (ParseLimits(), ParseLimits(max_clock_skew_s=0), ParseLimits(max_clock_skew_s=600))
RAW = "__raw_json__"  # placeholder value, replaced by a literal JSON text

MINIMAL = {
    "event_id": "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11",
    "request_id": "R-123",
    "user_id": "U-456",
    "event_time": "2026-01-27T12:00:00Z",
    "model": "gpt-4o-mini",
    "latency_ms": 780,
    "token_count": 1420,
    "region": "us",
}
FULL = {
    **MINIMAL,
    "schema_version": "1.1",
    "ttft_ms": 120,
    "cached_tokens": 256,
    "reasoning_tokens": 64,
    "tenant_id": "acme-eu",
    "model_version": "2024-07-18",
    "prompt_tokens": 1000,
    "completion_tokens": 420,
    "policy_flags": ["pii_redacted", "content_filtered"],
    "latency_ms": 394.9,
    "prompt": "Hi, my card 4038-9909-1613-1279 was declined. Grüße, \u00e9\u00e8 \U0001f600",
    "response": "Sorry to hear that.\nLet me check.",
}

# Values of every JSON type and shape, tried in every field.
ANY_TYPE = [
    None,
    "",
    "x",
    "x" * 256,
    "x" * 257,
    0,
    1,
    -1,
    5.0,
    1.5,
    -0.0,
    True,
    False,
    [],
    ["a"],
    [1],
    {},
    {"a": 1},
    {"pseudonym": "0" * 64},
]
INTEGER_LITERALS = [
    "0",
    "-0",
    "5",
    "5.0",
    "5.5",
    "-5",
    "1e2",
    "1E2",
    "-0.0",
    "00",
    "+1",
    "9007199254740993",  # 2**53 + 1: not a float
    str(2**63 - 1),
    str(2**63),
    str(2**64 - 1),
    str(2**64),
    str(10**30),
    "1" * 5000,  # beyond Python's int-to-str digit limit
    '"5"',
    "true",
    "null",
]
FLOAT_LITERALS = [
    *INTEGER_LITERALS,
    "0.0",
    "780",
    "780.5",
    "394.9",
    "1e3",
    "1.0e-3",
    "1e-400",
    "4.9e-324",
    "1e400",
    "-1e-300",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "0.1000000000000000055511151231257827021181583404541015625",
    "123456789012345678901234567890.123",
    str(2**70 + 2**17),  # halfway between two floats: rounds to even
    str(2**70 + 2**17 + 1),
    str(2**1024),
    "1" + "0" * 400,
    ".5",
    "5.",
    "NaN",
    "Infinity",
    '"780"',
]
EVENT_IDS = [
    "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11",
    "8A1F7A52-6A3E-4D3C-9F0E-0D6C3F1B2A11",
    "8a1f7a52-6A3E-4d3c-9f0e-0d6c3f1b2a11",
    "{8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11}",
    "8a1f7a526a3e4d3c9f0e0d6c3f1b2a11",
    "urn:uuid:8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11",
    "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11\n",
    " 8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11",
    "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a1",
    "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a111",
    "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a1g",
    "8a1f7a526-a3e-4d3c-9f0e-0d6c3f1b2a11",
    "8a1f7a52-6a3e-4d3c-9f0e0-d6c3f1b2a11",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "8a1f7a52-6a3e-0d3c-0f0e-0d6c3f1b2a11",  # no version or variant bits
    "8a1f7a52_6a3e_4d3c_9f0e_0d6c3f1b2a11",
    "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a\u0661\u0661",  # Arabic-Indic digits
    "not-a-uuid",
]
EVENT_TIMES = [
    "2026-01-27T12:00:00Z",
    "2026-01-27T12:00:00z",
    "2026-01-27t12:00:00Z",
    "2026-01-27 12:00:00Z",
    "2026-01-27T12:00:00+00:00",
    "2026-01-27T12:00:00-00:00",
    "2026-01-27T14:00:00+02:00",
    "2026-01-27T06:30:00-05:30",
    "2026-01-27T12:00:00+0200",
    "2026-01-27T12:00:00+02",
    "2026-01-27T12:00:00+24:00",
    "2026-01-27T12:00:00+23:59",
    "2026-01-27T12:00:00",
    "2026-01-27T12:00Z",
    "2026-01-27",
    "2026-01-27T",
    "2026-01-27T24:00:00Z",
    "2026-01-27T23:59:60Z",
    "2026-02-29T12:00:00Z",
    "2024-02-29T12:00:00Z",
    "2026-13-01T12:00:00Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # before datetime.min in UTC
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",  # after datetime.max in UTC
    "2026-01-27T12:00:00.Z",
    *(f"2026-01-27T12:00:00.{'123456789012'[:n]}Z" for n in range(1, 13)),
    "2026-01-27T12:00:00.9999995Z",
    "2026-01-27T12:00:00.12+01:00",
    "27/01/2026 12:00",
    "yesterday",
    "",
    1769515200,
    1769515200.5,
]
REGIONS = [
    "us",
    "EU",
    "Asia",
    "us_east-1",
    "US-EAST_1",
    "123",
    "-",
    "_",
    "--",
    "a" * 63,
    "A" * 63,
    "a" * 64,
    "a" * 62 + "\n",
    "a" * 63 + "\n",
    "us\n",
    "us ",
    " us",
    "us/eu",
    "us/../../etc",
    "us.eu",
    "é",
    "\u212a",  # Kelvin sign: lowercases to an ASCII "k"
    "\u0130",
    "\uff41",  # fullwidth "a": alphanumeric, not ASCII
    "\u0661",
    "us\u0000",
    "",
]
SCHEMA_VERSIONS = [
    1,
    "1",
    "1.0",
    "1.1",
    "1.99999",
    "1.100000",
    "1.01",
    "1.",
    ".1",
    "1.1.1",
    "2",
    "2.0",
    2,
    0,
    999,
    1000,
    " 1 ",
    "1 ",
    "\t1\n",
    "01",
    "1.0",
    "",
    2,
    "2",
    "v1",
    True,
    False,
    1.0,
    -1,
    0,
    10**30,
    None,
    [],
    [1],
    {},
    {"1": 1},
    "\u0661",
]
POLICY_FLAGS = [
    [],
    ["pii_redacted"],
    ["a", "a"],
    ["x" * 256],
    ["x" * 257],
    [""],
    [1],
    [None],
    [["a"]],
    ["a", 1],
    "pii_redacted",
    {},
    {"a": "b"},
    None,
    ["a"] * 200,
]
STRINGS = [
    "",
    " ",
    "x",
    "x" * 255,
    "x" * 256,
    "x" * 257,
    "\u00e9" * 256,
    "\U0001f600" * 256,
    "x" * 255 + "\U0001f600",
    "\u0000",
    "a\nb",
    "pseudonym:" + "0" * 64,
]


def outcome(function, data: bytes, limits: ParseLimits, now: dt.datetime, **kwargs) -> tuple:
    """What ``function`` does with ``data``, comparable exactly between the two paths."""
    try:
        event = function(data, now=now, limits=limits, **kwargs)
    except InvalidEvent as error:
        return ("invalid", error.reason, error.message, str(error))
    except Exception as error:  # the reference's behaviour whatever it is, e.g. OverflowError
        return ("error", type(error).__name__, str(error))
    return (
        "event",
        type(event).__name__,
        tuple((name, type(value).__name__, repr(value)) for name, value in event._asdict().items()),
        tuple(type(flag).__name__ for flag in event.policy_flags),
        event.event_time.tzinfo is dt.UTC,
    )


def mismatches(
    cases: list[bytes], limits=LIMITS, nows=(NOW,), pseudonymised=(False,)
) -> tuple[list, dict]:
    """The cases where the two paths differ, and a count of the outcomes seen."""
    different, seen = [], {}
    for data in cases:
        for limit in limits:
            for now in nows:
                for flag in pseudonymised:
                    expected = outcome(
                        parse._parse_event_reference, data, limit, now, pseudonymised=flag
                    )
                    actual = outcome(parse_event, data, limit, now, pseudonymised=flag)
                    key = expected[1] if expected[0] != "event" else "event"
                    seen[key] = seen.get(key, 0) + 1
                    if actual != expected:
                        different.append((data[:300], limit, now, flag, expected, actual))
    return different, seen


def encode(document: dict, raw_value: str | None = None) -> bytes:
    text = json.dumps(document, ensure_ascii=False)
    if raw_value is not None:
        text = text.replace(json.dumps(RAW), raw_value)
    return text.encode("utf-8", "surrogatepass")


def with_field(base: dict, name: str, value) -> dict:
    document = dict(base)
    document[name] = value
    return document


def without(base: dict, name: str) -> dict:
    return {k: v for k, v in base.items() if k != name}


def field_mutations() -> Iterator[bytes]:
    """Every field of both bases: absent, null, every JSON type, and its own edge cases."""
    specific = {
        "event_id": EVENT_IDS,
        "event_time": EVENT_TIMES,
        "region": REGIONS,
        "schema_version": SCHEMA_VERSIONS,
        "policy_flags": POLICY_FLAGS,
        **{
            name: STRINGS
            for name in ("request_id", "user_id", "model", "model_version", "tenant_id")
        },
        **{name: STRINGS for name in ("prompt", "response")},
    }
    for base in (MINIMAL, FULL):
        for name in sorted(KNOWN_FIELDS):
            yield encode(without(base, name))
            for value in ANY_TYPE + specific.get(name, []):
                yield encode(with_field(base, name, value))
        for name in ("latency_ms", "ttft_ms"):
            for literal in FLOAT_LITERALS:
                yield encode(with_field(base, name, RAW), literal)
        for name in (
            "token_count",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
        ):
            for literal in INTEGER_LITERALS:
                yield encode(with_field(base, name, RAW), literal)
        for literal in (
            "1",
            '"1"',
            '" 1 "',
            "2",
            "true",
            "1.0",
            "1.1",
            '"1.1"',
            '"1.\\u0031"',
            "null",
            "1e0",
            "01",
            "-0",
        ):
            yield encode(with_field(base, "schema_version", RAW), literal)


def structure_mutations() -> Iterator[bytes]:
    """Unknown fields, duplicate and escaped keys, top-level shapes, bad UTF-8, truncation."""
    for base in (MINIMAL, FULL):
        text = encode(base).decode()
        inner = text[1:-1]
        yield encode({**base, "tenant": "acme"})
        yield encode({**base, "tenant": None, "debug": {"x": [1, 2]}, "Model": "m", "": 1})
        yield encode({**base, "schema_version": 2, "tenant": "acme"})
        yield encode({**base, "user_id": "", "tenant": "acme"})
        yield ('{"tenant": 1, "tenant": 2, ' + inner + "}").encode()
        # Duplicate keys: the last one counts, in both paths.
        yield ("{" + inner + ', "model": "second"}').encode()
        yield ("{" + inner + ', "model": 5}').encode()
        yield ('{"model": 5, ' + inner + "}").encode()
        yield ('{"model": null, ' + inner + "}").encode()
        yield ("{" + inner + ', "region": "EU"}').encode()
        yield ('{"event_id": "bad", ' + inner + "}").encode()
        yield ('{"schema_version": 2, ' + inner + "}").encode()
        yield ("{" + inner + ', "schema_version": 2}').encode()
        yield ("{" + inner + ', "schema_version": 1, "schema_version": 1}').encode()
        yield ("{" + inner + ', "latency_ms": -1, "latency_ms": 1}').encode()
        # Escaped keys and values.
        yield text.replace('"model"', '"mod\\u0065l"').encode()
        yield text.replace('"region": "us"', '"\\u0072egion": "\\u0055S"').encode()
        yield text.replace('"region"', '"Region"').encode()
        yield text.replace('"R-123"', '"R-\\u0031\\u00e9\\ud83d\\ude00"').encode()
        yield text.replace('"R-123"', '"R-\\ud800"').encode()
        yield text.replace('"R-123"', '"R-\\udc00\\ud800"').encode()
        yield text.replace('"R-123"', '"R-\\x41"').encode()
        # Bytes that are not (or not only) one UTF-8 JSON object.
        data = text.encode()
        yield data.replace(b"R-123", b"R-\xff23")
        yield data.replace(b"R-123", b"R-\xed\xa0\x8023")  # an encoded surrogate
        yield data.replace(b"R-123", b"R-\xc0\xaf23")  # an overlong encoding
        yield data.replace(b'"model"', b'"mod\xe9l"')
        yield b"\xef\xbb\xbf" + data
        yield data + b"\n"
        yield b" \t\r\n" + data + b" \n"
        yield data + b"x"
        yield data + data
        yield data.replace(b": ", b":")
        yield data.replace(b", ", b",\n")
        yield ("[" + text + "]").encode()
        for cut in range(0, len(data), 7):
            yield data[:cut]
    yield from (b"", b" ", b"null", b"true", b"1", b"1.5", b'"x"', b"[]", b"[1, 2]", b"{}")
    yield from (b"{", b"}", b"{not json", b"\xff\xfe", b'{"a": 1}', b"{" * 2000, b"[" * 2000)


def future_boundary() -> Iterator[bytes]:
    """Event times around NOW + skew for each of LIMITS, in several offsets and precisions."""
    for skew in {limits.max_clock_skew_s for limits in LIMITS}:
        for step in (-1, 0, 1):
            moment = NOW + dt.timedelta(seconds=skew, microseconds=step)
            for zone in (
                dt.UTC,
                dt.timezone(dt.timedelta(hours=2)),
                dt.timezone(-dt.timedelta(hours=9, minutes=30)),
            ):
                local = moment.astimezone(zone)
                for text in (local.isoformat(), local.isoformat().replace("+00:00", "Z")):
                    yield encode(with_field(FULL, "event_time", text))
            whole = (NOW + dt.timedelta(seconds=skew + step)).isoformat(timespec="seconds")
            yield encode(with_field(MINIMAL, "event_time", whole))


def byte_flips(documents: list[bytes], seed: int = 5, per_document: int = 20) -> Iterator[bytes]:
    """Seeded single-byte changes in the part of each document that holds the fields."""
    rng = random.Random(seed)
    alphabet = b'{}[]",:0123456789-+.eEtfnul aAzZ\\\n\x00\xff\xc3'
    for data in documents:
        head = min(len(data), 600)
        for _ in range(per_document):
            at = rng.randrange(head)
            yield data[:at] + bytes([rng.choice(alphabet)]) + data[at + 1 :]


@pytest.fixture(scope="module")
def loadgen_corpus() -> list:
    """Loadgen messages at NOW: a default mix, then one with half of them malformed."""
    generated = EventGenerator(3, LoadProfile(text_pool=8)).batch(1500, NOW)
    generated += EventGenerator(4, LoadProfile(text_pool=8, malformed_share=0.5)).batch(600, NOW)
    return generated


def test_loadgen_corpus_agrees(loadgen_corpus):
    different, seen = mismatches([g.payload for g in loadgen_corpus])
    assert different == []
    kinds = {g.malformation for g in loadgen_corpus if g.kind == MALFORMED}
    assert kinds == set(MALFORMATIONS)  # every malformed kind was exercised
    assert seen["event"] > 3000 and len(seen) >= len(MALFORMATIONS) + 1


def test_valid_loadgen_events_take_the_fast_path(loadgen_corpus, monkeypatch):
    def no_fallback(*args, **kwargs):
        raise AssertionError("fell back to the reference path")

    valid = [g.payload for g in loadgen_corpus if g.kind != MALFORMED]
    expected = [parse._parse_event_reference(data, now=NOW) for data in valid]
    monkeypatch.setattr(parse, "_parse_event_reference", no_fallback)
    assert [parse_event(data, now=NOW) for data in valid] == expected


def test_field_mutations_agree():
    cases = list(field_mutations())
    different, seen = mismatches(cases)
    assert different == []
    assert len(cases) > 1000
    assert seen["event"] > 300 and seen["bad_type:latency_ms"] and seen["bad_timestamp"]


def test_structure_mutations_agree():
    different, seen = mismatches(list(structure_mutations()))
    assert different == []
    assert seen["invalid_json"] > 50 and seen["event"] > 10


def test_future_boundary_agrees():
    naive = NOW.replace(tzinfo=None)  # a caller's mistake: the same TypeError on both paths
    nows = (NOW, NOW.astimezone(dt.timezone(dt.timedelta(hours=-3))), naive)
    different, seen = mismatches(list(future_boundary()), nows=nows)
    assert different == []
    assert seen["event"] > 20 and seen["event_time_in_future"] > 20 and seen["TypeError"] > 20


def test_byte_flips_agree(loadgen_corpus):
    documents = [encode(MINIMAL), encode(FULL)] + [g.payload for g in loadgen_corpus[:150]]
    different, seen = mismatches(list(byte_flips(documents)), limits=LIMITS[:1])
    assert different == []
    assert seen["event"] > 100 and seen["invalid_json"] > 100


def test_oversize_limits_agree():
    data = encode(FULL)
    limits = [ParseLimits(max_event_bytes=n) for n in (len(data) - 1, len(data), len(data) + 1)]
    different, seen = mismatches([data, b"{" * len(data)], limits=limits)
    assert different == []
    assert seen["oversize"] == 2 and seen["event"] == 2


def test_replay_mode_agrees():
    pseudonym = "0123456789abcdef" * 4
    cases = [
        encode(with_field(FULL, "user_id", value))
        for value in (
            {"pseudonym": pseudonym},
            {"pseudonym": pseudonym.upper()},
            {"pseudonym": pseudonym, "x": 1},
            f"pseudonym:{pseudonym}",
            f"pseudonym:{pseudonym[:-1]}",
            "U-456",
            "",
            None,
        )
    ]
    different, seen = mismatches(cases, pseudonymised=(False, True))
    assert different == []
    assert seen["event"] and seen["missing_field:user_id"] and seen["bad_type:user_id"]
    event = parse_event(cases[0], now=NOW, pseudonymised=True)
    assert (event.user_key, event.user_id) == (pseudonym, "")


def test_the_comparison_detects_a_fast_path_that_differs(monkeypatch):
    # A fast path that took upper-case ids as they are would break the canonical event_id.
    monkeypatch.setattr(parse, "_CANONICAL_UUID", re.compile(r"(?i)[0-9a-f-]{36}"))
    different, _ = mismatches([encode(with_field(MINIMAL, "event_id", EVENT_IDS[1]))])
    assert len(different) == len(LIMITS)


def test_fast_wire_format_has_the_contract_fields():
    assert parse._EventV1Fast.__struct_fields__ == parse._EventV1.__struct_fields__
