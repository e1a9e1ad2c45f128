"""The local Pub/Sub source's plain parts: when a message may be acknowledged (``AckLedger``),
the element timestamp of a message (``event_time_us``), the commit notifications, and what the
source's reader sends the TestStream service."""

from __future__ import annotations

import datetime as dt
import queue
import threading

import pytest

from pipelines.io.sinks import commits
from pipelines.local.acks import ARCHIVE, AUDIT, DEAD_LETTERS, AckLedger
from pipelines.local.pubsub import _PulledMessages, event_time_us
from transforms.audit import DEAD_LETTERED, DUPLICATE, WRITTEN
from transforms.elements import AuditRecord, Message, event_micros


class _Delivery:
    """A delivery of a message: records whether it was acknowledged or given back."""

    def __init__(self, name: str):
        self.name = name
        self.acked = 0
        self.nacked = 0

    def ack(self) -> None:
        self.acked += 1

    def nack(self) -> None:
        self.nacked += 1


def _audit(input_id: str, outcome: str, dead_letter_id: str | None = None) -> AuditRecord:
    return AuditRecord(
        audit_id=f"a-{input_id}",
        event_id="e",
        request_id=None,
        user_key=None,
        outcome=outcome,
        reason=None,
        data_class=None,
        redaction_counts={},
        model=None,
        region=None,
        event_time=None,
        dead_letter_id=dead_letter_id,
        recorded_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        input_id=input_id,
    )


class _Stored:
    """An archived event or a dead letter: all the ledger reads of it is ``input_id``."""

    def __init__(self, input_id: str):
        self.input_id = input_id


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("audit_first", [True, False])
def test_a_written_event_is_acknowledged_once_audited_and_archived(audit_first):
    ledger, delivery = AckLedger(), _Delivery("m1")
    assert ledger.received("pubsub:1", delivery)
    first, second = (
        [(AUDIT, [_audit("pubsub:1", WRITTEN)]), (ARCHIVE, [_Stored("pubsub:1")])]
        if audit_first
        else [(ARCHIVE, [_Stored("pubsub:1")]), (AUDIT, [_audit("pubsub:1", WRITTEN)])]
    )
    ledger.committed(*first)
    assert delivery.acked == 0
    ledger.committed(*second)
    assert delivery.acked == 1
    assert ledger.stats().acknowledged == 1 and ledger.stats().in_flight == 0


def test_a_written_event_turned_into_a_dead_letter_by_a_sink_is_acknowledged():
    ledger, delivery = AckLedger(), _Delivery("m1")
    ledger.received("pubsub:1", delivery)
    ledger.committed(AUDIT, [_audit("pubsub:1", WRITTEN)])
    ledger.committed(DEAD_LETTERS, [_Stored("pubsub:1")])
    assert delivery.acked == 1


def test_a_dead_lettered_input_waits_for_its_dead_letter_not_the_archive():
    ledger, delivery = AckLedger(), _Delivery("m1")
    ledger.received("pubsub:1", delivery)
    ledger.committed(AUDIT, [_audit("pubsub:1", DEAD_LETTERED, dead_letter_id="d1")])
    ledger.committed(ARCHIVE, [_Stored("pubsub:1")])  # not what it waits for
    assert delivery.acked == 0
    ledger.committed(DEAD_LETTERS, [_Stored("pubsub:1")])
    assert delivery.acked == 1


def test_a_duplicate_is_acknowledged_once_audited():
    ledger, delivery = AckLedger(), _Delivery("m1")
    ledger.received("pubsub:1", delivery)
    ledger.committed("metrics_minute", [object()])  # other outputs are not looked at
    assert delivery.acked == 0
    ledger.committed(AUDIT, [_audit("pubsub:1", DUPLICATE)])
    assert delivery.acked == 1


def test_the_archive_alone_acknowledges_nothing():
    ledger, delivery = AckLedger(), _Delivery("m1")
    ledger.received("pubsub:1", delivery)
    ledger.committed(ARCHIVE, [_Stored("pubsub:1")])
    ledger.committed(DEAD_LETTERS, [_Stored("pubsub:1")])
    assert delivery.acked == 0 and ledger.stats().in_flight == 1


def test_records_of_other_inputs_are_ignored():
    ledger, delivery = AckLedger(), _Delivery("m1")
    ledger.received("pubsub:1", delivery)
    ledger.committed(AUDIT, [_audit("pubsub:2", DUPLICATE), _audit("file.jsonl#0", DUPLICATE)])
    assert delivery.acked == 0


def test_a_redelivery_in_flight_is_held_and_acknowledged_with_the_first():
    ledger, first, again = AckLedger(), _Delivery("m1"), _Delivery("m1 again")
    assert ledger.received("pubsub:1", first)
    assert not ledger.received("pubsub:1", again)  # not emitted twice
    ledger.committed(AUDIT, [_audit("pubsub:1", DUPLICATE)])
    assert (first.acked, again.acked) == (1, 1)
    stats = ledger.stats()
    assert (stats.messages, stats.redelivered, stats.acknowledged) == (1, 1, 1)


