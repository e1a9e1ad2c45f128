"""Dead-letter replay end to end (``pipelines.replay`` on the store of two backfills):
re-submission through the core, the audit trail, idempotency, records that fail again, records
that cannot be replayed, the metrics reconciled afterwards, and the command's options. The
plain functions of the replay are in ``tests/functions/test_replay.py``."""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import sqlite3

import duckdb
import fastavro
import pandas as pd
import pytest

from pipelines import backfill, replay
from tests.support.core_inputs import event_id
from tests.support.fakes import register_failing_engine
from tests.support.pipelines import usage_error
from tests.support.replay import AHEAD, F1, F2, F3, KEY, N1, O1, R1, SOON, V1
from tests.support.verify import assert_verified
from transforms.deadletter import dead_letter_id
from transforms.pii.pseudonym import pseudonymize


def run_backfill(root, lines, run_id, *extra):
    path = root / f"{run_id}.jsonl"
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    args = ["--input", str(path), "--output_root", str(root), "--run_id", run_id, *extra]
    assert backfill.run(args) == 0


def run_replay(root, run_id, reason, *extra):
    dates = sorted(p.split("dt=")[1][:10] for p in glob.glob(f"{root}/dead_letter/dt=*"))
    args = ["--output_root", str(root), "--run_id", run_id, "--reason", reason]
    args += ["--start_date", dates[0], "--end_date", dates[-1], *extra]
    assert replay.run(args) == 0
    return replay.replay_report(json.loads((root / "runs" / f"{run_id}.json").read_text()))


def avro(root, kind: str) -> list[dict]:
    records = []
    for path in sorted(glob.glob(f"{root}/{kind}/**/*.avro", recursive=True)):
        with open(path, "rb") as handle:
            records += list(fastavro.reader(handle))
    return records


def dead_letter_ids(root) -> collections.Counter:
    return collections.Counter(r["dead_letter_id"] for r in avro(root, "dead_letter"))


def audit(root) -> list[tuple]:
    with sqlite3.connect(f"{root}/audit.sqlite") as db:
        return db.execute(
            "SELECT outcome, event_id, reason, dead_letter_id FROM audit_log ORDER BY audit_id"
        ).fetchall()


def outcomes(root) -> dict[str, int]:
    return dict(collections.Counter(row[0] for row in audit(root)))


def metrics(root) -> pd.DataFrame:
    with duckdb.connect(f"{root}/warehouse.duckdb", read_only=True) as db:
        frame = db.execute(
            "SELECT window_start, model, region, request_count, token_sum, source "
            "FROM metrics_minute ORDER BY ALL"
        ).df()
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True).dt.as_unit("ns")
    return frame


