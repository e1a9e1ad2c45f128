"""The reference clock of batch runs (``pipelines.clock``): given, recorded, or the launch time
recorded, one per input under an output root."""

from __future__ import annotations

import datetime as dt

from pipelines.clock import CLOCK_FILE, now_problems, read_references, reference_now

LAUNCH = dt.datetime(2026, 11, 7, 12, 0, tzinfo=dt.UTC)


def test_the_first_run_records_its_launch_time_and_reruns_reuse_it(tmp_path):
    root = str(tmp_path / "out")
    assert reference_now(root, "backfill:a.jsonl", "", LAUNCH) == "2026-11-07T12:00:00+00:00"
    later = LAUNCH + dt.timedelta(days=3)
    assert reference_now(root, "backfill:a.jsonl", "", later) == "2026-11-07T12:00:00+00:00"
    # Another input over the same root: its own launch time, so newer events are not rejected.
    assert reference_now(root, "backfill:b.jsonl", "", later) == later.isoformat()
    assert set(read_references(root)) == {"backfill:a.jsonl", "backfill:b.jsonl"}
    assert (tmp_path / "out" / CLOCK_FILE).exists()


def test_a_given_now_wins_and_is_recorded_for_the_next_run(tmp_path):
    root = str(tmp_path)
    reference_now(root, "in", "", LAUNCH)
    given = "2026-11-08T09:30:00+01:00"
    assert reference_now(root, "in", given, LAUNCH) == "2026-11-08T08:30:00+00:00"
    assert reference_now(root, "in", "", LAUNCH) == "2026-11-08T08:30:00+00:00"


def test_now_must_be_rfc_3339_with_an_offset():
    assert now_problems("") == []
    assert now_problems("2026-11-07T00:00:00Z") == []
    assert now_problems("2026-11-07T00:00:00") != []  # no offset
    assert now_problems("yesterday") != []
