"""benchmarks/cost_per_event.py: every step it times does its work, and the sizing follows
the formula docs/deploy.md quotes (vCPUs = events/s * µs * overhead / utilisation)."""

from __future__ import annotations

import datetime as dt

import pytest

from benchmarks import cost_per_event
from pipelines.local import loadgen


def test_every_step_is_measured(monkeypatch):
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    generated = loadgen.EventGenerator(
        seed=5, profile=loadgen.LoadProfile(malformed_share=0.2)
    ).batch(200, dt.datetime.now(dt.UTC))
    malformed = [g.payload for g in generated if g.kind == loadgen.MALFORMED]
    assert malformed
    steps = cost_per_event.measure([g.payload for g in generated], malformed)
    assert list(steps) == [
        "parse",
        "redact and classify",
        "dedupe",
        "aggregate",
        "archive (Avro)",
        "audit (records, PostgreSQL, Write API rows)",
        "shuffles (coding)",
        "dead letters",
    ]
    assert all(seconds > 0 for seconds in steps.values()), steps


def test_sizing_formula():
    rows = cost_per_event.sizing(139.0, 4.0, 0.6, 2)
    assert [(rate, round(vcpus, 2), workers) for rate, vcpus, workers in rows] == [
        (1_000, 0.93, 1),
        (5_000, 4.63, 3),
    ]
    assert cost_per_event.sizing(1.0, 1.0, 1.0, 4)[0][2] == 1  # at least one worker
    with pytest.raises(ZeroDivisionError):
        cost_per_event.sizing(1.0, 1.0, 0.0, 4)
