"""Every input accounted for exactly once, one winner per event id, metrics a function of the
archive, deterministic reruns: the cases of issue 21 ("What was found") as regression tests,
each ending with ``verify``.

* The counts identity on input that is mostly rejected, with exact copies of rejected lines.
* One audit record per input: third and later copies and repeated bad lines included.
* Stores agree: the same event id with other content in a second run; two backfills over
  disjoint inputs for one minute; a forged copy with an earlier event time in one run.
* Reruns agree: the reference clock is recorded, so a rerun gives an event the same outcome.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import random
import sqlite3
import uuid

import duckdb
import fastavro
import pytest

from pipelines import backfill
from pipelines.clock import read_references
from pipelines.local.summary import summarize
from tests.support.verify import assert_verified, verify_output

MINUTE = "2026-01-27T12:00:00Z"


def event(n: int, seconds: int = 0, **changes) -> dict:
    document = {
        "event_id": str(uuid.UUID(int=n, version=4)),
        "request_id": f"R-{n}",
        "user_id": f"U-{n % 7}",
        "event_time": f"2026-01-27T12:00:{seconds:02d}Z",
        "model": "gpt-4o-mini",
        "latency_ms": 100.0 + n,
        "token_count": 10,
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "region": "us",
    }
    document.update(changes)
    return document


def write_lines(path, documents) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in documents))
    return str(path)


def run_backfill(root, input_path: str, run_id: str, *extra: str):
    args = ["--input", input_path, "--output_root", str(root), "--run_id", run_id, *extra]
    assert backfill.run(args) == 0
    return summarize(str(root), run_id, dt.datetime.now(dt.UTC))


def audit(root) -> list[tuple]:
    with sqlite3.connect(f"{root}/audit.sqlite") as db:
        return db.execute("SELECT input_id, outcome, event_id FROM audit_log").fetchall()


def archived(root) -> list[dict]:
    records = []
    for path in sorted(glob.glob(f"{root}/raw/**/*.avro", recursive=True)):
        with open(path, "rb") as handle:
            records += list(fastavro.reader(handle))
    return records


def minute_row(root) -> tuple[int, int]:
    with duckdb.connect(f"{root}/warehouse.duckdb", read_only=True) as db:
        return db.execute("SELECT request_count, token_sum FROM metrics_minute").fetchone()


# --- mostly rejected input, with copies -------------------------------------------------------


def mostly_rejected(
    rejected: int = 1600, valid: int = 200, seed: int = 21
) -> tuple[list[dict], dict[str, int]]:
    """Lines like the issue's 206,072 (scaled down by default; ``rejected=83_000,
    valid=2_600`` is about its size): most carry a schema_version of a major version the
    pipeline has no converter for, "2.0" or "3" (dead-lettered; the issue's "1.0" and "1.1" are
    minor versions, accepted since), many of those repeated exactly; a few valid events, with
    redeliveries (third copies included) and, for one in ten, a copy with other content.
    Returns the lines and how many of each outcome they must give."""
    rng = random.Random(seed)
    lines, expected = [], {"written": 0, "duplicate": 0, "duplicate_conflict": 0}
    other_content = []
    for n in range(1, rejected + 1):
        line = event(n, rng.randrange(60), schema_version=rng.choice(("2.0", "3")))
        lines += [line] * rng.choice((1, 1, 2, 3, 5))  # exact copies of a rejected line
    expected["dead_lettered"] = len(lines)
    for n in range(rejected + 1, rejected + valid + 1):
        document = event(n, rng.randrange(60))
        copies = rng.choice((1, 2, 3, 4))
        lines += [document] * copies
        expected["written"] += 1
        expected["duplicate"] += copies - 1
        if n % 10 == 0:
            other_content.append({**document, "token_count": 99})  # same id, other content
            expected["duplicate_conflict"] += 1
    rng.shuffle(lines)
    # After every copy of its event: the first copy in the input is the one written.
    return lines + other_content, expected


@pytest.fixture(scope="module")
def rejected_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("accounting")
    lines, expected = mostly_rejected()
    path = write_lines(root / "mostly-rejected.jsonl", lines)
    summary = run_backfill(root, path, "mostly-rejected", "--chunk_bytes", "65536")
    return root, lines, expected, summary


def test_the_counts_identity_holds_when_most_lines_are_rejected_copies(rejected_store):
    _, lines, expected, summary = rejected_store
    assert summary.events_read == len(lines)
    assert (summary.written, summary.duplicates, summary.conflicts, summary.dead_lettered) == (
        expected["written"],
        expected["duplicate"],
        expected["duplicate_conflict"],
        expected["dead_lettered"],
    )
    assert summary.balanced


def test_every_input_has_exactly_one_audit_record(rejected_store):
    root, lines, expected, _ = rejected_store
    rows = audit(root)
    assert len(rows) == len(lines)  # copies and repeated bad lines included
    assert len({input_id for input_id, _, _ in rows}) == len(lines)
    outcomes = {}
    for _, outcome, _ in rows:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes == expected  # the audit log and the run summary agree to the record
    assert_verified(root)


def test_a_rerun_changes_nothing(rejected_store, tmp_path):
    root, lines, _, _ = rejected_store
    before = sorted(audit(root))
    path = glob.glob(f"{root}/mostly-rejected.jsonl")[0]
    summary = run_backfill(root, path, "mostly-rejected-again", "--chunk_bytes", "65536")
    assert summary.balanced and summary.events_read == len(lines)
    assert sorted(audit(root)) == before
    assert_verified(root)


# --- stores agree -------------------------------------------------------------------------------


def test_the_same_event_id_with_other_content_in_a_second_run(tmp_path):
    """First archived wins: run B's copy of X (other content) is a duplicate_conflict, not
    archived and not counted; archive, audit and metrics all hold run A's."""
    x_a, x_b = event(1, 10, token_count=10), event(1, 10, token_count=500)
    run_backfill(tmp_path, write_lines(tmp_path / "a.jsonl", [x_a, event(2)]), "a")
    summary = run_backfill(tmp_path, write_lines(tmp_path / "b.jsonl", [x_b, event(3)]), "b")
    assert (summary.written, summary.conflicts) == (1, 1)
    assert sorted(r["token_count"] for r in archived(tmp_path)) == [10, 10, 10]
    outcomes = {input_id.rsplit("/", 1)[1]: outcome for input_id, outcome, _ in audit(tmp_path)}
    assert outcomes["a.jsonl#0"] == "written"
    assert outcomes["b.jsonl#0"] == "duplicate_conflict"
    assert minute_row(tmp_path) == (3, 30)  # X counted once, with run A's tokens
    assert_verified(tmp_path)


