"""ChooseCopies: the line written for every event id several valid lines carry."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.support.core_inputs import T0, event_id, raw
from tests.support.pipelines import TestPipeline
from transforms.copies import ChooseCopies
from transforms.elements import LineChunk
from transforms.parse import ParseLimits

LIMITS = ParseLimits(now=T0 + dt.timedelta(minutes=10))


def chunk(source: str, *lines: bytes, start: int = 0) -> LineChunk:
    offsets, position = [], start
    for line in lines:
        offsets.append(position)
        position += len(line) + 1
    return LineChunk(source, lines, tuple(offsets))


def assert_chosen(chunks, expected, limits=LIMITS):
    with TestPipeline() as p:
        out = p | beam.Create(chunks) | ChooseCopies(limits, num_shards=3)
        assert_that(out, equal_to(expected))


def test_ids_carried_once_are_not_chosen():
    assert_chosen([chunk("a", raw(1), raw(2))], [])


def test_the_earliest_event_time_wins_wherever_it_is():
    later, earlier = raw(1, offset_s=90, request_id="retry"), raw(1, offset_s=5)
    first = chunk("a", later)
    second = chunk("b", raw(2), earlier, start=1000)
    offset = second.offsets[1]
    assert_chosen([first, second], [(event_id(1), ("b", offset))])


def test_identical_copies_are_told_apart_by_position():
    line = raw(1)
    assert_chosen([chunk("b", line), chunk("a", line, line, start=50)], [(event_id(1), ("a", 50))])


def test_content_breaks_ties_before_position():
    z, a = raw(1, request_id="R-z"), raw(1, request_id="R-a")
    c = chunk("a", z, a)
    assert_chosen([c], [(event_id(1), ("a", c.offsets[1]))])


def test_invalid_copies_are_never_chosen():
    invalid = raw(1, offset_s=0, latency_ms=-1)  # earliest, but dead-lettered
    future = raw(1, offset_s=3600)  # beyond the pinned clock's skew: dead-lettered
    valid = raw(1, offset_s=30)
    assert_chosen([chunk("a", invalid, future, valid)], [])  # one valid copy: no choice
    twice = chunk("a", invalid, valid, valid)
    assert_chosen([twice], [(event_id(1), ("a", twice.offsets[1]))])


def test_the_pinned_clock_decides_validity():
    soon = raw(1, offset_s=700)  # 11:40 after T0: within 5 min of T0 + 10 min only
    c = chunk("a", soon, soon)
    assert_chosen([c], [(event_id(1), ("a", 0))])
    assert_chosen([c], [], ParseLimits(now=T0))


def test_needs_a_pinned_clock_and_offsets():
    with pytest.raises(ValueError, match=r"limits\.now"):
        ChooseCopies(ParseLimits())
    with pytest.raises(Exception, match="offsets"):
        assert_chosen([LineChunk("a", (raw(1),))], [])


def test_one_chunk_of_many_lines_and_several_shards():
    lines = [raw(i) for i in range(20)] + [raw(3, offset_s=1), raw(17)]
    c = chunk("a", *lines)
    # id 3: the copy at offset_s=1 is earlier; id 17: identical copies, the first position
    assert_chosen([c], [(event_id(3), ("a", c.offsets[20])), (event_id(17), ("a", c.offsets[17]))])
