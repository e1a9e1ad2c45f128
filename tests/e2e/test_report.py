"""The report and the trace on a real backfill's outputs: ``python -m pipelines.report`` writes
one self-contained HTML file that headless Chromium opens without a console message and with
every chart drawn; ``python -m pipelines.trace`` follows a request through the stores."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import struct

import pytest

from pipelines import backfill, report, trace
from pipelines.local import loadgen
from tests.support.chromium import figure_traces, open_page, plot_traces, screenshot
from tests.support.pipelines import usage_error

CHARTS = {"latency", "usage", "cost", "policy-flags", "dead-letters", "freshness"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A backfill of generated gateway traffic (PII, flags, duplicates, malformed events)."""
    work = tmp_path_factory.mktemp("report")
    events = work / "events.jsonl"
    assert loadgen.main(["--events", "1500", "--seed", "11", "--output", str(events)]) == 0
    out = work / "out"
    assert backfill.run(["--input", str(events), "--output_root", str(out)]) == 0
    return out


def test_the_report_opens_in_a_browser_with_every_chart_drawn(root, capsys, tmp_path):
    assert report.run(["--output_root", str(root)]) == 0
    path = root / "report.html"
    assert f"report written: {path}" in capsys.readouterr().out
    html = path.read_text(encoding="utf-8")
    # Self-contained: plotly.js is in the file once, and nothing else refers outside it.
    assert html.count("/**\n* plotly.js v") == 1
    bundle_end = html.index("</script>")
    rest = html[bundle_end:]
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", rest), "refers to a file"
    assert "http://" not in rest and "https://" not in rest

    page = open_page(path)
    assert page.console == []  # no error, no warning: plotly logs its problems there
    given = figure_traces(html)
    drawn = plot_traces(page.dom)
    assert set(given) == set(drawn) == CHARTS
    for name, points in given.items():
        # Every trace has data and was drawn with a mark (plotly skips an empty trace).
        assert points and all(points), f"chart {name}: a trace without data: {points}"
        assert drawn[name] == [True] * len(points), f"chart {name}: drawn {drawn[name]}"

    png = tmp_path / "report.png"
    screenshot(path, png)
    width, height = struct.unpack(">II", png.read_bytes()[16:24])  # the PNG's IHDR
    assert (width, height) == (1400, 2200)
    assert png.stat().st_size > 100_000  # charts drawn, not a blank page


def test_the_report_of_an_empty_warehouse_says_so(tmp_path, capsys):
    from pipelines.io.sinks.embedded.warehouse import create_warehouse

    create_warehouse(str(tmp_path / "warehouse.duckdb"))
    assert report.run(["--output_root", str(tmp_path), "--output", str(tmp_path / "r.html")]) == 0
    assert "holds no metrics yet" in (tmp_path / "r.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output_root", "/nonexistent"], "no warehouse at /nonexistent/warehouse.duckdb"),
        (["--bigquery_dataset", "nodot"], "--bigquery_dataset must be PROJECT.DATASET"),
        (["--hours", "0"], "--hours must be >= 1"),
    ],
)
def test_report_options_are_checked(args, message, capsys, tmp_path):
    assert message in usage_error(report.run, args, capsys)


def _request(root, outcome: str) -> str:
    with sqlite3.connect(root / "audit.sqlite") as con:
        (request_id,) = con.execute(
            "SELECT request_id FROM audit_log WHERE outcome = ? AND request_id IS NOT NULL "
            "ORDER BY audit_id LIMIT 1",
            [outcome],
        ).fetchone()
    return request_id


def test_trace_of_a_written_and_duplicated_request(root, capsys):
    with sqlite3.connect(root / "audit.sqlite") as con:
        (request_id,) = con.execute(
            "SELECT request_id FROM audit_log WHERE outcome = 'duplicate' ORDER BY audit_id"
        ).fetchone()
    assert trace.run(["--output_root", str(root), "--request_id", request_id, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {a["outcome"] for a in found["audit"]} == {"written", "duplicate"}
    (record,) = found["records"]  # the copy written, once
    assert record["request_id"] == request_id
    written = next(a for a in found["audit"] if a["outcome"] == "written")
    assert record["event_id"] == written["event_id"]
    assert record["user_key"] == written["user_key"] and "user_id" not in record
    for decision in ("data_class", "policy_flags", "redaction_counts", "policy_version"):
        assert decision in record

    assert trace.run(["--output_root", str(root), "--request_id", request_id]) == 0
    text = capsys.readouterr().out
    assert "audit trail (oldest first):" in text and "policy decisions:" in text


def test_trace_of_a_dead_lettered_request_never_shows_the_payload(root, capsys):
    request_id = _request(root, "dead_lettered")
    assert trace.run(["--output_root", str(root), "--request_id", request_id, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["records"] == []
    (letter,) = found["dead_letters"]
    assert letter["reason"] == found["audit"][0]["reason"]
    assert "payload" not in letter and letter["payload_sha256"]


def test_trace_of_an_unknown_request(root, capsys):
    assert trace.run(["--output_root", str(root), "--request_id", "R-nope"]) == 1
    assert "nothing found" in capsys.readouterr().out
    assert "--request_id is required" in usage_error(
        trace.run, ["--output_root", os.fspath(root)], capsys
    )
