"""Inputs and views of ``DeduplicateEvents``' outputs for the dedupe tests."""

from __future__ import annotations

import apache_beam as beam

from tests.support.factories import redacted_event
from transforms.elements import EventBatch

__all__ = ["batch_of", "ev", "ids"]


def ev(event_id: str, t_s: int, **kw):
    return redacted_event(event_id=event_id, event_time_s=t_s, **kw)


def ids(pcoll, label):
    """(event_id, name) of every event, whether the output holds batches or events: the name
    is the event's ``input_id`` (which copies of one content differ by), else its
    ``request_id``."""
    return pcoll | label >> beam.FlatMap(
        lambda x: [(e.event_id, e.input_id or e.request_id) for e in getattr(x, "events", [x])]
    )


def batch_of(events, source="", offsets=()):
    return EventBatch(source, tuple(events), tuple(offsets))