def test_two_backfills_over_disjoint_inputs_for_one_minute(tmp_path):
    """The second backfill recomputes the minute from the whole archive: 150, not 50."""
    first = [event(n, n % 60) for n in range(1, 101)]
    second = [event(n, n % 60) for n in range(101, 151)]
    run_backfill(tmp_path, write_lines(tmp_path / "first.jsonl", first), "first")
    assert minute_row(tmp_path) == (100, 1000)
    run_backfill(tmp_path, write_lines(tmp_path / "second.jsonl", second), "second")
    assert len(archived(tmp_path)) == 150
    assert minute_row(tmp_path) == (150, 1500)
    assert_verified(tmp_path)


def test_a_forged_copy_with_an_earlier_event_time_does_not_shadow_the_event(tmp_path):
    """Within a run the first copy in the input wins; the later copy claims an earlier time
    (another minute) and other content: a conflict, archived nowhere, counted nowhere."""
    real = event(1, 30)
    forged = event(1, 0, event_time="2026-01-27T11:58:00Z", request_id="forged")
    summary = run_backfill(tmp_path, write_lines(tmp_path / "in.jsonl", [real, forged]), "f")
    assert (summary.written, summary.conflicts) == (1, 1)
    (kept,) = archived(tmp_path)
    assert (kept["request_id"], kept["event_time"].minute) == ("R-1", 0)
    with duckdb.connect(f"{tmp_path}/warehouse.duckdb", read_only=True) as db:
        windows = db.execute(
            "SELECT strftime(window_start, '%H:%M') FROM metrics_minute"
        ).fetchall()
    assert windows == [("12:00",)]
    assert_verified(tmp_path)


