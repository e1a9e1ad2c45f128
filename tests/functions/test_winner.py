"""The winner rule (``transforms.winner``) and the audit keys (``transforms.audit``) as plain
functions: which copy of an event id is kept, what the others are, and one audit record per
input."""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources

from tests.support.factories import redacted_event
from tests.support.sink_factories import T0, dead_letter
from transforms.audit import (
    DEAD_LETTERED,
    DUPLICATE,
    DUPLICATE_CONFLICT,
    OUTCOME_PRECEDENCE,
    OUTCOMES,
    WRITTEN,
    audit_dead_letter,
    audit_event,
    audit_replay,
    input_audit_id,
)
from transforms.elements import event_micros
from transforms.winner import (
    archived_copy,
    archived_rank,
    content_digest,
    copy_outcome,
    input_rank,
    line_rank,
    run_candidate,
)


def test_an_archived_copy_outranks_every_copy_of_a_run():
    archived = archived_rank(10**18, "zzz")
    assert archived < line_rank("", 0) and archived < input_rank("")
    assert archived_rank(5, "b") < archived_rank(6, "a")  # first processed wins
    assert archived_rank(5, "a") < archived_rank(5, "b")  # then the input identity


def test_in_a_run_the_first_line_wins_whatever_its_event_time():
    assert line_rank("a.jsonl", 900) < line_rank("b.jsonl", 0)  # files in name order
    assert line_rank("a.jsonl", 9) < line_rank("a.jsonl", 900)  # then byte offset
    early = redacted_event(event_time=T0, input_id="a.jsonl#900")
    late = redacted_event(event_time=T0 + dt.timedelta(hours=1), input_id="a.jsonl#9")
    assert run_candidate(late, archived=False) < run_candidate(early, archived=False)


def test_copy_outcome():
    content = content_digest(redacted_event())
    other = content_digest(redacted_event(token_count=1))
    winner = ("pubsub:1", content)
    assert copy_outcome("pubsub:1", other, winner) == WRITTEN  # the winning input again
    assert copy_outcome("pubsub:2", content, winner) == DUPLICATE
    assert copy_outcome("pubsub:2", other, winner) == DUPLICATE_CONFLICT
    assert copy_outcome(None, content, ("", content)) == DUPLICATE  # no identity: never itself


def test_an_archived_copy_without_an_input_identity_is_nobodys_input():
    event = redacted_event(event_id="e-1", input_id=None)
    copy = archived_copy(event)
    assert copy.input_id == "archived:e-1" and copy.content == content_digest(event)
    assert copy.processed_us == event_micros(event.processed_at)
    assert copy_outcome("archived:e-1", copy.content, (copy.input_id, copy.content)) == WRITTEN


def test_the_content_digest_ignores_where_a_copy_came_from():
    event = redacted_event()
    moved = event._replace(input_id="pubsub:9", ingested_at=T0, processed_at=T0)
    assert content_digest(moved) == content_digest(event)


def test_one_audit_record_per_input_whatever_the_outcome():
    event = redacted_event(input_id="f.jsonl#0")
    ids = {audit_event(event, outcome, T0).audit_id for outcome in (WRITTEN, DUPLICATE)}
    assert ids == {input_audit_id("f.jsonl#0")}
    letter = dead_letter(input_id="f.jsonl#0")
    assert audit_dead_letter(letter, T0).audit_id == input_audit_id("f.jsonl#0")
    # Two copies of a rejected line: two inputs, two records, one dead-letter id.
    other = dead_letter(input_id="f.jsonl#77")
    assert audit_dead_letter(other, T0).audit_id != audit_dead_letter(letter, T0).audit_id
    # The replay's note is keyed by its dead letter, apart from any input's record.
    assert audit_replay(letter, T0).audit_id not in {input_audit_id("f.jsonl#0")}


def test_precedence_orders_every_outcome_and_the_view_applies_it():
    assert sorted(OUTCOMES, key=OUTCOME_PRECEDENCE.get) == [
        DEAD_LETTERED,
        DUPLICATE,
        DUPLICATE_CONFLICT,
        WRITTEN,
    ]
    view = resources.files("pipelines").joinpath("sql", "audit_log_unique.sql").read_text()
    ranks = {o: int(r) for o, r in re.findall(r"WHEN '(\w+)' THEN (\d)", view)}
    assert ranks == {o: OUTCOME_PRECEDENCE[o] for o in OUTCOMES}
