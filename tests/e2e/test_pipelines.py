"""End to end on the DirectRunner: both pipelines over generated traffic, checked from disk;
invalid options, local-only flags on Dataflow and ``--help`` of the pipeline commands."""

import datetime as dt
import glob
import json
import os
import pathlib
import re
import sqlite3

import duckdb
import fastavro
import numpy as np
import pandas as pd
import pytest

from pipelines import backfill, replay, streaming
from pipelines.local.loadgen import DUPLICATE, LATE, MALFORMED, VALID, EventGenerator, LoadProfile
from pipelines.local.summary import summarize
from schemas.contract import parsed_schema
from tests.support.verify import assert_verified

PROFILE = LoadProfile(
    duplicate_share=0.1, late_share=0.05, malformed_share=0.05, pii_share=0.3, text_pool=60
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """400 messages over ~20 minutes of event time, with their ground truth."""
    generator = EventGenerator(seed=11, profile=PROFILE)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)
    messages = []
    for i in range(20):
        messages += generator.batch(20, start + dt.timedelta(minutes=i))
    path = tmp_path_factory.mktemp("input") / "events.jsonl"
    path.write_bytes(b"".join(m.payload + b"\n" for m in messages))
    return generator, messages, str(path)


def run_backfill(input_path, output_root, *extra):
    args = ["--input", input_path, "--output_root", str(output_root), "--run_id", "test", *extra]
    assert backfill.run(args) == 0
    return summarize(str(output_root), "test", dt.datetime.now(dt.UTC))


def avro_records(pattern):
    records = []
    for path in sorted(glob.glob(pattern, recursive=True)):
        with open(path, "rb") as handle:
            reader = fastavro.reader(handle)
            records += list(reader)
    return records


def table(db_path, sql):
    if db_path.endswith(".duckdb"):
        with duckdb.connect(db_path, read_only=True) as db:
            return db.execute(sql).fetchall()
    with sqlite3.connect(db_path) as db:
        return db.execute(sql).fetchall()


def everything_written(root):
    """Every record of every output, as text, for the PII scan."""
    parts = [repr(avro_records(f"{root}/**/*.avro"))]
    parts.append(repr(table(f"{root}/warehouse.duckdb", "SELECT * FROM metrics_minute")))
    parts.append(repr(table(f"{root}/audit.sqlite", "SELECT * FROM audit_log")))
    for path in glob.glob(f"{root}/runs/*.json"):
        parts.append(pathlib.Path(path).read_text())
    return "\n".join(parts)


def unique_valid(messages):
    seen = {}
    for m in messages:
        if m.kind in (VALID, LATE, DUPLICATE):
            seen.setdefault(m.document["event_id"], m.document)
    return list(seen.values())


@pytest.fixture(scope="module")
def backfilled(generated, tmp_path_factory):
    _, _, path = generated
    root = tmp_path_factory.mktemp("backfill")
    summary = run_backfill(path, root)
    return root, summary


def test_backfill_counts_add_up_to_the_ground_truth(generated, backfilled):
    _, messages, _ = generated
    _, summary = backfilled
    kinds = pd.Series([m.kind for m in messages]).value_counts()
    assert summary.events_read == len(messages)
    assert summary.written == len(unique_valid(messages))
    assert summary.duplicates == kinds[VALID] + kinds[LATE] + kinds[DUPLICATE] - summary.written
    assert summary.dead_lettered == kinds[MALFORMED]
    expected_reasons = pd.Series([m.malformation for m in messages if m.kind == MALFORMED])
    assert summary.dead_letters == expected_reasons.value_counts().to_dict()
    assert summary.balanced
    assert summary.late_dropped == 0  # batch: every event is in the metrics


def test_backfill_stores_agree_with_the_archive(backfilled):
    root, summary = backfilled
    assert_verified(root)
    audit = dict(
        table(f"{root}/audit.sqlite", "SELECT outcome, count(*) FROM audit_log GROUP BY 1")
    )
    assert sum(audit.values()) == summary.events_read  # one audit record per input line
    assert audit == {
        name: n
        for name, n in (
            ("written", summary.written),
            ("duplicate", summary.duplicates),
            ("duplicate_conflict", summary.conflicts),
            ("dead_lettered", summary.dead_lettered),
        )
        if n
    }


