"""``changed_users``: what a usage pane keeps of its shard (``transforms/usage.py``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from transforms.usage import changed_users, usage_of

U1 = ("u1", "gemini-2.5-pro", "001")
U2 = ("u2", "gemini-2.5-pro", "001")


def test_a_user_with_new_requests_is_kept_and_one_without_is_not():
    pane = {U1: usage_of(10, 5, 5, 100.0, False), U2: usage_of(10, 5, 5, 100.0, False)}
    pane[U1][0] = 3  # three requests so far
    assert changed_users(pane, {U1: 2, U2: 1}) == {U1: pane[U1]}


def test_with_no_state_every_user_is_kept():
    """A relaunch loses the state: the next pane re-emits its whole shard (harmless)."""
    pane = {U1: usage_of(1, None, None, 1.0, True), U2: usage_of(2, 1, 1, 2.0, False)}
    assert changed_users(pane, {}) == pane


users = st.tuples(st.sampled_from("abcdef"), st.just("m"), st.just("v"))


@given(st.dictionaries(users, st.integers(1, 50)), st.dictionaries(users, st.integers(1, 50)))
def test_kept_exactly_when_the_request_count_differs(counts, emitted):
    pane = {user: [n, 0, 0, 0, 0, 0.0, 0] for user, n in counts.items()}
    kept = changed_users(pane, emitted)
    assert set(kept) == {user for user, n in counts.items() if emitted.get(user) != n}
    assert all(kept[user] is pane[user] for user in kept)
