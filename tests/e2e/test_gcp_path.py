"""The streaming command with the gcp sink's options: invalid ones fail with a clear message
before anything contacts Google Cloud."""

from __future__ import annotations

import pytest

from pipelines import streaming
from tests.support.pipelines import usage_error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "pubsub"], "--source pubsub needs --subscription"),
        (["--sink", "cloud"], "--sink must be one of"),
        (["--sink", "gcp"], "--bigquery_dataset must be PROJECT.DATASET"),
        (
            ["--sink", "gcp", "--bigquery_dataset", "p.d", "--audit_db_url", "env:NO_SUCH_URL"],
            "NO_SUCH_URL is not set",
        ),
        (
            [
                "--sink=gcp",
                "--bigquery_dataset=p.d",
                "--audit_db_url=postgresql://h/db",
                "--dead_letter_topic=topic",
            ],
            "--dead_letter_topic must be",
        ),
        (
            [
                "--sink=gcp",
                "--bigquery_dataset=p.d",
                "--audit_db_url=postgresql://h/db",
                "--sink_max_attempts=0",
            ],
            "--sink_max_attempts must be >= 1",
        ),
        (
            [
                "--sink=gcp",
                "--bigquery_dataset=p.d",
                "--audit_db_url=postgresql://h/db",
                "--dead_letter_table=p.d",
            ],
            "--dead_letter_table must be PROJECT.DATASET.TABLE",
        ),
        (
            ["--sink=gcp", "--bigquery_dataset=p.d", "--audit_db_url=postgresql://u:pw@h/db"],
            "a password cannot be a flag value",
        ),
        (
            [
                "--sink=gcp",
                "--bigquery_dataset=p.d",
                "--audit_db_url=cloudsql://u@my-project:europe-west1/audit",
            ],
            "the instance must be PROJECT:REGION:INSTANCE",
        ),
    ],
)
def test_invalid_gcp_options_fail_with_a_clear_message(args, message, capsys):
    assert message in usage_error(streaming.run, args, capsys)


def test_replay_from_the_table_needs_the_table(capsys):
    from pipelines import replay

    args = ["--start_date=2026-11-01", "--end_date=2026-11-02", "--reason=x"]
    assert "--replay_from table reads --dead_letter_table" in usage_error(
        replay.run, [*args, "--replay_from=table"], capsys
    )
    assert "--replay_from must be one of" in usage_error(
        replay.run, [*args, "--replay_from=pubsub"], capsys
    )
