"""The retention command (``pipelines.retention``) end to end on the embedded stores: a dry
run then a run, and invalid options. What it deletes is in ``tests/functions/test_retention.py``."""

from __future__ import annotations

import os

import pytest

from pipelines import backfill, retention
from tests.support.pipelines import usage_error
from tests.support.retention import embedded_store
from tests.support.verify import assert_verified, verify_output


@pytest.fixture
def root(tmp_path):
    return embedded_store(tmp_path)


def test_the_command(root, capsys):
    assert retention.run(["--output_root", root, "--as_of", "2026-03-01", "--dry_run"]) == 0
    assert "total: 2 partitions, 4 files, 6 records" in capsys.readouterr().out
    assert retention.run(["--output_root", root, "--as_of", "2026-03-01"]) == 0
    assert not os.path.exists(os.path.join(root, "raw", "event_date=2026-01-29"))


def test_verify_after_retention_compares_the_days_the_archive_still_holds(root, capsys):
    """The store's metric rows are made up, and its archive has no metrics yet: verify lists
    the windows the archive holds events for. Once retention has deleted the old days and a
    reconciliation has computed the rest, the stores agree: the rows of deleted days (metrics
    are kept a year, the archive 30 days) are not compared."""
    code, printed = verify_output(root, capsys)
    assert code == 1 and "2026-01-29T12:00:00Z gemini-2.5-pro us: no row" in printed
    assert retention.run(["--output_root", root, "--as_of", "2026-03-01"]) == 0
    args = ["--input_format", "avro", "--input", root, "--output_root", root]
    assert backfill.run([*args, "--run_id", "after-retention"]) == 0
    assert_verified(root)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--raw_retention_days", "31"], "--raw_retention_days must be between 1 and 30"),
        (["--dead_letter_retention_days", "0"], "--dead_letter_retention_days must be between"),
        (["--metrics_retention_days", "0"], "--metrics_retention_days must be >= 1"),
        (
            ["--minute_retention_days", "400"],
            "--minute_retention_days must be between 1 and --metrics_retention_days",
        ),
        (["--as_of", "2026-02-30"], "--as_of must be a date"),
        (["--output_root", "gs://bucket/out"], "--output_root must be a local directory"),
    ],
)
def test_invalid_options_fail_with_a_clear_message(args, message, capsys):
    assert message in usage_error(retention.run, args, capsys)
