"""Inputs of ``AggregateUsage`` and the rows expected of it, summed by hand here (the prices of
``tests/support/aggregate.py``: gemini-2.5-pro priced, other models not)."""

from __future__ import annotations

from decimal import Decimal

from tests.support.aggregate import JANUARY, utc
from transforms.elements import RedactedEvent, UsageRow

__all__ = ["comparable_usage", "expected_usage"]


def comparable_usage(row: UsageRow) -> UsageRow:
    """``row`` without its emission time (which varies between runs)."""
    return row._replace(emitted_at=None)


def _unsplit(e: RedactedEvent) -> int:
    if e.prompt_tokens is not None and e.completion_tokens is not None:
        return 0
    return max(e.token_count - (e.prompt_tokens or 0) - (e.completion_tokens or 0), 0)


def expected_usage(
    events: list[RedactedEvent], *, pane_timing: str, pane_index: int, source: str = "streaming"
) -> UsageRow:
    """The comparable row of ``events`` (one hour, user, model and model version)."""
    first = events[0]
    hour_s = int(first.event_time.timestamp()) // 3600 * 3600
    prompt = sum(e.prompt_tokens or 0 for e in events)
    completion = sum(e.completion_tokens or 0 for e in events)
    unsplit = sum(_unsplit(e) for e in events)
    cost = None
    if first.model in JANUARY:
        prompt_price, completion_price = JANUARY[first.model]
        total = (prompt * prompt_price + (completion + unsplit) * completion_price) / 1000
        cost = float(Decimal(total).quantize(Decimal("1e-9")))
    return UsageRow(
        hour_start=utc(hour_s),
        user_key=first.user_key,
        model=first.model,
        model_version=first.model_version or "",
        request_count=len(events),
        token_sum=sum(e.token_count for e in events),
        prompt_token_sum=prompt,
        completion_token_sum=completion,
        unsplit_token_sum=unsplit,
        latency_ms_sum=float(sum(e.latency_ms for e in events)),
        policy_flagged_count=sum(1 for e in events if e.policy_flags),
        estimated_cost_usd=cost,
        price_table_version="test-1",
        pane_timing=pane_timing,
        pane_index=pane_index,
        emitted_at=None,
        source=source,
    )
