"""Streaming metrics are approximate: on the scripted stream of the reconciliation scenario,
an event beyond the allowed lateness is missing and a duplicate beyond the dedupe TTL is
counted twice. The backfill that makes them exact is in ``tests/e2e/test_reconcile.py``."""

from __future__ import annotations

import pytest

from tests.support.reconcile import DAY_S, streamed_store, truth, window


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    return streamed_store(tmp_path_factory)


def test_streaming_metrics_are_approximate(streamed):
    _, _, streamed_rows = streamed
    expected = truth("test-1")
    counts = streamed_rows["request_count"].to_dict()
    assert counts == {
        (window(0), "gemini-2.5-pro", "eu"): 1,
        (window(0), "gpt-4o-mini", "us"): 3,  # event 6 came after the lateness: 4 in truth
        (window(60), "gpt-4o-mini", "us"): 2,  # event 3 twice, after the TTL: 1 in truth
        (window(DAY_S), "gpt-4o-mini", "us"): 1,
    }
    assert expected["request_count"].to_dict() == {
        (window(0), "gemini-2.5-pro", "eu"): 1,
        (window(0), "gpt-4o-mini", "us"): 4,
        (window(60), "gpt-4o-mini", "us"): 1,
        (window(DAY_S), "gpt-4o-mini", "us"): 1,
    }
    # token_count is 10 n: 10 + 20 + 50 streamed against 10 + 20 + 50 + 60; 30 twice against once
    assert streamed_rows["token_sum"].tolist() == [40, 80, 60, 70]
    assert expected["token_sum"].tolist() == [40, 140, 30, 70]
    assert set(streamed_rows["source"]) == {"streaming"}
    assert set(streamed_rows["price_table_version"]) == {"test-1"}
