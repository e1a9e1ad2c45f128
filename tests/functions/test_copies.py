"""ChooseCopies' merge of the candidates seen and the winners it picks, as plain functions.
The composite itself is tested in ``tests/transforms/test_copies.py``."""

from __future__ import annotations

from transforms.copies import chosen_copies, merge_seen
from transforms.winner import archived_rank, line_rank


def test_merge_seen_sums_counts_and_keeps_the_lowest_candidate():
    low = (line_rank("f", 0), "f#0", b"c1")
    high = (line_rank("f", 10), "f#10", b"c2")
    merged = merge_seen({"x": [1, 0, high]}, {"x": [2, 0, low], "y": [1, 0, high]})
    assert merged == {"x": [3, 0, low], "y": [1, 0, high]}
    assert chosen_copies(merged) == [("x", ("f#0", b"c1"))]
    other = {"z": [1, 0, low]}
    merge_seen(merged, other)
    merged["z"][0] += 5
    assert other == {"z": [1, 0, low]}  # the merged entry is a copy, not the input's list


def test_an_archived_copy_wins_and_makes_a_single_line_a_choice():
    line = (line_rank("a", 0), "a#0", b"new")
    archived = (archived_rank(5, "pubsub:1"), "pubsub:1", b"old")
    merged = merge_seen({"x": [1, 0, line], "y": [0, 1, archived]}, {"x": [0, 1, archived]})
    # x: one line and an archived copy: the archived copy wins. y: archived only: not the
    # input's business.
    assert chosen_copies(merged) == [("x", ("pubsub:1", b"old"))]
    earlier = (archived_rank(4, "pubsub:9"), "pubsub:9", b"first")
    merge_seen(merged, {"x": [0, 1, earlier]})
    assert chosen_copies(merged) == [("x", ("pubsub:9", b"first"))]  # first archived wins
