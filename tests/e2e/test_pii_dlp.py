"""The Cloud DLP engines in the pipeline commands: a backfill with the ``dlp`` engine against
the fake of DLP (``tests/support/dlp_fake.py``), and incomplete DLP options rejected."""

import glob
import json

import fastavro
import pytest

from pipelines import backfill, streaming
from tests.support.core_inputs import PII_PROMPT, PII_VALUES, event_id, raw
from tests.support.dlp_fake import DEIDENTIFY_TEMPLATE, INSPECT_TEMPLATE, PROJECT, FakeDlp
from tests.support.pipelines import usage_error
from tests.support.verify import assert_verified


@pytest.fixture
def fake():
    with FakeDlp() as server:
        yield server


@pytest.mark.parametrize(
    ("run", "args", "message"),
    [
        (backfill.run, ["--redaction_engine", "dlp"], "--dlp_project is required"),
        (
            backfill.run,
            ["--redaction_engine", "hybrid", "--dlp_project", PROJECT],
            "--dlp_inspect_template",
        ),
        (
            backfill.run,
            ["--redaction_engine", "hybrid", "--dlp_escalate_class", "SECRET"],
            "--dlp_escalate_class must be 'none' or one of",
        ),
        (streaming.run, ["--redaction_engine", "dlp"], "--dlp_deidentify_template"),
    ],
)
def test_pipelines_reject_incomplete_dlp_options(run, args, message, capsys):
    args = ["--input", "x", *args] if run is backfill.run else args
    assert message in usage_error(run, args, capsys)


def avro_records(pattern):
    records = []
    for path in glob.glob(pattern, recursive=True):
        with open(path, "rb") as handle:
            records += list(fastavro.reader(handle))
    return records


def test_backfill_runs_with_the_dlp_engine_against_the_fake(fake, tmp_path):
    lines = [
        raw(1, prompt=PII_PROMPT + " Ask Dr. Okafor."),
        raw(2, response="Thanks, Mr. Brown."),
        raw(3, latency_ms=-1, prompt=PII_PROMPT),  # dead-lettered by parsing
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    root = tmp_path / "out"
    args = [
        "--input",
        str(source),
        "--output_root",
        str(root),
        "--run_id",
        "dlp",
        "--redaction_engine",
        "dlp",
        "--dlp_project",
        PROJECT,
        "--dlp_inspect_template",
        INSPECT_TEMPLATE,
        "--dlp_deidentify_template",
        DEIDENTIFY_TEMPLATE,
        "--dlp_endpoint",
        fake.endpoint,
        "--dlp_requests_per_minute",
        "600000",
    ]
    assert backfill.run(args) == 0
    archived = avro_records(f"{root}/raw/**/*.avro")
    by_id = {str(r["event_id"]): r for r in archived}
    assert sorted(by_id) == [event_id(1), event_id(2)]
    assert {r["redaction_engine"] for r in archived} == {"dlp"}
    assert by_id[event_id(1)]["prompt"].endswith("Ask [PERSON_NAME].")
    assert by_id[event_id(1)]["redaction_counts"]["PERSON_NAME"] == 1
    assert by_id[event_id(2)]["response"] == "Thanks, [PERSON_NAME]."
    written = repr(archived) + repr(avro_records(f"{root}/dead_letter/**/*.avro"))
    assert not [v for v in (*PII_VALUES, "Okafor", "Brown") if v in written]
    assert fake.requests and {r.status for r in fake.requests} == {"OK"}
    totals = json.loads((root / "runs" / "dlp.json").read_text())
    assert totals["outcome.written"] == 2 and totals["outcome.dead_lettered"] == 1
    assert_verified(root)
