"""ChooseCopies: the winning copy of every event id that several valid lines, or a line and the
archive, carry: the first archived, else the first line in the input (``transforms.winner``)."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.local.spill import CombinePerKeyOnDisk
from tests.conftest import TEST_PSEUDONYM_KEY
from tests.support.core_inputs import T0, event_id, raw
from tests.support.factories import redacted_event
from tests.support.pipelines import TestPipeline
from transforms.copies import ChooseCopies
from transforms.elements import LineChunk, RedactedEvent
from transforms.parse import ParseLimits, parse_event
from transforms.pii.pseudonym import pseudonymize
from transforms.winner import content_digest

LIMITS = ParseLimits(now=T0 + dt.timedelta(minutes=10))


def chunk(source: str, *lines: bytes, start: int = 0) -> LineChunk:
    offsets, position = [], start
    for line in lines:
        offsets.append(position)
        position += len(line) + 1
    return LineChunk(source, lines, tuple(offsets))


def content(line: bytes) -> bytes:
    """The content digest the pass computes for a line (its user id pseudonymised)."""
    event = parse_event(line, now=LIMITS.now, limits=LIMITS)
    key = TEST_PSEUDONYM_KEY.encode()
    return content_digest(event._replace(user_key=pseudonymize(event.user_id, key)))


def winner(c: LineChunk, i: int) -> tuple[str, bytes]:
    return f"{c.source}#{c.offsets[i]}", content(c.lines[i])


class _FakeArchive(beam.PTransform):
    """Stands in for the archive reader: the events of the partitions asked for."""

    def __init__(self, events: list[RedactedEvent]):
        super().__init__()
        self._events = events

    def expand(self, partitions):
        events = self._events
        return partitions | beam.FlatMap(
            lambda p: [e for e in events if (e.event_date.isoformat(), e.region) == p]
        ).with_output_types(RedactedEvent)


def assert_chosen(chunks, expected, limits=LIMITS, archived=None):
    """Checks the choice with Beam's CombinePerKey and with the local runner's on-disk combine
    (every input written out at once, so the merge reads many files)."""
    combines = {
        "CombinePerKey": None,
        "on disk": lambda fn: CombinePerKeyOnDisk(fn, flush_every=1),
    }
    for name, combine in combines.items():
        with TestPipeline() as p:
            read = None if archived is None else _FakeArchive(archived)
            out = (
                p
                | beam.Create(chunks)
                | ChooseCopies(limits, num_shards=3, read_archived=read, combine_per_shard=combine)
            )
            assert_that(out, equal_to(expected), label=f"Chosen ({name})")


def test_ids_carried_once_are_not_chosen():
    assert_chosen([chunk("a", raw(1), raw(2))], [])


def test_the_first_line_wins_whatever_the_event_times():
    later, earlier = raw(1, offset_s=90), raw(1, offset_s=5, request_id="forged")
    first = chunk("a", later)
    second = chunk("b", raw(2), earlier, start=1000)
    assert_chosen([second, first], [(event_id(1), winner(first, 0))])


def test_identical_copies_are_told_apart_by_position():
    line = raw(1)
    a = chunk("a", line, line, start=50)
    assert_chosen([chunk("b", line), a], [(event_id(1), winner(a, 0))])


def test_position_decides_before_content():
    z, a = raw(1, request_id="R-z"), raw(1, request_id="R-a")
    c = chunk("a", z, a)
    assert_chosen([c], [(event_id(1), winner(c, 0))])


def test_invalid_copies_are_never_chosen():
    invalid = raw(1, offset_s=0, latency_ms=-1)  # first, but dead-lettered
    future = raw(1, offset_s=3600)  # beyond the pinned clock's skew: dead-lettered
    valid = raw(1, offset_s=30)
    assert_chosen([chunk("a", invalid, future, valid)], [])  # one valid copy: no choice
    twice = chunk("a", invalid, valid, valid)
    assert_chosen([twice], [(event_id(1), winner(twice, 1))])


def test_the_pinned_clock_decides_validity():
    soon = raw(1, offset_s=700)  # 11:40 after T0: within 5 min of T0 + 10 min only
    c = chunk("a", soon, soon)
    assert_chosen([c], [(event_id(1), winner(c, 0))])
    assert_chosen([c], [], ParseLimits(now=T0))


def test_needs_a_pinned_clock_and_offsets():
    with pytest.raises(ValueError, match=r"limits\.now"):
        ChooseCopies(ParseLimits())
    with pytest.raises(Exception, match="offsets"):
        assert_chosen([LineChunk("a", (raw(1),))], [])


def test_one_chunk_of_many_lines_and_several_shards():
    lines = [raw(i) for i in range(20)] + [raw(3, offset_s=1), raw(17)]
    c = chunk("a", *lines)
    # id 3: a copy with an earlier event time comes later, and loses; id 17: identical copies
    assert_chosen([c], [(event_id(3), winner(c, 3)), (event_id(17), winner(c, 17))])


def _archived(n: int, input_id: str, **changes) -> RedactedEvent:
    fields = {"event_time": T0 + dt.timedelta(seconds=5), "region": "us", **changes}
    return redacted_event(event_id=event_id(n), input_id=input_id, **fields)


def test_the_first_archived_copy_wins_over_every_line():
    """A line whose id is archived already (in a partition the input touches) loses to the
    archived copy, the first processed of them; an archived copy of the line's own input
    (a re-run) wins, so that line is written again; a copy archived in a partition the input
    does not touch is not read."""
    c = chunk("f", raw(1), raw(2), raw(3), raw(4, region="eu"))
    first = _archived(1, "pubsub:a", processed_at=T0)
    second = _archived(1, "pubsub:b", processed_at=T0 + dt.timedelta(seconds=1))
    rerun = _archived(2, "f#" + str(c.offsets[1]))
    elsewhere = _archived(3, "pubsub:c", region="asia")  # a partition no line falls in
    expected = [
        (event_id(1), ("pubsub:a", content_digest(first))),
        (event_id(2), ("f#" + str(c.offsets[1]), content_digest(rerun))),
    ]
    assert_chosen([c], expected, archived=[second, first, rerun, elsewhere])
