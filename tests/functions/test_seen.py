"""SeenIds, the streaming dedupe's per-shard memory, against a plain dict doing the same."""

from __future__ import annotations

import random

import numpy as np
import pytest

from transforms.seen import UNKNOWN_CONTENT, SeenIds, content_number, id_digest


def test_empty_holds_nothing_and_round_trips():
    empty = SeenIds.empty()
    assert len(empty) == 0 and empty.soonest() is None
    assert empty.contains([id_digest("a")]) == [False]
    assert len(SeenIds.from_bytes(None)) == 0
    assert len(SeenIds.from_bytes(empty.to_bytes())) == 0


def test_add_look_up_expire_and_round_trip():
    ids = SeenIds.empty().with_added([id_digest("b"), id_digest("a")], [20, 10])
    ids = SeenIds.from_bytes(ids.to_bytes())
    assert ids.contains([id_digest("a"), id_digest("c"), id_digest("b")]) == [True, False, True]
    assert ids.soonest() == 10
    later = ids.without_expired(10)  # an expiry equal to now is over
    assert later.contains([id_digest("a"), id_digest("b")]) == [False, True]
    assert later.soonest() == 20
    assert len(later.without_expired(20)) == 0


def test_digests_with_trailing_zero_bytes_stay_distinct():
    # numpy's S dtype pads with NUL bytes: two 16-byte digests that differ only in trailing
    # zeros must not compare equal.
    a, b = b"x" * 15 + b"\x00", b"x" * 14 + b"\x00\x00"
    ids = SeenIds.empty().with_added([a], [5])
    assert ids.contains([a, b, b"x" * 16]) == [True, False, False]
    ids = ids.with_added([b], [6])
    assert ids.contains([a, b]) == [True, True] and len(ids) == 2


def test_truncated_state_is_an_error():
    data = SeenIds.empty().with_added([id_digest("a")], [1]).to_bytes()
    with pytest.raises(ValueError, match="does not hold"):
        SeenIds.from_bytes(data[:-1])


def test_matches_a_dict_over_random_operations():
    rng = random.Random(7)
    model: dict[str, int] = {}
    ids = SeenIds.empty()
    pool = [f"event-{i}" for i in range(3000)]
    for step in range(300):
        batch = rng.sample(pool, rng.randint(0, 40))
        assert ids.contains([id_digest(i) for i in batch]) == [i in model for i in batch]
        new = [i for i in dict.fromkeys(batch) if i not in model]
        expiries = [rng.randint(step, step + 50) for _ in new]
        model.update(zip(new, expiries, strict=True))
        ids = SeenIds.from_bytes(ids.with_added([id_digest(i) for i in new], expiries).to_bytes())
        if step % 7 == 0:
            model = {i: e for i, e in model.items() if e > step}
            ids = ids.without_expired(step)
        assert len(ids) == len(model)
        assert ids.soonest() == (min(model.values()) if model else None)
        assert bool(np.all(ids.digests[:-1] < ids.digests[1:]))  # sorted, no repeats


def test_contents_are_kept_beside_their_ids_through_adds_expiry_and_bytes():
    a, b, c = id_digest("a"), id_digest("b"), id_digest("c")
    ids = SeenIds.empty().with_added([b, a], [20, 10], [content_number(b"\x01" * 8), 7])
    ids = SeenIds.from_bytes(ids.with_added([c], [30], [2**64 - 1]).to_bytes())
    assert ids.lookup([a, b, c, id_digest("d")]) == [
        7,
        content_number(b"\x01" * 8),
        2**64 - 1,
        None,
    ]
    assert ids.without_expired(10).lookup([a, b]) == [None, content_number(b"\x01" * 8)]
    assert ids.with_added([id_digest("e")], [5]).lookup([id_digest("e")]) == [UNKNOWN_CONTENT]


def test_state_written_before_contents_were_kept_reads_them_as_unknown():
    ids = SeenIds.empty().with_added([id_digest("a"), id_digest("b")], [1, 2], [5, 6])
    data = ids.to_bytes()
    former = data[: len(data) - 2 * 8]  # count, digests and expiries only
    old = SeenIds.from_bytes(former)
    assert old.lookup([id_digest("a"), id_digest("b")]) == [UNKNOWN_CONTENT, UNKNOWN_CONTENT]
    assert old.soonest() == 1
