"""End to end: the logs of a pipeline run hold no field value, at any level, DEBUG included.

A backfill on the embedded default runs with every logger at DEBUG (the root logger and the
project's, after ``configure_logging``) over inputs that plant PII in every field and shape:
texts, user ids, identifiers (clean and with PII: ``pii_in_field``), a region outside its
grammar, broken JSON. Every record of every logger is captured; none may contain a planted
value. Only the allowlisted dimensions may appear: the model and region of valid events (they
are metric keys, and the run summary prints them). Standard output and error are checked
too, for everything but those dimensions.
"""

import json
import logging

from pipelines import backfill
from tests.support.core_inputs import PII_PROMPT, PII_VALUES, document
from tests.support.logs import everything_at_debug

PLANTED_IDS = (
    "user-plant-9f2c71",  # a user id
    "R-plant-5b8e21",  # a clean request id
    "user-plant-broken-77",  # a user id in broken JSON
)
PII_IN_IDENTIFIERS = {
    "request_id": "carol.plant@example.org",
    "model": "dave.plant@example.net",
    "model_version": "536-22-8141",
    "policy_flags": ["536-22-8140"],
}
BAD_REGION = "536-22-8142"
BROKEN = b'{"user_id": "user-plant-broken-77", "prompt": "mail erin.plant@example.com'
CLEAN_MODEL = "model-plant-7d4a"  # an allowlisted dimension once the event is valid
PLANTED = (
    *PII_VALUES,
    *PLANTED_IDS,
    "carol.plant@example.org",
    "dave.plant@example.net",
    "536-22-8141",
    "536-22-8140",
    BAD_REGION,
    "erin.plant@example.com",
)


def _inputs() -> bytes:
    documents = [
        document(1, user_id=PLANTED_IDS[0], request_id=PLANTED_IDS[1], prompt=PII_PROMPT),
        document(2, model=CLEAN_MODEL, response=PII_PROMPT),
        document(3, region=BAD_REGION, prompt=PII_PROMPT),
    ]
    documents += [
        document(10 + i, **{field: value}, prompt=PII_PROMPT)
        for i, (field, value) in enumerate(PII_IN_IDENTIFIERS.items())
    ]
    lines = [json.dumps(d).encode() for d in documents] + [BROKEN]
    return b"\n".join(lines) + b"\n"


def test_no_field_value_in_any_log_record_at_debug(tmp_path, caplog, capsys, monkeypatch):
    monkeypatch.setenv("LOG_HYGIENE_KEY", "k" * 32)
    path = tmp_path / "events.jsonl"
    path.write_bytes(_inputs())
    caplog.set_level(logging.DEBUG)
    everything_at_debug()
    code = backfill.run(
        [
            "--input",
            str(path),
            "--output_root",
            str(tmp_path / "out"),
            "--run_id",
            "hygiene",
            "--pseudonym_key",
            "env:LOG_HYGIENE_KEY",
        ]
    )
    assert code == 0
    records = caplog.records
    assert any(r.levelno == logging.DEBUG for r in records), "the run logged nothing at DEBUG"
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in records
    )
    assert [v for v in PLANTED if v in logged] == []
    printed = capsys.readouterr()
    shown = printed.out + printed.err
    assert [v for v in PLANTED if v in shown] == []
    # The run did see every kind of input: dead letters by reason in the summary.
    for reason in (
        "pii_in_field:request_id",
        "pii_in_field:model",
        "pii_in_field:model_version",
        "pii_in_field:policy_flags",
        "bad_value:region",
        "invalid_json",
    ):
        assert reason in printed.out, reason
