"""DeduplicateEvents as plain functions: validation, the expiry rule and the sharded clear grid,
the content digest, the stateful DoFns' specs and pickling, shards. In a pipeline:
``tests/transforms/test_dedupe.py`` (batch) and ``tests/streaming/test_dedupe*.py``."""

import datetime as dt
import inspect
import pickle

import pytest
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from tests.support.factories import pinned_clock, redacted_event
from transforms.dedupe import (
    DEDUPE_STRATEGIES,
    DEFAULT_TTL_S,
    DeduplicateEvents,
    _DedupePerKeyFn,
    _DedupeShardFn,
    content_digest,
    expiry_micros,
    shard_of,
    sharded_clear_micros,
)

S = 1_000_000  # µs per second


def test_configuration_is_validated():
    with pytest.raises(ValueError, match="ttl_s"):
        DeduplicateEvents(ttl_s=None)
    with pytest.raises(ValueError, match="ttl_s"):
        DeduplicateEvents(ttl_s=0)
    with pytest.raises(ValueError, match="ttl_s"):
        DeduplicateEvents(ttl_s=-60)
    with pytest.raises(ValueError, match="num_shards"):
        DeduplicateEvents(num_shards=0)
    with pytest.raises(ValueError, match=r"strategy must be one of \('sharded', 'per_key'\)"):
        DeduplicateEvents(strategy="per-key")
    with pytest.raises(ValueError, match="clock goes with strategy='per_key'"):
        DeduplicateEvents(clock=pinned_clock(0))
    with pytest.raises(ValueError, match="clock must be a callable"):
        DeduplicateEvents(strategy="per_key", clock=Timestamp(0))
    DeduplicateEvents(strategy="per_key", clock=pinned_clock(0))  # valid


def test_default_ttl_covers_an_hour_of_lateness_and_a_one_minute_window():
    assert DEFAULT_TTL_S == 3600 + 60
    assert inspect.signature(DeduplicateEvents).parameters["ttl_s"].default == DEFAULT_TTL_S


@pytest.mark.parametrize("dofn", [_DedupeShardFn, _DedupePerKeyFn])
@pytest.mark.parametrize("ttl_s", [None, 0, -1])
def test_stateful_dofns_reject_a_missing_or_non_positive_ttl(dofn, ttl_s):
    with pytest.raises(ValueError, match="ttl_s must be a positive number of seconds"):
        dofn(ttl_s)


def test_per_key_dofn_declares_one_state_cell_and_one_watermark_timer():
    state, timers = userstate.get_dofn_specs(_DedupePerKeyFn(60))
    assert state == {_DedupePerKeyFn.FIRST_DIGEST}
    assert _DedupePerKeyFn.FIRST_DIGEST.name == "first_digest"
    assert timers == {_DedupePerKeyFn.EXPIRY}
    assert _DedupePerKeyFn.EXPIRY.time_domain == TimeDomain.WATERMARK


def test_per_key_dofn_pickles_with_its_clock():
    pinned = pickle.loads(pickle.dumps(_DedupePerKeyFn(60, pinned_clock(3000))))
    assert pinned._clock() == Timestamp(3000)
    default = pickle.loads(pickle.dumps(_DedupePerKeyFn(60)))
    before = Timestamp.now()
    assert before <= default._clock() <= Timestamp.now()  # the wall clock


def test_expiry_is_the_ttl_after_the_later_of_event_time_and_arrival():
    ttl = 60 * S
    assert expiry_micros(100 * S, 100 * S, ttl) == 160 * S  # on time
    assert expiry_micros(100 * S, 3000 * S, ttl) == 3060 * S  # late: from its arrival
    assert expiry_micros(3000 * S, 2990 * S, ttl) == 3060 * S  # stamped ahead of the clock


def test_sharded_clear_is_the_next_grid_step_at_most_a_tenth_of_the_ttl_later():
    ttl = 60 * S  # grid 6 s
    assert sharded_clear_micros(70 * S, ttl) == 72 * S
    assert sharded_clear_micros(72 * S, ttl) == 72 * S
    assert sharded_clear_micros(72 * S + 1, ttl) == 78 * S
    assert sharded_clear_micros(2 * S + 1, 5 * S) == 3 * S  # grid never under 1 s
    for expiry in range(0, 100 * S, 999_983):
        assert expiry <= sharded_clear_micros(expiry, ttl) < expiry + ttl // 10


def test_content_digest_covers_what_the_gateway_reported_and_nothing_derived():
    event = redacted_event()
    digest = content_digest(event)
    assert digest.hex() == "a6b2930f4439fb1c"  # the same in every process and release
    derived = event._replace(
        processed_at=event.processed_at + dt.timedelta(hours=1),
        redaction_engine="dlp-v2",
        policy_version="2027-01",
        data_class="RESTRICTED",
        redaction_counts={"EMAIL": 1},
        prompt="Summarize the quarterly report for Ada.",
        response=None,
        unknown_field_count=3,
    )
    assert content_digest(derived) == digest
    # As a coder might hand the same values back: an integral float as an int, a list.
    flagged = event._replace(latency_ms=250.0, policy_flags=("blocked",))
    as_decoded = event._replace(latency_ms=250, policy_flags=["blocked"])
    assert content_digest(as_decoded) == content_digest(flagged)
    reported = {
        "request_id": "req-retry",
        "user_key": "user-key-0002",
        "event_time": event.event_time + dt.timedelta(microseconds=1),
        "model": "gemini-2.5-flash",
        "model_version": None,
        "latency_ms": 250.5,
        "token_count": 301,
        "prompt_tokens": None,
        "completion_tokens": 101,
        "policy_flags": ("blocked",),
        "region": "us-central1",
        "schema_version": "2",
    }
    digests = {content_digest(event._replace(**{name: value})) for name, value in reported.items()}
    assert len(digests) == len(reported) and digest not in digests


def test_shards_are_stable_and_bounded():
    assert shard_of("8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11", 32) == shard_of(
        "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11", 32
    )
    assert {shard_of(f"id-{i}", 8) for i in range(1000)} == set(range(8))


# The streaming semantics suite (tests/streaming/test_dedupe_semantics.py) runs every strategy.
def test_the_suite_covers_every_strategy():
    assert DEDUPE_STRATEGIES == ("sharded", "per_key")
