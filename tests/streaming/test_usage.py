"""AggregateUsage on unbounded input (TestStream): an hour's pane on time, accumulating late
panes within the allowed lateness, events beyond it in no pane, early panes every
``early_firing_s`` of processing time, and only the users that changed in a pane."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from tests.support.aggregate import PRICES, T0_S, ev, stamped
from tests.support.pipelines import TestPipeline, streaming_options
from tests.support.usage import comparable_usage, expected_usage
from transforms.usage import AggregateUsage, shard_of_user


def _run(stream: TestStream, expected: list, **kwargs) -> None:
    with TestPipeline(options=streaming_options()) as p:
        rows = p | stream | AggregateUsage(PRICES, **kwargs)
        assert_that(rows | beam.Map(comparable_usage), equal_to(expected), label="CheckPanes")


def test_on_time_then_late_within_lateness_then_beyond():
    on_time = ev(T0_S + 10, event_id="a", user_key="u1")
    late = ev(T0_S + 20, event_id="b", user_key="u1", token_count=7)
    too_late = ev(T0_S + 30, event_id="c", user_key="u1")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(on_time)])
        .advance_watermark_to(T0_S + 3600)  # the hour closes: ON_TIME pane
        .add_elements([stamped(late)])  # late, within the 600 s lateness: a LATE pane
        .advance_watermark_to(T0_S + 3600 + 601)  # the hour expires
        .add_elements([stamped(too_late)])  # beyond the lateness: in no pane
        .advance_watermark_to_infinity()
    )
    _run(
        stream,
        [
            expected_usage([on_time], pane_timing="ON_TIME", pane_index=0),
            expected_usage([on_time, late], pane_timing="LATE", pane_index=1),
        ],
        allowed_lateness_s=600,
    )


def test_early_panes_every_early_firing_s_accumulate():
    a = ev(T0_S + 10, event_id="a", user_key="u1")
    b = ev(T0_S + 20, event_id="b", user_key="u1")
    other = ev(T0_S + 30, event_id="c", user_key="u2")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(a)])
        .advance_processing_time(301)  # past early_firing_s = 300
        .add_elements([stamped(b), stamped(other)])
        .advance_processing_time(301)
        .advance_watermark_to(T0_S + 3600)
        .advance_watermark_to_infinity()
    )
    _run(
        stream,
        [
            expected_usage([a], pane_timing="EARLY", pane_index=0),
            expected_usage([a, b], pane_timing="EARLY", pane_index=1),
            expected_usage([other], pane_timing="EARLY", pane_index=0),
            # the ON_TIME panes have nothing new: their rows would repeat the EARLY ones
        ],
    )


def test_a_pane_holds_only_the_users_of_its_shard_that_changed():
    """Users of one shard share its panes and pane index, but a pane re-emits only the users
    with events since the shard's last pane; a pane with none emits nothing."""
    a = ev(T0_S + 10, event_id="a", user_key="u1")
    b = ev(T0_S + 20, event_id="b", user_key="u28")
    assert shard_of_user("u1") == shard_of_user("u28")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(a)])
        .advance_processing_time(301)
        .add_elements([stamped(b)])
        .advance_processing_time(301)
        .advance_watermark_to(T0_S + 3600)  # ON_TIME pane: nothing new since pane 1
        .advance_watermark_to_infinity()
    )
    _run(
        stream,
        [
            expected_usage([a], pane_timing="EARLY", pane_index=0),
            expected_usage([b], pane_timing="EARLY", pane_index=1),
        ],
    )


def test_a_late_event_re_emits_its_own_user_not_its_shard():
    """The cost that made a local stream fall behind after an hour boundary: every batch of
    late events fired a LATE pane that re-emitted every user of the shard."""
    a = ev(T0_S + 10, event_id="a", user_key="u1")
    b = ev(T0_S + 20, event_id="b", user_key="u28")
    late_a = ev(T0_S + 30, event_id="c", user_key="u1", token_count=7)
    late_a2 = ev(T0_S + 40, event_id="d", user_key="u1", token_count=9)
    assert shard_of_user("u1") == shard_of_user("u28")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(a), stamped(b)])
        .advance_watermark_to(T0_S + 3600)  # ON_TIME: both users
        .add_elements([stamped(late_a)])  # LATE pane 1: u1 only
        .advance_watermark_to(T0_S + 3610)
        .add_elements([stamped(late_a2)])  # LATE pane 2: u1 only
        .advance_watermark_to_infinity()
    )
    _run(
        stream,
        [
            expected_usage([a], pane_timing="ON_TIME", pane_index=0),
            expected_usage([b], pane_timing="ON_TIME", pane_index=0),
            expected_usage([a, late_a], pane_timing="LATE", pane_index=1),
            expected_usage([a, late_a, late_a2], pane_timing="LATE", pane_index=2),
        ],
        allowed_lateness_s=600,
    )


def test_the_next_hour_of_a_shard_starts_afresh():
    """A shard's next hour is a key of its own: its first pane emits its users although the
    same users were emitted in the expired hour before, and nothing of that hour comes back."""
    a = ev(T0_S + 10, event_id="a", user_key="u1")
    next_hour = ev(T0_S + 3600 + 10, event_id="b", user_key="u1")
    stream = (
        TestStream()
        .advance_watermark_to(T0_S)
        .add_elements([stamped(a)])
        .advance_watermark_to(T0_S + 3600 + 601)  # the first hour closes and expires
        .add_elements([stamped(next_hour)])
        .advance_watermark_to_infinity()
    )
    _run(
        stream,
        [
            expected_usage([a], pane_timing="ON_TIME", pane_index=0),
            expected_usage([next_hour], pane_timing="ON_TIME", pane_index=0),
        ],
        allowed_lateness_s=600,
    )
