"""Dead-letter replay as plain functions: the payload pseudonym as the user key, payloads that
fail again, and choosing, pairing and re-keying the records replayed."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.support.replay import KEY, N1, NOW
from tests.support.sink_factories import dead_letter
from transforms.deadletter import dead_letter_id
from transforms.parse import InvalidEvent, parse_event
from transforms.pii.offline import OfflineEngine
from transforms.pii.payload import redact_payload
from transforms.pii.pseudonym import pseudonymize
from transforms.replay import choose_submission, pair_refailures, rekey_refailure


def test_replay_mode_takes_the_payload_pseudonym_as_the_user_key():
    payload = redact_payload(N1, OfflineEngine(), KEY, max_bytes=1 << 20)
    fixed = json.loads(payload) | {"latency_ms": 5}
    raw = json.dumps(fixed).encode()
    event = parse_event(raw, now=NOW, pseudonymised=True)
    assert (event.user_id, event.user_key) == ("", pseudonymize("user-alice-0001", KEY))
    with pytest.raises(InvalidEvent, match="user_id"):  # never from the gateway
        parse_event(raw, now=NOW)
    forged = json.dumps(fixed | {"user_id": {"pseudonym": "not-a-pseudonym"}}).encode()
    with pytest.raises(InvalidEvent) as caught:
        parse_event(forged, now=NOW, pseudonymised=True)
    assert caught.value.reason == "bad_type:user_id"


def test_a_payload_failing_again_keeps_its_pseudonym():
    engine = OfflineEngine()
    payload = redact_payload(N1, engine, KEY, max_bytes=1 << 20)
    again = redact_payload(payload.encode(), engine, KEY, max_bytes=1 << 20, keep_pseudonyms=True)
    assert json.loads(again) == json.loads(payload)
    twice = redact_payload(payload.encode(), engine, KEY, max_bytes=1 << 20)
    assert json.loads(twice)["user_id"] != json.loads(payload)["user_id"]  # why keep exists
    text = f'{{"user_id": "pseudonym:{"a" * 64}", "broken'.encode()
    assert f"pseudonym:{'a' * 64}" in redact_payload(
        text, engine, KEY, max_bytes=1 << 20, keep_pseudonyms=True
    )


def test_choosing_pairing_and_rekeying():
    t = dead_letter().failed_at
    original = dead_letter(dead_letter_id="a" * 64, failed_at=t)
    earlier_replay = dead_letter(dead_letter_id="b" * 64, failed_at=t + dt.timedelta(days=1))
    chosen, ids = choose_submission([original, earlier_replay])
    assert (chosen, ids) == (earlier_replay, ("a" * 64, "b" * 64))
    failed = dead_letter(
        dead_letter_id="c" * 64,
        reason="bad_timestamp",
        step="parse",
        payload_sha256="d" * 64,
        payload_bytes=7,
        event_id=None,
    )
    rekeyed = rekey_refailure(failed, chosen)
    assert rekeyed.dead_letter_id == dead_letter_id(chosen.payload_sha256, "parse", "bad_timestamp")
    assert (rekeyed.payload_sha256, rekeyed.payload_bytes, rekeyed.replay_of) == (
        chosen.payload_sha256,
        chosen.payload_bytes,
        chosen.dead_letter_id,
    )
    assert rekeyed.event_id == chosen.event_id  # taken from the record replayed when unknown
    other = dead_letter(dead_letter_id="e" * 64)
    pairs = pair_refailures([(other, ("e" * 64,)), (chosen, ids)], [failed])
    assert pairs == [((chosen, ids), failed)]  # by id: "b..." before "e..."