def test_backfill_partitions_and_valid_avro(generated, backfilled):
    _, messages, _ = generated
    root, _ = backfilled
    raw_files = glob.glob(f"{root}/raw/**/*.avro", recursive=True)
    assert raw_files
    for path in raw_files:
        relative = os.path.relpath(path, root)
        match = re.fullmatch(
            r"raw/event_date=(\d{4}-\d{2}-\d{2})/region=([a-z]+)/[^/]+\.avro", relative
        )
        assert match, relative
        with open(path, "rb") as handle:
            for record in fastavro.reader(handle, reader_schema=parsed_schema("redacted_event")):
                assert record["event_date"].isoformat() == match.group(1)
                assert record["region"] == match.group(2)
    archived = avro_records(f"{root}/raw/**/*.avro")
    assert sorted(str(r["event_id"]) for r in archived) == sorted(
        d["event_id"] for d in unique_valid(messages)
    )
    for path in glob.glob(f"{root}/dead_letter/**/*.avro", recursive=True):
        assert re.fullmatch(
            r"dead_letter/dt=\d{4}-\d{2}-\d{2}/[^/]+\.avro", os.path.relpath(path, root)
        )
    dead = avro_records(f"{root}/dead_letter/**/*.avro")
    assert len(dead) == sum(m.kind == MALFORMED for m in messages)
    assert all(d["reason"] and d["payload_sha256"] for d in dead)
    # Every record names its input line (<file>#<byte offset>) and when the backfill read it.
    input_path = generated[2]
    for record in archived + dead:
        source, _, offset = record["input_id"].rpartition("#")
        assert source.endswith(os.path.basename(input_path)) and offset.isdigit(), record
    assert all(r["ingested_at"] is not None for r in archived)
    with open(input_path, "rb") as handle:
        lines = handle.read()
    for record in archived[:50]:
        offset = int(record["input_id"].rpartition("#")[2])
        assert str(record["event_id"]) in lines[offset : lines.index(b"\n", offset)].decode()


def test_no_pii_in_any_output(generated, backfilled):
    generator, _, _ = generated
    root, _ = backfilled
    written = everything_written(root)
    leaked = sorted(v for v in generator.pii_values if v in written)
    assert not leaked, f"{len(leaked)} PII values reached the outputs"


def test_metrics_equal_an_independent_pandas_computation(generated, backfilled):
    _, messages, _ = generated
    root, _ = backfilled
    frame = pd.DataFrame(unique_valid(messages))
    frame["window_start"] = pd.to_datetime(frame["event_time"]).dt.floor("60s").dt.as_unit("ns")
    expected = frame.groupby(["window_start", "model", "region"]).agg(
        request_count=("event_id", "size"),
        token_sum=("token_count", "sum"),
        prompt_token_sum=("prompt_tokens", "sum"),
        completion_token_sum=("completion_tokens", "sum"),
    )
    with duckdb.connect(f"{root}/warehouse.duckdb", read_only=True) as db:
        actual = db.execute("SELECT * FROM metrics_minute").df()
    actual["window_start"] = pd.to_datetime(actual["window_start"], utc=True).dt.as_unit("ns")
    actual = actual.set_index(["window_start", "model", "region"]).sort_index()
    columns = ["request_count", "token_sum", "prompt_token_sum", "completion_token_sum"]
    pd.testing.assert_frame_equal(
        actual[columns].astype("int64"), expected.sort_index()[columns].astype("int64")
    )
    # Percentiles: within the sketch's 1% relative error of an exact quantile (ranks differ
    # between conventions, so the exact value may be either neighbour of the rank).
    for key, group in frame.groupby(["window_start", "model", "region"]):
        latencies = np.sort(group["latency_ms"].to_numpy())
        row = actual.loc[key]
        for q, column in (
            (0.5, "latency_p50_ms"),
            (0.95, "latency_p95_ms"),
            (0.99, "latency_p99_ms"),
        ):
            low = np.quantile(latencies, q, method="lower")
            high = np.quantile(latencies, q, method="higher")
            assert low * 0.99 <= row[column] <= high * 1.01, (key, column)


def test_backfill_twice_changes_nothing(generated, backfilled, tmp_path):
    _, _, path = generated
    root, _ = backfilled
    before_metrics = table(f"{root}/warehouse.duckdb", "SELECT * FROM metrics_minute ORDER BY ALL")
    before_audit = table(f"{root}/audit.sqlite", "SELECT * FROM audit_log ORDER BY audit_id")
    run_backfill(path, root)
    assert table(f"{root}/warehouse.duckdb", "SELECT * FROM metrics_minute ORDER BY ALL") == (
        before_metrics
    )
    after_audit = table(f"{root}/audit.sqlite", "SELECT * FROM audit_log ORDER BY audit_id")
    assert after_audit == before_audit
    assert_verified(root)


