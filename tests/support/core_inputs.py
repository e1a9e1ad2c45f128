"""Raw gateway events (bytes) for core-transform tests, with known PII values."""

from __future__ import annotations

import datetime as dt
import json
import uuid

T0 = dt.datetime(2026, 1, 27, 10, 0, 0, tzinfo=dt.UTC)
T0_S = T0.timestamp()

# Every value here must be absent from every output of the pipeline.
PII_VALUES = (
    "alice.smith@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "123-45-6789",
    "GB82 WEST 1234 5698 7654 32",
    "203.0.113.77",
    "AKIAIOSFODNN7EXAMPLE",
    "user-alice-0001",
)
PII_PROMPT = (
    "Hi, I'm alice.smith@example.com, call me on +44 20 7946 0958. My card is "
    "4111 1111 1111 1111, SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32. "
    "The server at 203.0.113.77 uses key AKIAIOSFODNN7EXAMPLE."
)


def event_id(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


def document(n: int, offset_s: float = 5, **changes) -> dict:
    doc = {
        "event_id": event_id(n),
        "request_id": f"R-{n}",
        "user_id": "user-alice-0001",
        "event_time": (T0 + dt.timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z"),
        "model": "gpt-4o-mini",
        "latency_ms": 100.0 * n,
        "token_count": 10 * n,
        "prompt_tokens": 7 * n,
        "completion_tokens": 3 * n,
        "policy_flags": [],
        "region": "us",
        "prompt": "Summarise the quarterly report, version 1.2.3.4, order 2026-01-27.",
        "response": "Here is the summary.",
    }
    doc.update(changes)
    return doc


def raw(n: int, offset_s: float = 5, **changes) -> bytes:
    return json.dumps(document(n, offset_s, **changes)).encode()
