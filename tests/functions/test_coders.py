"""The msgpack coders of the typed elements (transforms.coders)."""

from __future__ import annotations

import datetime as dt
import pickle

import msgspec
import pytest
from apache_beam.coders import registry

from tests.support.factories import redacted_event
from transforms.coders import MsgpackCoder
from transforms.elements import (
    AuditRecord,
    DeadLetter,
    EventBatch,
    LatencyBin,
    LineChunk,
    MetricRow,
    RedactedEvent,
)

T = dt.datetime(2026, 1, 27, 10, 0, 5, 123456, tzinfo=dt.UTC)

AUDIT = AuditRecord(
    audit_id="a1",
    event_id=None,
    request_id="r1",
    user_key=None,
    outcome="dead_lettered",
    reason="bad_timestamp",
    data_class=None,
    redaction_counts={},
    model=None,
    region=None,
    event_time=None,
    dead_letter_id="d1",
    recorded_at=T,
)
METRIC = MetricRow(
    window_start=T,
    window_end=T + dt.timedelta(minutes=1),
    model="m",
    region="r",
    request_count=2,
    token_sum=30,
    prompt_token_sum=10,
    completion_token_sum=20,
    latency_p50_ms=1.5,
    latency_p95_ms=2.5,
    latency_p99_ms=2.5,
    latency_sketch_bins=(LatencyBin(3, 1), LatencyBin(-(2**31), 1)),
    latency_sketch_relative_accuracy=0.01,
    distinct_users_approx=2,
    users_hll=b"\x00\x01\xff",
    policy_flag_counts={"pii": 1},
    data_class_counts={"PUBLIC": 2},
    redaction_counts={},
    pane_timing="EARLY",
    pane_index=0,
    is_final=False,
    emitted_at=T,
    source="streaming",
    estimated_cost_usd=None,
    latest_event_time=T,
)


@pytest.mark.parametrize(
    "element",
    [
        redacted_event(policy_flags=("a", "b"), redaction_counts={"EMAIL_ADDRESS": 2}),
        redacted_event(model_version=None, prompt=None, response=None, prompt_tokens=None),
        AUDIT,
        METRIC,
    ],
    ids=["redacted", "redacted-nulls", "audit", "metric"],
)
def test_round_trip_keeps_type_and_every_value(element):
    coder = registry.get_coder(type(element))
    assert isinstance(coder, MsgpackCoder)
    decoded = coder.decode(coder.encode(element))
    assert decoded == element
    assert type(decoded) is type(element)
    if isinstance(element, MetricRow):
        assert all(type(b) is LatencyBin for b in decoded.latency_sketch_bins)


def test_decode_rejects_a_value_of_the_wrong_type():
    coder = registry.get_coder(RedactedEvent)
    broken = redacted_event()._replace(token_count="many")
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int`, got `str`"):
        coder.decode(coder.encode(broken))


def test_coders_pickle_and_compare_by_type():
    coder = registry.get_coder(DeadLetter)
    clone = pickle.loads(pickle.dumps(coder))
    assert clone == coder and hash(clone) == hash(coder)
    assert clone != registry.get_coder(AuditRecord)
    assert not coder.is_deterministic()


def test_batches_round_trip_and_their_size_is_estimated_without_encoding():
    events = tuple(
        redacted_event(event_id=f"e{i}", prompt="p" * 900, response="r" * 700) for i in range(50)
    )
    batch = EventBatch("f.jsonl", events, tuple(range(50)))
    chunk = LineChunk("f.jsonl", (b'{"a": 1}', b'{"b": 2}'), (0, 9))
    for value in (batch, chunk):
        coder = registry.get_coder(type(value))
        assert coder.decode(coder.encode(value)) == value
        actual = len(coder.encode(value))
        assert 0.5 * actual <= coder.get_impl().estimate_size(value) <= 2 * actual
    assert registry.get_coder(RedactedEvent).estimate_size(events[0]) == len(
        registry.get_coder(RedactedEvent).encode(events[0])
    )
