"""The Cloud DLP engines through the core composite (``AnalyzeEvents``), against the fake of
DLP (``tests/support/dlp_fake.py``): results in the right fields, hybrid routing (full
inspection by pre-screen and data class, names and addresses for every other text), and
retries exhausted becoming dead letters without text."""

import json

import apache_beam as beam
import grpc
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from tests.support import dlp_fake
from tests.support.core_inputs import PII_PROMPT, PII_VALUES, event_id, raw
from tests.support.dlp_fake import (
    DEIDENTIFY_TEMPLATE,
    INSPECT_TEMPLATE,
    PROJECT,
    FakeDlp,
    register_fast_dlp_engines,
)
from tests.support.factories import events_of
from tests.support.pipelines import TestPipeline
from transforms.analyze import AnalyzeEvents, CoreConfig
from transforms.pii.settings import DlpOptions


@pytest.fixture
def fake():
    with FakeDlp() as server:
        yield server


def dlp_config(fake, engine="dlp"):
    options = DlpOptions(
        project=PROJECT,
        inspect_template=INSPECT_TEMPLATE,
        deidentify_template=DEIDENTIFY_TEMPLATE,
        endpoint=fake.endpoint,
        requests_per_minute=6_000_000,
    )
    return CoreConfig(redaction_engine=engine, dlp=options, dedupe_shards=2)


def test_redacted_events_get_dlp_results_in_the_right_fields(fake, monkeypatch):
    register_fast_dlp_engines(monkeypatch)
    inputs = [
        raw(1, prompt="Ask Dr. Okafor at alice.smith@example.com", response="Mr. Brown agrees."),
        raw(2, prompt="Nothing personal here.", response="Reply to Ms. Lee, SSN 123-45-6789."),
        raw(3, prompt="Ms. Flagged wrote", policy_flags=["secret_detected"]),
        raw(4, prompt="Ms. Unflagged wrote", policy_flags=["content_filtered"]),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(inputs) | AnalyzeEvents(dlp_config(fake, "hybrid"))
        assert_that(
            events_of(out.events, "Unbatch1")
            | beam.Map(lambda e: (e.event_id, e.prompt, e.response, e.redaction_counts)),
            equal_to(
                [
                    (
                        event_id(1),
                        "Ask [PERSON_NAME] at [EMAIL_ADDRESS]",
                        "[PERSON_NAME] agrees.",  # hybrid: not pre-screened, names only
                        {"PERSON_NAME": 2, "EMAIL_ADDRESS": 1},
                    ),
                    (
                        event_id(2),
                        "Nothing personal here.",
                        "Reply to [PERSON_NAME], SSN [US_SOCIAL_SECURITY_NUMBER].",
                        {"PERSON_NAME": 1, "US_SOCIAL_SECURITY_NUMBER": 1},
                    ),
                    # RESTRICTED flag >= escalate_class RESTRICTED: every text goes to DLP
                    (
                        event_id(3),
                        "[PERSON_NAME] wrote",
                        "Here is the summary.",
                        {"PERSON_NAME": 1},
                    ),
                    (
                        event_id(4),
                        "[PERSON_NAME] wrote",  # names only: found all the same
                        "Here is the summary.",
                        {"PERSON_NAME": 1},
                    ),
                ]
            ),
        )
    full = {t for r in fake.requests if r.inspect_template for t in r.texts}
    assert full == {
        "Ask Dr. Okafor at [EMAIL_ADDRESS]",
        "Reply to Ms. Lee, SSN [US_SOCIAL_SECURITY_NUMBER].",
        "Ms. Flagged wrote",
        "Here is the summary.",
    }
    names = {t for r in fake.requests if not r.inspect_template for t in r.texts}
    assert {"Mr. Brown agrees.", "Nothing personal here.", "Ms. Unflagged wrote"} <= names
    assert {"R-1", "gpt-4o-mini"} <= names  # the identifiers are scanned in the same call


def test_retries_exhausted_dead_letter_without_text(fake, monkeypatch):
    register_fast_dlp_engines(monkeypatch)
    dlp_fake.SLEEPS.clear()
    # The requests with the pre-screened prompt fail; the names-only requests go through.
    fake.fail_matching("[EMAIL_ADDRESS]", grpc.StatusCode.RESOURCE_EXHAUSTED)
    p = TestPipeline()
    out = (
        p
        | beam.Create([raw(1, prompt=PII_PROMPT), raw(2)])
        | AnalyzeEvents(dlp_config(fake, "hybrid"))
    )
    assert_that(
        events_of(out.events, "Unbatch2") | "ok" >> beam.Map(lambda e: e.event_id),
        equal_to([event_id(2)]),
        label="the event without findings still goes through",
    )
    assert_that(
        out.dead_letters
        | "dl"
        >> beam.Map(
            lambda d: (
                d.reason,
                d.step,
                d.event_id,
                sorted({"prompt", "response"} & set(json.loads(d.payload))),
                d.payload_state,
            )
        ),
        equal_to(
            [("redaction_failed:dlp_resource_exhausted", "redact", event_id(1), [], "redacted")]
        ),
        label="dead letter without text",
    )

    def no_pii(records):
        text = repr(records)
        assert not [v for v in PII_VALUES if v in text]

    assert_that(out.dead_letters, no_pii, label="no PII in dead letters")
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("genai"))["counters"]
    }
    assert counters["dead_letter.redaction_failed:dlp_resource_exhausted"] == 1
    failed = [r for r in fake.requests if r.status != "OK"]
    assert len(failed) == 3 and {r.status for r in failed} == {"RESOURCE_EXHAUSTED"}
    assert counters["dlp.retries"] == 2 and len(dlp_fake.SLEEPS) == 2
