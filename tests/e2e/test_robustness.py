"""Issue 21's findings as regression tests, end to end on the embedded default.

* Each single line that used to stop a backfill (rc 1, a traceback, sometimes the archive
  written but no audit or metrics) is now one dead letter with its reason, and the run finishes
  with every output written and the counts balanced.
* Outputs that cannot work stop the command at launch: one line ``invalid options: ...`` on
  stderr, exit code 2, no traceback, nothing read or written.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import sqlite3
from collections import Counter

import duckdb
import fastavro
import pytest

from pipelines import backfill
from pipelines.local.summary import summarize
from tests.support.hostile import STOPPED_A_RUN, gateway_event
from tests.support.launch import run_unprivileged, shared_tmp
from tests.support.pipelines import usage_error


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    valid = gateway_event()
    # The file starts with a byte-order mark: its first line (valid) is written, not rejected.
    lines = [json.dumps(valid)] + [json.dumps(doc) for doc, _ in STOPPED_A_RUN.values()]
    path = folder / "events.jsonl"
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    root = folder / "out"
    args = ["--input", str(path), "--output_root", str(root), "--run_id", "hostile"]
    assert backfill.run(args) == 0
    return root, valid


def _records(pattern: str) -> list[dict]:
    records = []
    for path in sorted(glob.glob(pattern, recursive=True)):
        with open(path, "rb") as handle:
            records += list(fastavro.reader(handle))
    return records


def test_every_line_that_stopped_a_run_is_one_dead_letter(hostile_run):
    root, _ = hostile_run
    letters = _records(f"{root}/dead_letter/**/*.avro")
    assert Counter(r["reason"] for r in letters) == Counter(
        reason for _, reason in STOPPED_A_RUN.values()
    )
    (deep,) = [r for r in letters if r["reason"] == "missing_field:region"]
    assert deep["payload_state"] in ("redacted", "omitted")
    assert all(r["error_type"] == "InvalidEvent" for r in letters)


def test_the_run_balances_and_writes_every_output(hostile_run):
    root, valid = hostile_run
    summary = summarize(str(root), "hostile", dt.datetime.now(dt.UTC))
    assert (summary.events_read, summary.written, summary.dead_lettered) == (10, 1, 9)
    assert summary.balanced
    assert [str(r["event_id"]) for r in _records(f"{root}/raw/**/*.avro")] == [valid["event_id"]]
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT request_count, token_sum, policy_flag_counts FROM metrics_minute"
        ).fetchall()
    assert rows == [(1, 10, [{"key": "pii_redacted", "value": 1}])]
    with sqlite3.connect(root / "audit.sqlite") as db:
        outcomes = Counter(o for (o,) in db.execute("SELECT outcome FROM audit_log"))
    assert outcomes == {"written": 1, "dead_lettered": 9}


# --- fail fast ------------------------------------------------------------------------------


@pytest.fixture
def one_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(gateway_event()) + "\n")
    return str(path)


def test_an_output_root_that_is_a_file_stops_the_command(one_line, tmp_path, capsys):
    root = tmp_path / "out"
    root.write_text("not a directory")
    line = usage_error(backfill.run, ["--input", one_line, "--output_root", str(root)], capsys)
    assert f"--output_root {root} is a file, not a directory" in line
    assert root.read_text() == "not a directory"


def test_an_output_root_below_a_file_stops_the_command(one_line, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    root = blocker / "out"
    line = usage_error(backfill.run, ["--input", one_line, "--output_root", str(root)], capsys)
    assert f"--output_root {root} (at {blocker}) is a file, not a directory" in line


@pytest.mark.parametrize(
    ("inside", "message"),
    [("warehouse.duckdb", "is a directory, not a database file"), ("raw", "is a file")],
)
def test_a_file_where_a_directory_is_expected_stops_the_command(
    one_line, tmp_path, capsys, inside, message
):
    root = tmp_path / "out"
    root.mkdir()
    if inside == "raw":
        (root / inside).write_text("")
    else:
        (root / inside).mkdir()
    line = usage_error(backfill.run, ["--input", one_line, "--output_root", str(root)], capsys)
    assert f"{root / inside}" in line and message in line
    assert sorted(os.listdir(root)) == [inside]


def _shared_input() -> tuple[str, str]:
    """A folder every user can enter, holding one event that everyone can read."""
    folder = shared_tmp()
    path = os.path.join(folder, "events.jsonl")
    with open(path, "w") as handle:
        handle.write(json.dumps(gateway_event()) + "\n")
    os.chmod(path, 0o644)
    return folder, path


def test_a_read_only_output_root_stops_the_command_before_anything_is_read():
    folder, path = _shared_input()
    root = os.path.join(folder, "out")
    os.mkdir(root)
    os.chmod(root, 0o555)  # read-only, for everyone but root
    code, err = run_unprivileged("pipelines.backfill", ["--input", path, "--output_root", root])
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"invalid options: --output_root {root} cannot be written (Permission denied)"
    ]
    assert os.listdir(root) == []


def test_a_missing_key_file_stops_the_command(one_line, tmp_path, capsys):
    key = tmp_path / "missing.key"
    args = ["--input", one_line, "--output_root", str(tmp_path / "out")]
    line = usage_error(backfill.run, [*args, "--pseudonym_key", f"file:{key}"], capsys)
    assert f"file:{key}" in line and "no such file" in line
    assert not (tmp_path / "out").exists()


def test_a_key_file_that_is_not_text_stops_the_command_without_quoting_it(
    one_line, tmp_path, capsys
):
    key = tmp_path / "binary.key"
    key.write_bytes(b"\xff\xfe" + os.urandom(30))
    args = ["--input", one_line, "--output_root", str(tmp_path / "out")]
    line = usage_error(backfill.run, [*args, "--pseudonym_key", f"file:{key}"], capsys)
    assert line.endswith(f"--pseudonym_key file:{key}: the key file is not UTF-8 text")
    assert "0xff" not in line


def test_an_unreadable_key_file_stops_the_command():
    folder, path = _shared_input()
    key = os.path.join(folder, "pseudonym.key")
    with open(key, "w") as handle:
        handle.write("k" * 32)
    os.chmod(key, 0o000)  # nobody may read it (root only through its override)
    root = os.path.join(folder, "out")
    args = ["--input", path, "--output_root", root, "--pseudonym_key", f"file:{key}"]
    code, err = run_unprivileged("pipelines.backfill", args)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("invalid options: ") and f"file:{key}" in line
    assert "Traceback" not in err and not os.path.exists(root)


def _gcp(tmp_path) -> list[str]:
    return [
        "--sink",
        "gcp",
        "--raw_root",
        str(tmp_path / "archive"),
        "--bigquery_dataset",
        "p.genai",
        "--audit_db_url",
        "postgresql://auditor@127.0.0.1:1/audit",
        "--output_root",
        str(tmp_path / "out"),
    ]


def test_an_unreadable_audit_url_file_stops_the_command(one_line, tmp_path, capsys):
    missing = tmp_path / "audit-url"
    args = ["--input", one_line, *_gcp(tmp_path), "--audit_db_url", f"file:{missing}"]
    line = usage_error(backfill.run, args, capsys)
    assert f"--audit_db_url file:{missing}: cannot be read (No such file or directory)" in line


def test_missing_credentials_stop_a_gcp_run(one_line, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-adc.json"))
    line = usage_error(backfill.run, ["--input", one_line, *_gcp(tmp_path)], capsys)
    assert "--sink gcp needs Google Cloud credentials" in line
    assert not (tmp_path / "archive").exists() and not (tmp_path / "out").exists()


def test_no_credentials_at_all_stop_a_gcp_run(one_line, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on Google Cloud: no metadata server
    line = usage_error(backfill.run, ["--input", one_line, *_gcp(tmp_path)], capsys)
    assert "--sink gcp needs Google Cloud credentials" in line


def test_an_input_that_is_a_directory_stops_the_command(tmp_path, capsys):
    folder = tmp_path / "events"
    folder.mkdir()
    args = ["--input", str(folder), "--output_root", str(tmp_path / "out")]
    line = usage_error(backfill.run, args, capsys)
    assert f"--input '{folder}' is a directory" in line


def test_an_unreadable_input_stops_the_command():
    folder, path = _shared_input()
    os.chmod(path, 0o000)  # nobody may read it (root only through its override)
    root = os.path.join(folder, "out")
    code, err = run_unprivileged("pipelines.backfill", ["--input", path, "--output_root", root])
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"invalid options: --input '{path}' cannot be read (Permission denied)"
    ]
    assert not os.path.exists(root)


def test_a_missing_archive_root_stops_a_reconciliation(tmp_path, capsys):
    missing = tmp_path / "archive"
    args = ["--input_format", "avro", "--input", str(missing), "--output_root", str(tmp_path)]
    line = usage_error(backfill.run, args, capsys)
    assert f"--input '{missing}' does not exist: give the root holding raw/" in line
