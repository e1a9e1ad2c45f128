"""Builders of pipeline elements for tests, with valid defaults and keyword overrides."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from transforms.elements import RedactedEvent

__all__ = ["EPOCH", "events_of", "pinned_clock", "redacted_event"]

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def redacted_event(**overrides: Any) -> RedactedEvent:
    """Returns a valid ``RedactedEvent``; any field can be overridden by keyword.

    ``event_time`` may also be given as ``event_time_s`` (seconds since the epoch, which is how
    TestStream scripts time); ``event_date`` follows ``event_time`` unless overridden.
    """
    if "event_time_s" in overrides:
        overrides["event_time"] = EPOCH + dt.timedelta(seconds=overrides.pop("event_time_s"))
    event_time = overrides.get("event_time", dt.datetime(2026, 1, 27, 10, 0, 5, tzinfo=dt.UTC))
    fields: dict[str, Any] = {
        "event_id": "evt-0001",
        "request_id": "req-0001",
        "user_key": "user-key-0001",
        "event_time": event_time,
        "event_date": event_time.date(),
        "schema_version": "1",
        "model": "gemini-2.5-pro",
        "model_version": "001",
        "latency_ms": 250.0,
        "token_count": 300,
        "prompt_tokens": 200,
        "completion_tokens": 100,
        "policy_flags": (),
        "region": "europe-west1",
        "prompt": "Summarize the quarterly report for [PERSON].",
        "response": "The report says revenue grew.",
        "data_class": "INTERNAL",
        "redaction_counts": {},
        "unknown_field_count": 0,
        "redaction_engine": "regex-v1",
        "policy_version": "2026-01",
        "processed_at": event_time + dt.timedelta(seconds=1),
        "input_id": None,
        "ingested_at": None,
    }
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"unknown RedactedEvent fields: {sorted(unknown)}")
    fields.update(overrides)
    return RedactedEvent(**fields)


def events_of(batches: beam.PCollection, label: str) -> beam.PCollection:
    """The events of a PCollection of ``EventBatch`` (the core's ``events``), one per element."""
    return batches | label >> beam.FlatMap(lambda batch: batch.events)


def pinned_clock(seconds: float) -> Callable[[], Timestamp]:
    """A clock that always reads ``seconds`` since the epoch (a picklable callable, for steps
    that take a ``clock``, so a TestStream script decides what "now" is)."""
    return functools.partial(Timestamp, seconds)
