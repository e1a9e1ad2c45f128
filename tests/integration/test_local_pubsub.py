"""Integration: the local Pub/Sub source at least once, on the embedded default.

``python -m pipelines.streaming --source pubsub`` runs as a command against the Pub/Sub
emulator (``pipelines.local.pubsub``: streaming pull; a message is acknowledged once its
outputs are committed) and its outputs are read back from disk:

* killed (SIGKILL) mid-stream and restarted: every published event archived, every message
  audited, once per message; a reconciliation over the archive then gives the exact metrics;
* every message delivered twice, by Pub/Sub (a lease that runs out before the commit) and by
  its publisher (each event published twice): nothing counted twice, every copy audited.

Without the local stack these are skipped with a loud reason (they fail when ``CI=true``).
"""

from __future__ import annotations

import collections
import datetime as dt
import subprocess
import sys

import pytest

from pipelines.local.loadgen import MALFORMED
from tests.support.local_pubsub import (
    ROOT,
    archived,
    audit_rows,
    dead_letters,
    emulator_project,
    expected_metrics,
    generate,
    malformed_ids,
    pipeline,
    publish,
    publishing,
    stored_metrics,
    summary_figure,
    topic,
    valid_event_ids,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project() -> str:
    return emulator_project()


_READ = r"pubsub: ([\d,]+) messages read"
_REDELIVERED = r"([\d,]+) redeliveries settled by message id"


def _audited(root, published) -> str | None:
    wanted = {m.input_id for m in published}
    have = {row["input_id"] for row in audit_rows(root)}
    return None if wanted <= have else f"{len(wanted - have)} of {len(wanted)} inputs not audited"


def _archived(root, published) -> str | None:
    missing = valid_event_ids(published) - {r["event_id"] for r in archived(root)}
    return f"{len(missing)} events not archived" if missing else None


def test_killed_mid_stream_and_restarted_loses_nothing_and_counts_nothing_twice(project, tmp_path):
    root = tmp_path / "out"
    with topic(project) as names:
        before = publish(names.topic, generate(100, seed=41))
        # At most 30 messages unacknowledged, and more published all along: when it is killed
        # the first run has messages read and not committed, and committed and not yet
        # acknowledged.
        with (
            pipeline(
                names.subscription, root, tmp_path / "run1.log", "--pubsub_max_outstanding=30"
            ) as run,
            publishing(names.topic, seed=42) as during,
        ):
            wait_until(lambda: None if len(audit_rows(root)) >= 60 else "warming up", run, 90)
            run.kill()
        audited_at_kill = len(audit_rows(root))
        assert 0 < audited_at_kill < len(before) + len(during), audited_at_kill
        published = before + during + publish(names.topic, generate(40, seed=43))  # while down
        with pipeline(names.subscription, root, tmp_path / "run2.log") as run:
            wait_until(lambda: _audited(root, published) or _archived(root, published), run, 240)
            output = run.drain()

    # The restarted run read again what the first had not acknowledged: at least every
    # message not audited when it was killed.
    assert summary_figure(output, _READ) >= len(published) - audited_at_kill

    # Nothing lost, nothing counted twice: one audit record per message, each message once.
    rows = audit_rows(root)
    per_input = collections.Counter(row["input_id"] for row in rows)
    assert set(per_input) == {m.input_id for m in published}
    assert max(per_input.values()) == 1, per_input.most_common(3)

    # Every valid event archived; an event archived before the kill and not acknowledged is
    # archived again by the restart, as the same message (input_id): the archive holds it
    # twice, identical, and dedupe by event_id (the reconciliation) counts it once.
    records = archived(root)
    assert {r["event_id"] for r in records} == valid_event_ids(published)
    by_event = collections.defaultdict(set)
    for record in records:
        by_event[record["event_id"]].add(record["input_id"])
    assert all(len(inputs) == 1 for inputs in by_event.values())
    assert {r["input_id"] for r in dead_letters(root)} == malformed_ids(published)

    # The metrics of windows open at the kill lost the first run's state; a reconciliation
    # over the archive makes them exact again.
    day = dt.datetime.now(dt.UTC).date().isoformat()
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).date().isoformat()
    reconciled = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.backfill",
            "--input_format=avro",
            f"--input={root}",
            f"--output_root={root}",
            f"--start_date={start}",
            f"--end_date={day}",
            "--regions=us,eu,asia",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert reconciled.returncode == 0, reconciled.stdout[-3000:] + reconciled.stderr[-3000:]
    assert stored_metrics(root) == expected_metrics(published)


def test_every_message_delivered_twice_is_counted_once(project, tmp_path):
    root = tmp_path / "out"
    generated = generate(120, seed=44)
    valid = [g for g in generated if g.kind != MALFORMED]
    with topic(project) as names:
        # Each event published twice (two messages, two input ids); a malformed message once
        # (its copies would share a dead-letter id).
        published = publish(names.topic, generated) + publish(names.topic, valid)
        # Leases given up after 1 s and archive files written 25 s after their first record:
        # Pub/Sub delivers each message again (10 s ack deadline), more than once, before its
        # first delivery can be acknowledged.
        with pipeline(
            names.subscription,
            root,
            tmp_path / "run.log",
            "--pubsub_max_lease_s=1",
            "--file_flush_s=25",
        ) as run:
            wait_until(lambda: _audited(root, published) or _archived(root, published), run, 120)
            output = run.drain()

    # Pub/Sub's redeliveries settled by message id; every message went into the pipeline once.
    assert summary_figure(output, _REDELIVERED) >= len(published)
    assert summary_figure(output, _READ) == len(published)
    assert summary_figure(output, r"events read\s+(\d+)") == len(published)

    # Audit: one record per message; per event one written and one duplicate.
    rows = audit_rows(root)
    per_input = collections.Counter(row["input_id"] for row in rows)
    assert set(per_input) == {m.input_id for m in published}
    assert max(per_input.values()) == 1
    outcomes = collections.Counter((row["event_id"], row["outcome"]) for row in rows)
    for event_id in valid_event_ids(published):
        assert outcomes[(event_id, "written")] == 1
        assert outcomes[(event_id, "duplicate")] == 1

    # Archive: each event once; metrics: each event counted once.
    records = archived(root)
    assert sorted(r["event_id"] for r in records) == sorted(valid_event_ids(published))
    assert {r["input_id"] for r in dead_letters(root)} == malformed_ids(published)
    assert stored_metrics(root) == expected_metrics(published)
