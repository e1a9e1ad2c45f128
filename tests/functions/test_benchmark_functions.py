"""benchmarks/functions.py: its floor must time the backfill's real work, not skip any of it."""

from __future__ import annotations

import datetime as dt
import io
import os
import sqlite3

import fastavro
import pytest

from benchmarks import functions
from pipelines.local import loadgen
from transforms.pii.settings import RedactionSettings


@pytest.fixture
def lines(monkeypatch) -> list[bytes]:
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    now = dt.datetime.now(dt.UTC)
    return [g.payload for g in loadgen.EventGenerator(seed=5).batch(300, now)]


def test_every_step_does_its_work(lines, tmp_path):
    now = dt.datetime.now(dt.UTC)
    events = functions.parse_all(lines, now)
    assert 0 < len(events) < len(lines)  # the generator's malformed lines are left out
    settings = RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY")
    redacted = functions.redact_all(events, settings, 64, now)
    assert len(redacted) == len(events)
    assert any(e.redaction_counts for e in redacted)  # the engine ran and found PII
    assert all(len(e.user_key) == 64 for e in redacted)  # pseudonymised

    encoded = functions.archive_file(redacted)
    assert functions.archive_all(redacted) == len(encoded)
    assert sum(1 for _ in fastavro.reader(io.BytesIO(encoded))) == len(redacted)

    db_path = os.path.join(tmp_path, "audit.sqlite")
    # Every event is inserted as "written"; the generator's duplicates share an id, so the
    # idempotent insert keeps one row per id.
    ids = {e.event_id for e in redacted}
    assert len(ids) < len(redacted)
    assert functions.audit_all(redacted, db_path, now) == len(ids)
    with sqlite3.connect(db_path) as con:
        assert con.execute("SELECT count(*) FROM audit_log").fetchone() == (len(ids),)


def test_measure_times_each_step(lines):
    settings = RedactionSettings("offline", "env:GENAI_PSEUDONYM_KEY")
    steps = functions.measure(lines, settings, 64)
    assert list(steps) == ["parse", "redact and classify", "archive (Avro)", "audit (SQLite)"]
    assert all(seconds > 0 for seconds in steps.values())