def test_a_redelivery_after_the_ack_is_acknowledged_at_once_until_the_ttl():
    clock = _Clock()
    ledger = AckLedger(acked_ttl_s=60, clock=clock)
    ledger.received("pubsub:1", _Delivery("m1"))
    ledger.committed(AUDIT, [_audit("pubsub:1", DUPLICATE)])
    clock.now = 59
    late = _Delivery("m1 late")
    assert not ledger.received("pubsub:1", late)
    assert late.acked == 1 and ledger.stats().redelivered_after_ack == 1
    clock.now = 121  # forgotten: it goes into the pipeline again, whose dedupe absorbs it
    much_later = _Delivery("m1 much later")
    assert ledger.received("pubsub:1", much_later)
    assert much_later.acked == 0


def test_release_gives_back_what_is_in_flight_and_closing_refuses_new_messages():
    ledger = AckLedger()
    done, pending, held = _Delivery("done"), _Delivery("pending"), _Delivery("pending again")
    ledger.received("pubsub:1", done)
    ledger.received("pubsub:2", pending)
    ledger.committed(AUDIT, [_audit("pubsub:1", DUPLICATE)])
    ledger.close()
    refused = _Delivery("after close")
    assert not ledger.received("pubsub:3", refused)
    assert not ledger.received("pubsub:2", held)  # a redelivery in flight is still held
    ledger.committed(AUDIT, [_audit("pubsub:3", DUPLICATE)])  # never taken: nothing to ack
    assert ledger.release() == 1
    assert (done.acked, done.nacked) == (1, 0)
    assert (pending.nacked, held.nacked, refused.nacked) == (1, 1, 1)
    assert refused.acked == 0
    stats = ledger.stats()
    assert (stats.in_flight, stats.released, stats.messages) == (0, 1, 2)


def test_the_ledger_is_safe_across_threads():
    ledger = AckLedger()
    deliveries = {f"pubsub:{i}": _Delivery(str(i)) for i in range(2000)}

    def receive(ids):
        for input_id in ids:
            ledger.received(input_id, deliveries[input_id])

    ids = list(deliveries)
    threads = [threading.Thread(target=receive, args=(ids[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    commits_done = [
        threading.Thread(target=ledger.committed, args=(AUDIT, [_audit(i, DUPLICATE)])) for i in ids
    ]
    for thread in commits_done:
        thread.start()
    for thread in commits_done:
        thread.join()
    assert all(d.acked == 1 for d in deliveries.values())
    assert ledger.stats().acknowledged == 2000


# --- the element timestamp of a message ----------------------------------------------------

PUBLISHED_US = 1_800_000_000_000_000


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            {"event_time": "2026-01-27T12:00:00Z"},
            (dt.datetime(2026, 1, 27, 12, tzinfo=dt.UTC), True),
        ),
        (
            {"event_time": "2026-01-27T13:00:00.250000+01:00"},
            (dt.datetime(2026, 1, 27, 12, 0, 0, 250000, tzinfo=dt.UTC), True),
        ),
        ({"event_time": "1769515200000"}, (dt.datetime(2026, 1, 27, 12, tzinfo=dt.UTC), True)),
        ({"event_time": "2026-01-27T12:00:00"}, (None, False)),  # no offset
        ({"event_time": "yesterday"}, (None, False)),
        ({"event_time": ""}, (None, False)),
        ({}, (None, False)),
    ],
)
def test_event_time_attribute_or_publish_time(attributes, expected):
    moment, valid = expected
    want = PUBLISHED_US if moment is None else event_micros(moment)
    assert event_time_us(attributes, PUBLISHED_US) == (want, valid)


# --- commit notifications --------------------------------------------------------------------


def test_commit_notifications_reach_listeners_only_while_installed():
    heard = []
    commits.notify_committed(AUDIT, ["before"])
    with commits.listening(lambda output, records: heard.append((output, list(records)))):
        commits.notify_committed(AUDIT, ["during"])
    commits.notify_committed(AUDIT, ["after"])
    assert heard == [(AUDIT, ["during"])]


# --- what the reader sends -------------------------------------------------------------------


def test_the_reader_sends_each_batch_then_the_clock_and_ends_once_drained():
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    draining = threading.Event()
    message = Message(b'{"event_id": "e"}', "pubsub:7", PUBLISHED_US)
    inbox.put((message, 123))
    reader = _PulledMessages(inbox, lambda m: m.id.encode(), 0.01, draining)
    events = reader.read_multiple(None)
    first = next(events)
    assert [(e.encoded_element, e.timestamp) for e in first.element_event.elements] == [
        (b"pubsub:7", 123)
    ]
    advance, watermark = next(events), next(events)
    assert advance.processing_time_event.advance_duration >= 0
    now_us = event_micros(dt.datetime.now(dt.UTC))
    assert now_us - 5_000_000 < watermark.watermark_event.new_watermark <= now_us
    draining.set()
    rest = list(events)  # an empty take while draining ends the stream
    assert all(not e.HasField("element_event") for e in rest)
    assert len(rest) == 2
