"""Fuzzing end to end: a file of hostile lines through ``python -m pipelines.backfill`` on the
embedded default. The command succeeds (no exception escapes it) and its summary balances: every
line read is written, a duplicate or a dead letter."""

from __future__ import annotations

import datetime as dt

from hypothesis import Phase, given, settings

from pipelines import backfill
from pipelines.local.summary import summarize
from tests.support.fuzz import count_cases, gateway_lines
from tests.support.profiles import examples

# Each example is a pipeline run: a failure is reported as found, not shrunk (minutes).
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


@settings(max_examples=examples(0.0008), phases=NO_SHRINK)
@given(gateway_lines(max_lines=30))
def test_a_backfill_of_hostile_lines_finishes_and_balances(tmp_path_factory, lines):
    count_cases("e2e", len(lines))
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    root = folder / "out"
    args = ["--input", str(path), "--output_root", str(root), "--run_id", "fuzz"]
    assert backfill.run(args) == 0
    summary = summarize(str(root), "fuzz", dt.datetime.now(dt.UTC))
    assert summary.events_read == sum(1 for line in lines if line.strip())
    assert summary.balanced, summary
    assert not [r for r in summary.dead_letters if r.startswith("internal_error")]
    assert not summary.sink_dead_letters