def test_verify_reports_metrics_and_audit_records_that_disagree_with_the_archive(tmp_path, capsys):
    run_backfill(tmp_path, write_lines(tmp_path / "in.jsonl", [event(1), event(2)]), "v")
    assert verify_output(tmp_path, capsys)[0] == 0
    with duckdb.connect(f"{tmp_path}/warehouse.duckdb") as db:
        db.execute("UPDATE metrics_minute SET request_count = 1, token_sum = 10")
    code, printed = verify_output(tmp_path, capsys)
    assert code == 1
    assert "2026-01-27T12:00:00Z gpt-4o-mini us: request_count: stored 1, archive 2" in printed
    assert "token_sum: stored 10, archive 20" in printed
    with sqlite3.connect(f"{tmp_path}/audit.sqlite") as db:
        (input_id,) = db.execute("SELECT input_id FROM audit_log LIMIT 1").fetchone()
        db.execute("DELETE FROM audit_log WHERE input_id = ?", [input_id])
    code, printed = verify_output(tmp_path, capsys, "--skip_audit")
    assert code == 1 and "audit log" not in printed
    code, printed = verify_output(tmp_path, capsys)
    assert f"input {input_id}: archived, no audit record" in printed


# --- reruns agree ---------------------------------------------------------------------------


def test_a_rerun_later_gives_an_event_the_outcome_it_had(tmp_path, monkeypatch):
    """An event 200 s ahead of the launch is beyond a 120 s clock skew: dead-lettered. A rerun
    an hour later (its launch time moved on) is judged against the recorded reference, so the
    event is dead-lettered again, not written: one outcome for one event."""
    launched = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ahead = (launched + dt.timedelta(seconds=200)).isoformat().replace("+00:00", "Z")
    path = write_lines(tmp_path / "in.jsonl", [event(1, event_time=ahead), event(2)])
    skew = ("--max_clock_skew_s", "120")
    first = run_backfill(tmp_path, path, "first", *skew)
    assert (first.written, first.dead_letters) == (1, {"event_time_in_future": 1})
    (recorded,) = read_references(str(tmp_path)).values()
    later = launched + dt.timedelta(hours=1)
    monkeypatch.setattr(backfill, "_launch_time", lambda: later)
    again = run_backfill(tmp_path, path, "again", *skew)
    assert (again.written, again.dead_letters) == (1, {"event_time_in_future": 1})
    assert read_references(str(tmp_path)) == {f"backfill:{path}": recorded}
    assert sorted(outcome for _, outcome, _ in audit(tmp_path)) == ["dead_lettered", "written"]
    assert len(archived(tmp_path)) == 1
    assert_verified(tmp_path)
    # Without the record the later launch time would rule, and the event would be written.
    (tmp_path / "reference_clock.json").unlink()
    fresh = run_backfill(tmp_path, path, "fresh", *skew)
    assert fresh.dead_letters == {} and fresh.written == 2


def test_an_explicit_now_is_used_and_recorded(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [event(1, event_time="2026-01-27T12:10:00Z")])
    summary = run_backfill(tmp_path, path, "pinned", "--now", "2026-01-27T12:00:00Z")
    assert summary.dead_letters == {"event_time_in_future": 1}
    assert read_references(str(tmp_path))[f"backfill:{path}"]["now"] == "2026-01-27T12:00:00+00:00"
    with sqlite3.connect(f"{tmp_path}/audit.sqlite") as db:
        assert db.execute("SELECT outcome FROM audit_log").fetchall() == [("dead_lettered",)]