def dead_letter_of(raw: bytes, step: str, reason: str) -> str:
    return dead_letter_id(hashlib.sha256(raw).hexdigest(), step, reason)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The dead-letter store of two runs, and what the first replay did to it."""
    monkeypatch = pytest.MonkeyPatch()
    register_failing_engine(monkeypatch)
    root = tmp_path_factory.mktemp("replay")
    run_backfill(root, [V1, F1, F2, F2, F3, N1, O1], "ingest-1", "--max_event_bytes", "4096")
    run_backfill(root, [R1], "ingest-2", "--redaction_engine", "failing")
    before = {"dead_letters": dead_letter_ids(root), "audit": outcomes(root)}
    # The fix: a wider clock skew. The engine still cannot redact F3's text.
    replay_args = ("--max_clock_skew_s", "86400", "--redaction_engine", "failing")
    first = run_replay(root, "replay-a", "event_time_in_future", *replay_args)
    after_first = {
        "dead_letters": dead_letter_ids(root),
        "audit": audit(root),
        "raw": sorted(str(r["event_id"]) for r in avro(root, "raw")),
        "metrics": metrics(root),
    }
    second = run_replay(root, "replay-b", "event_time_in_future", *replay_args)
    yield root, before, first, after_first, second
    monkeypatch.undo()


def test_the_store_before_replay(store):
    _, before, *_ = store
    # F2 was delivered twice: one id, two copies in the store, and two inputs, each with its
    # audit record (every input has one, repeated bad lines included).
    assert sorted(before["dead_letters"].values()) == [1, 1, 1, 1, 1, 2]
    assert before["audit"] == {"written": 1, "dead_lettered": 7}


def test_replay_resubmits_the_payloads_and_fails_again_with_the_new_reason(store):
    root, before, first, after, _ = store
    assert first == replay.ReplayReport(
        replayed=3,  # F1, F2 (two copies, one id), F3
        not_replayable={},
        submitted=3,
        written=2,
        duplicates=0,
        conflicts=0,
        failed_again={"redaction_failed": 1},
        new_dead_letters=1,
        archived={(AHEAD.date().isoformat(), "us"): 2},
    )
    assert first.balanced
    # The store keeps every original and gains one record: F3 under its new reason, with the
    # identity of its original input and a link to the record replayed.
    new_ids = set(after["dead_letters"]) - set(before["dead_letters"])
    assert len(new_ids) == 1
    (new,) = [r for r in avro(root, "dead_letter") if r["dead_letter_id"] in new_ids]
    original_f3 = dead_letter_of(F3, "parse", "event_time_in_future")
    assert new["dead_letter_id"] == dead_letter_of(F3, "redact", "redaction_failed")
    assert (new["reason"], new["step"], new["replay_of"]) == (
        "redaction_failed",
        "redact",
        original_f3,
    )
    assert (new["payload_sha256"], new["payload_bytes"]) == (
        hashlib.sha256(F3).hexdigest(),
        len(F3),
    )
    assert new["event_id"] == event_id(4)
    # The replayed events are archived, with the user key they had (not pseudonymised twice).
    assert after["raw"] == sorted([event_id(1), event_id(2), event_id(3)])
    replayed_events = [r for r in avro(root, "raw") if str(r["event_id"]) == event_id(2)]
    assert replayed_events[0]["user_key"] == pseudonymize("user-alice-0001", KEY)


def test_the_audit_log_records_each_replay_with_its_dead_letter(store):
    _, _, _, after, _ = store
    replayed = sorted(row[2:] for row in after["audit"] if row[0] == "replayed")
    assert replayed == sorted(
        [
            ("event_time_in_future", dead_letter_of(F1, "parse", "event_time_in_future")),
            ("event_time_in_future", dead_letter_of(F2, "parse", "event_time_in_future")),
            ("event_time_in_future", dead_letter_of(F3, "parse", "event_time_in_future")),
        ]
    )
    assert all(row[1] is None for row in after["audit"] if row[0] == "replayed")
    written = sorted(row[1] for row in after["audit"] if row[0] == "written")
    assert written == sorted([event_id(1), event_id(2), event_id(3)])
    # F3's submission (the input replay:<its dead letter>) failed again: a record of its own,
    # next to the original input's, naming the new dead letter.
    refailed = [
        row for row in after["audit"] if row[0] == "dead_lettered" and row[1] == event_id(4)
    ]
    assert sorted(refailed) == sorted(
        [
            (
                "dead_lettered",
                event_id(4),
                "event_time_in_future",
                dead_letter_of(F3, "parse", "event_time_in_future"),
            ),
            (
                "dead_lettered",
                event_id(4),
                "redaction_failed",
                dead_letter_of(F3, "redact", "redaction_failed"),
            ),
        ]
    )
    assert collections.Counter(row[0] for row in after["audit"]) == {
        "written": 3,  # V1, and the submissions of F1 and F2
        "dead_lettered": 8,  # the 7 inputs of the runs, and F3's submission
        "replayed": 3,
    }


def test_replaying_twice_does_not_double_count(store):
    root, _, first, after, second = store
    assert second == first  # the same submissions, outcomes and partitions
    assert dead_letter_ids(root) == after["dead_letters"]  # same ids, same number of copies
    assert audit(root) == after["audit"]
    assert sorted(str(r["event_id"]) for r in avro(root, "raw")) == after["raw"]
    pd.testing.assert_frame_equal(metrics(root), after["metrics"])
    assert_verified(root)


def test_the_replayed_events_are_in_the_reconciled_metrics(store):
    _, _, _, after, _ = store
    rows = after["metrics"]
    ahead = rows[rows["window_start"] == pd.Timestamp(AHEAD).floor("60s")]
    # F1 and F2 (token_count 10 n: 20 + 30), recomputed from the archive by the reconciliation.
    assert ahead[["request_count", "token_sum", "source"]].values.tolist() == [[2, 50, "backfill"]]
    soon = rows[rows["window_start"] == pd.Timestamp(SOON).floor("60s")]
    assert soon[["request_count", "token_sum"]].values.tolist() == [[1, 10]]


def test_a_record_failing_again_the_same_way_stays_as_it_is(store):
    root, *_ = store
    ids_before, audit_before = dead_letter_ids(root), audit(root)
    report = run_replay(root, "replay-c", "negative_value", "--max_clock_skew_s", "86400")
    assert (report.replayed, report.submitted, report.written) == (1, 1, 0)
    assert (report.failed_again, report.new_dead_letters, report.archived) == (
        {"negative_value:latency_ms": 1},
        0,
        {},
    )
    assert dead_letter_ids(root) == ids_before  # the same id: nothing new stored
    added = sorted(
        (collections.Counter(audit(root)) - collections.Counter(audit_before)).elements()
    )
    reason = "negative_value:latency_ms"
    n1 = dead_letter_of(N1, "parse", reason)
    # The note that it was replayed, and the submission's own record (the input
    # replay:<dead letter id>), which fails the same way.
    assert added == [("dead_lettered", event_id(5), reason, n1), ("replayed", None, reason, n1)]


def test_records_without_a_payload_are_counted_not_skipped(store):
    root, *_ = store
    audit_before = audit(root)
    report = run_replay(root, "replay-d", "oversize")
    assert report == replay.ReplayReport(
        replayed=0,
        not_replayable={"oversize": 1},
        submitted=0,
        written=0,
        duplicates=0,
        conflicts=0,
        failed_again={},
        new_dead_letters=0,
        archived={},
    )
    assert audit(root) == audit_before


def test_redaction_failures_replay_as_events_without_text(store):
    root, *_ = store
    # R1 (its engine failed) and F3's new record: both hold the metadata only.
    report = run_replay(root, "replay-e", "redaction_failed", "--max_clock_skew_s", "86400")
    assert (report.replayed, report.submitted, report.written, report.failed_again) == (2, 2, 2, {})
    assert report.archived == {
        (SOON.date().isoformat(), "eu"): 1,
        (AHEAD.date().isoformat(), "us"): 1,
    }
    events = {str(r["event_id"]): r for r in avro(root, "raw")}
    assert (events[event_id(7)]["prompt"], events[event_id(7)]["data_class"]) == (None, "PUBLIC")
    assert events[event_id(4)]["user_key"] == pseudonymize("user-alice-0001", KEY)
    # Every valid event is now counted once: V1, F1, F2, F3, R1.
    rows = metrics(root)
    assert rows["request_count"].sum() == 5
    assert rows["token_sum"].sum() == 10 * (1 + 2 + 3 + 4 + 7)
    assert outcomes(root)["written"] == 5
    assert_verified(root)


def test_replay_options_are_validated(capsys):
    for args, message in (
        (["--reason", "x"], "--start_date and --end_date are required"),
        (["--start_date", "2026-01-02", "--end_date", "2026-01-01", "--reason", "x"], "before"),
        (["--start_date", "2026-01-01", "--end_date", "2026-01-01"], "--reason is required"),
    ):
        assert message in usage_error(replay.run, args, capsys)