def test_two_worker_processes_choose_and_write_the_same_copies(generated, backfilled, tmp_path):
    """The local runner with two worker processes and many small chunks: the first pass's
    per-shard combine goes through files the processes share (pipelines/local/spill.py), and
    the run archives the same copies and counts the same as one process does."""
    _, _, path = generated
    root, summary = backfilled
    parallel = tmp_path / "parallel"
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    got = run_backfill(path, parallel, "--chunk_bytes", "4096", *workers)
    assert (got.events_read, got.written, got.duplicates, got.dead_lettered) == (
        summary.events_read,
        summary.written,
        summary.duplicates,
        summary.dead_lettered,
    )

    def copies(at):
        return sorted((r["event_id"], r["input_id"]) for r in avro_records(f"{at}/raw/**/*.avro"))

    assert copies(parallel) == copies(root)
    assert_verified(parallel)


def test_archive_replay_by_partition_recomputes_the_same_metrics(generated, backfilled, tmp_path):
    root, _ = backfilled
    dates = sorted({p.split("event_date=")[1][:10] for p in glob.glob(f"{root}/raw/event_date=*")})
    replay_root = tmp_path / "replay"
    summary = run_backfill(
        str(root),
        replay_root,
        "--input_format",
        "avro",
        "--start_date",
        dates[0],
        "--end_date",
        dates[-1],
        "--regions",
        "us,eu,asia",
    )
    assert summary.written == len(avro_records(f"{root}/raw/**/*.avro"))
    assert summary.balanced and summary.dead_lettered == 0
    assert not glob.glob(f"{replay_root}/raw/**/*.avro", recursive=True)  # not re-archived
    columns = "window_start, model, region, request_count, token_sum, latency_p99_ms"
    sql = f"SELECT {columns} FROM metrics_minute ORDER BY ALL"
    assert table(f"{replay_root}/warehouse.duckdb", sql) == table(f"{root}/warehouse.duckdb", sql)
    # The replay's stores hold the metrics; the archive and audit log are the first root's.
    assert_verified(root, "--skip_audit")


