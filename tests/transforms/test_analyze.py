"""The core composite on fixed input (beam.Create): every output exactly, batch dedupe in both
input formats, redaction, failures, counters. Scripted streams are in
``tests/streaming/test_analyze.py``."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.support.analyze import CONFIG, assert_no_pii, metric_view
from tests.support.core_inputs import PII_PROMPT, event_id, raw
from tests.support.factories import events_of
from tests.support.fakes import FAIL_MARKER, register_failing_engine
from tests.support.pipelines import TestPipeline
from transforms.analyze import AnalyzeEvents
from transforms.audit import flatten_audit
from transforms.elements import LineChunk
from transforms.pii.pseudonym import load_key, pseudonymize


def lines_chunks(lines: list[bytes], per_chunk: int) -> list[LineChunk]:
    """``lines`` as JSON-lines file chunks of ``per_chunk`` lines, with byte offsets."""
    chunks, position = [], 0
    for start in range(0, len(lines), per_chunk):
        part = lines[start : start + per_chunk]
        offsets = []
        for line in part:
            offsets.append(position)
            position += len(line) + 1
        chunks.append(LineChunk("events.jsonl", tuple(part), tuple(offsets)))
    return chunks


def analyze(p, lines: list[bytes], mode: str, config=CONFIG):
    """The core's outputs on ``lines``: one event per element (``json``) or JSON-lines chunks
    of two lines, with the copies to write chosen in a first pass (``json_lines``)."""
    if mode == "json":
        return p | "Input" >> beam.Create(lines) | AnalyzeEvents(config)
    chunks = lines_chunks(lines, 2)
    again = p | "InputAgain" >> beam.Create(chunks)
    return (
        p
        | "Input" >> beam.Create(chunks)
        | AnalyzeEvents(config, input_format="json_lines", copies_from=again)
    )


BATCH_MODES = ("json", "json_lines")


@pytest.mark.parametrize("mode", BATCH_MODES)
def test_batch_every_output_exactly(mode):
    inputs = [
        raw(1, prompt=PII_PROMPT),
        raw(2),
        raw(2),  # exact redelivery
        raw(3, offset_s=65, model="gemini-2.5-pro"),
        b'{"user_id": "user-alice-0001", "prompt": "alice.smith@example.com',  # truncated
        raw(4, latency_ms=-1, prompt=PII_PROMPT),
        raw(5, schema_version=9),
    ]
    with TestPipeline() as p:
        out = analyze(p, inputs, mode)
        assert_that(
            events_of(out.events, "Unbatch1")
            | "eid" >> beam.Map(lambda e: (e.event_id, e.data_class)),
            equal_to(
                [(event_id(1), "RESTRICTED"), (event_id(2), "INTERNAL"), (event_id(3), "INTERNAL")]
            ),
            label="events",
        )
        assert_that(
            out.duplicates | "did" >> beam.Map(lambda e: e.event_id),
            equal_to([event_id(2)]),
            label="duplicates",
        )
        assert_that(
            out.dead_letters | "reasons" >> beam.Map(lambda d: (d.reason, d.event_id)),
            equal_to(
                [
                    ("invalid_json", None),
                    ("negative_value:latency_ms", event_id(4)),
                    ("unsupported_schema_version:9", event_id(5)),
                ]
            ),
            label="dead letters",
        )
        assert_that(
            flatten_audit(out.audit, "AllAudit")
            | "outcomes" >> beam.Map(lambda a: (a.outcome, a.event_id, a.reason)),
            equal_to(
                [
                    ("written", event_id(1), None),
                    ("written", event_id(2), None),
                    ("written", event_id(3), None),
                    ("duplicate", event_id(2), None),
                    ("dead_lettered", None, "invalid_json"),
                    ("dead_lettered", event_id(4), "negative_value:latency_ms"),
                    ("dead_lettered", event_id(5), "unsupported_schema_version:9"),
                ]
            ),
            label="audit",
        )
        assert_that(
            out.metrics | "m" >> beam.Map(metric_view),
            equal_to(
                [
                    (0.0, "gpt-4o-mini", "us", 2, 30, "ON_TIME"),
                    (60.0, "gemini-2.5-pro", "us", 1, 30, "ON_TIME"),
                ]
            ),
            label="metrics",
        )
        for name in ("events", "duplicates", "metrics", "dead_letters"):
            assert_no_pii(getattr(out, name), name)
        assert_no_pii(flatten_audit(out.audit, "EveryAudit"), "audit")


@pytest.mark.parametrize("mode", BATCH_MODES)
def test_batch_dedupe_is_exact_whatever_the_order(mode):
    """The first valid line of an id is written, whatever its event time; an exact copy is a
    duplicate, a copy with other content a conflict. Without input positions (``json``: bytes,
    no identity) one copy per id is still written, the others split the same way."""
    inputs = [
        raw(1, offset_s=40, request_id="R-1-retry"),  # first in the input...
        raw(2),
        raw(1, offset_s=5),  # ...so this earlier-stamped copy loses: a conflict
        raw(2),  # exact redelivery, in another chunk
        raw(3, latency_ms=-1, offset_s=1),  # the first copy of 3 is invalid
        raw(3, request_id="R-3-b"),
        raw(3, request_id="R-3-a"),
        raw(2),
    ]
    written = [(event_id(1), "R-1-retry"), (event_id(2), "R-2"), (event_id(3), "R-3-b")]
    conflicts = [(event_id(1), "R-1"), (event_id(3), "R-3-a")]
    with TestPipeline() as p:
        out = analyze(p, inputs, mode)
        pairs = beam.Map(lambda e: (e.event_id, e.request_id))
        if mode == "json_lines":
            assert_that(
                events_of(out.events, "Unbatch") | "written" >> pairs,
                equal_to(written),
                label="written",
            )
            assert_that(out.conflicts | "con" >> pairs, equal_to(conflicts), label="conflicts")
        else:
            ids_only = beam.Map(lambda e: e.event_id)
            assert_that(
                events_of(out.events, "Unbatch") | "written" >> ids_only,
                equal_to([event_id(n) for n in (1, 2, 3)]),
                label="written",
            )
            assert_that(
                out.conflicts | "con" >> ids_only,
                equal_to([event_id(1), event_id(3)]),
                label="conflicts",
            )
        assert_that(
            out.duplicates | "dups" >> pairs,
            equal_to([(event_id(2), "R-2"), (event_id(2), "R-2")]),
            label="duplicates",
        )
        assert_that(
            out.dead_letters | "dl" >> beam.Map(lambda d: (d.reason, d.event_id)),
            equal_to([("negative_value:latency_ms", event_id(3))]),
            label="dead letters",
        )


def test_redacted_event_content():
    key = load_key(CONFIG.pseudonym_key)
    with TestPipeline() as p:
        out = (
            p
            | beam.Create([raw(1, prompt=PII_PROMPT, policy_flags=["pii_redacted"])])
            | (AnalyzeEvents(CONFIG))
        )
        assert_that(
            events_of(out.events, "Unbatch2")
            | beam.Map(lambda e: (e.user_key, e.prompt, e.redaction_counts, e.policy_flags)),
            equal_to(
                [
                    (
                        pseudonymize("user-alice-0001", key),
                        "Hi, I'm [EMAIL_ADDRESS], call me on [PHONE_NUMBER]. My card is "
                        "[CREDIT_CARD_NUMBER], SSN [US_SOCIAL_SECURITY_NUMBER], IBAN [IBAN_CODE]. "
                        "The server at [IP_ADDRESS] uses key [AWS_CREDENTIALS].",
                        {
                            "EMAIL_ADDRESS": 1,
                            "PHONE_NUMBER": 1,
                            "CREDIT_CARD_NUMBER": 1,
                            "US_SOCIAL_SECURITY_NUMBER": 1,
                            "IBAN_CODE": 1,
                            "IP_ADDRESS": 1,
                            "AWS_CREDENTIALS": 1,
                        },
                        ("pii_redacted",),
                    )
                ]
            ),
        )


def test_redaction_failure_fails_closed(monkeypatch):
    register_failing_engine(monkeypatch)
    config = CONFIG._replace(redaction_engine="failing")
    with TestPipeline() as p:
        out = (
            p
            | beam.Create([raw(1, prompt=PII_PROMPT + FAIL_MARKER), raw(2, prompt=PII_PROMPT)])
            | AnalyzeEvents(config)
        )
        assert_that(
            events_of(out.events, "Unbatch3") | "ok" >> beam.Map(lambda e: e.event_id),
            equal_to([event_id(2)]),
            label="the other event still goes through",
        )
        assert_that(
            out.dead_letters
            | "dl"
            >> beam.Map(
                lambda d: (
                    d.reason,
                    d.step,
                    d.event_id,
                    sorted({"prompt", "response", "user_id"} & set(json.loads(d.payload))),
                    json.loads(d.payload)["user_id"],
                    d.payload_state,
                )
            ),
            equal_to(
                [
                    (
                        "redaction_failed",
                        "redact",
                        event_id(1),
                        ["user_id"],
                        {
                            "pseudonym": pseudonymize(
                                "user-alice-0001", load_key(CONFIG.pseudonym_key)
                            )
                        },
                        "redacted",
                    )
                ]
            ),
            label="dead letter without text",
        )
        assert_no_pii(out.dead_letters, "dead letters")


def test_counters_for_every_outcome_and_dead_letter_reason():
    from apache_beam.metrics.metric import MetricsFilter

    p = TestPipeline()
    _ = (
        p
        | beam.Create([raw(1, prompt=PII_PROMPT), raw(1), raw(2, token_count=-1), b"{"])
        | AnalyzeEvents(CONFIG)
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("genai"))["counters"]
    }
    assert counters["events_read"] == 4
    assert counters["events_written"] == 1
    assert counters["events_duplicate"] == 1
    assert counters["dead_letter.negative_value:token_count"] == 1
    assert counters["dead_letter.invalid_json"] == 1
    assert counters["redactions.EMAIL_ADDRESS"] == 1
    assert counters["redactions.CREDIT_CARD_NUMBER"] == 1


def test_dead_letter_ids_never_carry_pii():
    inputs = [
        raw(1, event_id="alice.smith@example.com", request_id="R-ok-1"),
        raw(2, latency_ms=-5, request_id="alice.smith@example.com"),
        raw(3, latency_ms=-5, event_id=event_id(3).upper()),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(inputs) | AnalyzeEvents(CONFIG)
        assert_that(
            out.dead_letters | beam.Map(lambda d: (d.reason, d.event_id, d.request_id)),
            equal_to(
                [
                    ("bad_value:event_id", None, "R-ok-1"),
                    ("negative_value:latency_ms", event_id(2), None),
                    ("negative_value:latency_ms", event_id(3), "R-3"),
                ]
            ),
        )
        assert_no_pii(flatten_audit(out.audit, "AllAudit"), "audit")


def test_inputs_that_break_the_decoder_are_dead_lettered_not_retried():
    """A message nested beyond the JSON decoder's limit, or with a time outside the UTC range,
    must become a dead letter: an exception would fail the bundle and block the stream."""
    inputs = [b"[" * 5000, raw(1, event_time="9999-12-31T23:59:59-01:00"), raw(2)]
    with TestPipeline() as p:
        out = p | beam.Create(inputs) | AnalyzeEvents(CONFIG)
        assert_that(
            out.dead_letters | beam.Map(lambda d: (d.reason, d.payload_state)),
            equal_to([("invalid_json", "redacted"), ("bad_timestamp", "redacted")]),
        )
        assert_that(
            events_of(out.events, "Unbatch") | "ids" >> beam.Map(lambda e: e.event_id),
            equal_to([event_id(2)]),
            label="the rest goes through",
        )
