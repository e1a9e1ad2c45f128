"""Helpers of the element types."""

from __future__ import annotations

import datetime as dt
import random

from apache_beam.utils.timestamp import Timestamp

from transforms.elements import LineChunk, event_micros, stream_chunk


def test_event_micros_is_beams_timestamp():
    rng = random.Random(5)
    zones = [
        dt.UTC,
        dt.timezone(dt.timedelta(hours=5, minutes=30)),
        dt.timezone(-dt.timedelta(hours=8)),
    ]
    for _ in range(2000):
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            microseconds=rng.randint(-(10**15), 10**17)
        )
        moment = moment.astimezone(rng.choice(zones))
        expected = Timestamp.from_utc_datetime(moment.astimezone(dt.UTC)).micros
        assert event_micros(moment) == expected, moment


def test_stream_chunk_has_no_source_or_offsets():
    assert stream_chunk((b"a", b"b")) == LineChunk("", (b"a", b"b"), ())
