"""ChooseCopies' merge of the ids seen and the copies it picks, as plain functions. The
composite itself is tested in ``tests/transforms/test_copies.py``."""

from __future__ import annotations

from transforms.copies import chosen_copies, merge_seen


def test_merge_seen_sums_counts_and_keeps_the_lowest_candidate():
    low, high = ((1, "a", 1, 1.0, "m"), "f", 10), ((2, "a", 1, 1.0, "m"), "f", 0)
    merged = merge_seen({"x": [1, high]}, {"x": [2, low], "y": [1, high]})
    assert merged == {"x": [3, low], "y": [1, high]}
    assert chosen_copies(merged) == [("x", ("f", 10))]
    other = {"z": [1, low]}
    merge_seen(merged, other)
    merged["z"][0] += 5
    assert other == {"z": [1, low]}  # the merged entry is a copy, not the input's list