def test_streaming_run_on_the_embedded_default(tmp_path):
    root = tmp_path / "stream"
    args = ["--source", "synthetic", "--rate", "150", "--duration_s", "4", "--tick_s", "0.5"]
    assert streaming.run([*args, "--output_root", str(root), "--run_id", "s1", "--seed", "5"]) == 0
    summary = summarize(str(root), "s1", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    assert summary.events_read == 600
    assert summary.balanced
    assert summary.written > 0 and summary.duplicates > 0
    archived = avro_records(f"{root}/raw/**/*.avro")
    assert len(archived) == summary.written
    # Each archived event names its message and when the source emitted it (its ingestion).
    assert all(r["input_id"].startswith("synthetic:") for r in archived)
    assert len({r["input_id"] for r in archived}) == len(archived)
    assert all(
        r["processed_at"] - dt.timedelta(seconds=60) <= r["ingested_at"] <= r["processed_at"]
        for r in archived
    )
    audit = table(f"{root}/audit.sqlite", "SELECT outcome, count(*) FROM audit_log GROUP BY 1")
    assert dict(audit)["written"] == summary.written
    generator = EventGenerator(5, LoadProfile())
    written = everything_written(root)
    assert not [v for v in generator.pii_values if v in written]
    rows = table(f"{root}/warehouse.duckdb", "SELECT sum(request_count) FROM metrics_minute")
    assert rows[0][0] == summary.events_in_metrics == summary.written - summary.late_dropped
    # Freshness (ADR 0010): every event a metric row counts was measured once, when the first
    # row counting it was committed; the warehouse's per-minute histogram holds the same events.
    assert summary.freshness_events == summary.events_in_metrics > 0
    assert 0 <= summary.freshness_p50_s <= summary.freshness_p99_s < 120
    assert summary.freshness_within_slo == summary.freshness_events
    (stored,) = table(f"{root}/warehouse.duckdb", "SELECT sum(events) FROM freshness_minute")
    assert stored[0] == summary.freshness_events
    usage = table(f"{root}/warehouse.duckdb", "SELECT sum(request_count) FROM usage_hourly")
    assert usage[0][0] == summary.events_in_metrics
    newest = table(
        f"{root}/warehouse.duckdb",
        "SELECT count(*) FROM metrics_minute WHERE latest_event_time > window_end "
        "OR latest_event_time < window_start OR latest_event_time IS NULL",
    )
    assert newest[0][0] == 0  # the newest event of a window lies in it
    # Nothing beyond the lateness, no copy after the TTL, no crash: the panes equal the archive.
    assert summary.late_dropped == 0
    assert_verified(root)


SYNTHETIC = ["--source", "synthetic"]
DATAFLOW = ["--runner", "DataflowRunner", "--project", "p", "--region", "r"]
GCP = [
    "--sink",
    "gcp",
    "--raw_root",
    "gs://b/raw",
    "--bigquery_dataset",
    "p.genai",
    "--audit_db_url",
    "postgresql://u@h/db",
]


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        (backfill, [], "--input is required"),
        (backfill, ["--input", "/nonexistent/*.jsonl"], "matches no files"),
        (backfill, ["--input", "nosuch://bucket/*.jsonl"], "cannot be listed"),
        (backfill, ["--input", "x", "--input_format", "csv"], "--input_format"),
        (backfill, ["--input", "x", "--start_date", "2026-01-01"], "avro only"),
        (
            backfill,
            [
                "--input",
                "x",
                "--input_format",
                "avro",
                "--start_date",
                "2026-02-01",
                "--end_date",
                "2026-01-01",
            ],
            "before --start_date",
        ),
        (streaming, ["--source", "kafka"], "--source must be one of"),
        (streaming, ["--source", "pubsub"], "--source pubsub needs --subscription"),
        (streaming, [*SYNTHETIC, "--rate", "0"], "must be > 0"),
        (streaming, [*SYNTHETIC, "--pii_share", "2"], "between 0 and 1"),
        (streaming, [*SYNTHETIC, "--pseudonym_key", "env:NO_SUCH_KEY_VAR"], "NO_SUCH_KEY_VAR"),
        (streaming, [*SYNTHETIC, "--redaction_engine", "magic"], "unknown redaction engine"),
        (streaming, [*SYNTHETIC, "--dedupe_ttl_s", "0"], "--dedupe_ttl_s must be > 0"),
        (streaming, [*SYNTHETIC, "--dedupe_strategy", "x"], "--dedupe_strategy must be one of"),
        # A mistyped flag is an error, not a silent default (Beam itself only warns).
        (backfill, ["--input", "x", "--dedupe_ttl", "5"], "unknown flag --dedupe_ttl (see"),
        (streaming, ["--rate_per_s", "10", "--dry"], "unknown flag --dry"),
        (replay, ["--reasons", "bad_timestamp"], "unknown flag --reasons"),
    ],
)
def test_invalid_options_fail_with_one_clear_line_and_exit_code_2(module, args, message, capsys):
    with pytest.raises(SystemExit) as caught:
        module.run(args)
    assert caught.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("invalid options: ") and message in line


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        (streaming, [*SYNTHETIC, *GCP], "--source synthetic runs on local runners only"),
        (
            streaming,
            ["--subscription", "projects/p/subscriptions/s"],
            "--sink is required on Dataflow: gcp",
        ),
        (
            streaming,
            ["--subscription", "projects/p/subscriptions/s", *GCP[:2], "--output_root", "/tmp/x"],
            "--raw_root must be a gs:// path on Dataflow",
        ),
        (backfill, ["--input", "gs://b/in/*.jsonl"], "--sink is required on Dataflow: gcp"),
        (backfill, ["--input", "gs://b/in/*.jsonl", *GCP, "--dead_letter_root", "/dl"], "gs://"),
    ],
)
def test_local_only_flags_are_rejected_on_dataflow_before_anything_else(
    module, args, message, capsys, monkeypatch
):
    # A key that would need Secret Manager: checked only after the local-only flags, so the
    # rejection happens before anything contacts Google Cloud.
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "")
    args = [*DATAFLOW, *args, "--pseudonym_key", "secret:projects/p/secrets/s/versions/1"]
    with pytest.raises(SystemExit) as caught:
        module.run(args)
    assert caught.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line, line


@pytest.mark.parametrize(
    ("module", "flag"),
    [(backfill, "--input_format"), (streaming, "--subscription"), (replay, "--reason")],
)
def test_help_lists_the_pipelines_own_flags(module, flag, capsys):
    with pytest.raises(SystemExit) as caught:
        module.run(["--help"])
    assert caught.value.code == 0
    printed = capsys.readouterr().out
    assert f"python -m {module.__name__}" in printed
    assert flag in printed and "--output_root" in printed
    assert module.__doc__.splitlines()[0] in printed


def test_streaming_help_lists_the_synthetic_flags_as_local_only(capsys):
    with pytest.raises(SystemExit):
        streaming.run(["--help"])
    printed = capsys.readouterr().out
    local = printed[printed.index("local runs only") :]
    assert "--rate" in local and "--duration_s" in local and "--pii_share" in local


def test_tally_file_is_json(backfilled):
    root, _ = backfilled
    totals = json.loads((root / "runs" / "test.json").read_text())
    assert totals["read"] == (
        totals["outcome.written"]
        + totals["outcome.duplicate"]
        + totals.get("outcome.duplicate_conflict", 0)
        + totals["outcome.dead_lettered"]
    )
