"""The identifier scan through the core composite: every stored string passes the engine.

``request_id``, ``model``, ``model_version`` and each policy flag are within their grammar here
(parsing holds them to it) and hold PII; each event must end as a dead letter
``pii_in_field:<field>`` whose message names the field, never the value, and whose payload holds
the value redacted, and no output (events, metrics, audit, dead letters) may hold the value.
"""

import json

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from tests.support.analyze import CONFIG, metric_view
from tests.support.core_inputs import PII_PROMPT, event_id, raw
from tests.support.factories import events_of
from tests.support.pipelines import TestPipeline
from transforms.analyze import AnalyzeEvents
from transforms.audit import flatten_audit

# field -> (value within the grammar, what the engine makes of it)
PLANTED = {
    "request_id": ("carol.plant@example.org", "[EMAIL_ADDRESS]"),
    "model": ("020-7946-0958", "[PHONE_NUMBER]"),
    "model_version": ("536-22-8141", "[US_SOCIAL_SECURITY_NUMBER]"),
    "policy_flags": (
        ["pii_redacted", "536-22-8140"],
        ["pii_redacted", "[US_SOCIAL_SECURITY_NUMBER]"],
    ),
}
VALUES = ("carol.plant@example.org", "020-7946-0958", "536-22-8141", "536-22-8140")


def _inputs():
    return [raw(1)] + [
        raw(10 + i, prompt=PII_PROMPT, **{field: value})
        for i, (field, (value, _)) in enumerate(PLANTED.items())
    ]


def test_an_identifier_with_a_finding_is_dead_lettered_with_its_value_redacted():
    with TestPipeline() as p:
        out = p | beam.Create(_inputs()) | AnalyzeEvents(CONFIG)
        assert_that(
            events_of(out.events, "Unbatch") | "written" >> beam.Map(lambda e: e.event_id),
            equal_to([event_id(1)]),
            label="only the clean event is written",
        )

        def view(letter):
            payload = json.loads(letter.payload)
            field = letter.reason.split(":")[1]
            return (
                letter.reason,
                letter.step,
                letter.event_id,
                letter.request_id,
                field in letter.error_message,
                payload[field],
                payload["prompt"].startswith("Hi, I'm [EMAIL_ADDRESS]"),
                set(payload["user_id"]),
            )

        assert_that(
            out.dead_letters | "dl" >> beam.Map(view),
            equal_to(
                [
                    (
                        f"pii_in_field:{field}",
                        "redact",
                        event_id(10 + i),
                        None if field == "request_id" else f"R-{10 + i}",
                        True,
                        redacted,
                        True,
                        {"pseudonym"},
                    )
                    for i, (field, (_, redacted)) in enumerate(PLANTED.items())
                ]
            ),
            label="one dead letter per field, value redacted",
        )
        assert_that(
            flatten_audit(out.audit, "AllAudit")
            | "audit" >> beam.Map(lambda a: (a.outcome, a.event_id, a.reason)),
            equal_to(
                [("written", event_id(1), None)]
                + [
                    ("dead_lettered", event_id(10 + i), f"pii_in_field:{field}")
                    for i, field in enumerate(PLANTED)
                ]
            ),
            label="audit",
        )
        assert_that(
            out.metrics | "m" >> beam.Map(metric_view),
            equal_to([(0.0, "gpt-4o-mini", "us", 1, 10, "ON_TIME")]),
            label="metrics hold the clean event only",
        )

        def nothing_planted(elements):
            text = repr(elements)
            assert [v for v in VALUES if v in text] == []

        outputs = {name: getattr(out, name) for name in ("events", "metrics", "dead_letters")}
        outputs["audit"] = flatten_audit(out.audit, "EveryAudit")
        for name, pcoll in outputs.items():
            assert_that(pcoll, nothing_planted, label=f"no planted value in {name}")
