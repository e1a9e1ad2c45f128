"""Builders of the sinks' input elements for tests, with valid defaults and keyword overrides."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from transforms import sketches
from transforms.elements import AuditRecord, DeadLetter, MetricRow

__all__ = ["T0", "audit_record", "dead_letter", "metric_row"]

T0 = dt.datetime(2026, 1, 27, 10, 0, 0, tzinfo=dt.UTC)


def _build(kind: type, fields: dict[str, Any], overrides: dict[str, Any]) -> Any:
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
    fields.update(overrides)
    return kind(**fields)


def metric_row(*, latencies_ms: tuple[float, ...] = (100.0, 200.0), **overrides: Any) -> MetricRow:
    """Returns a valid ``MetricRow``; any field can be overridden by keyword.

    ``latencies_ms`` fills the sketch bins and percentiles (via ``transforms.sketches``),
    ``request_count`` and the cost (0.25 USD per request), unless those are overridden.
    """
    counts = sketches.new_latency_counts()
    for latency_ms in latencies_ms:
        sketches.add_latency(counts, latency_ms)
    p50, p95, p99 = sketches.latency_quantiles(counts, (0.5, 0.95, 0.99))
    window_start = overrides.get("window_start", T0)
    users = sketches.new_users()
    sketches.add_user(users, "user-key-0001")
    fields: dict[str, Any] = {
        "window_start": window_start,
        "window_end": window_start + dt.timedelta(seconds=60),
        "model": "gemini-2.5-pro",
        "region": "europe-west1",
        "request_count": len(latencies_ms),
        "token_sum": 300 * len(latencies_ms),
        "prompt_token_sum": 200 * len(latencies_ms),
        "completion_token_sum": 100 * len(latencies_ms),
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "latency_sketch_bins": sketches.to_latency_bins(counts),
        "latency_sketch_relative_accuracy": sketches.RELATIVE_ACCURACY,
        "distinct_users_approx": 1,
        "users_hll": sketches.serialize_users(users),
        "policy_flag_counts": {},
        "data_class_counts": {"INTERNAL": len(latencies_ms)},
        "redaction_counts": {},
        "pane_timing": "ON_TIME",
        "pane_index": 0,
        "is_final": False,
        "emitted_at": window_start + dt.timedelta(seconds=65),
        "source": "streaming",
        "unsplit_token_sum": 0,
        "estimated_cost_usd": 0.25 * len(latencies_ms),  # a binary fraction: sums are exact
        "price_table_version": "test-1",
        "latest_event_time": None,
        "ingestion_counts": (),
        "freshness_counts": (),
    }
    return _build(MetricRow, fields, overrides)


def audit_record(**overrides: Any) -> AuditRecord:
    """Returns a valid ``AuditRecord``; ``audit_id`` follows (event_id, outcome) unless given."""
    event_id = overrides.get("event_id", "evt-0001")
    outcome = overrides.get("outcome", "written")
    fields: dict[str, Any] = {
        "audit_id": hashlib.sha256(f"{event_id}|{outcome}".encode()).hexdigest(),
        "event_id": event_id,
        "request_id": "req-0001",
        "user_key": "user-key-0001",
        "outcome": outcome,
        "reason": None,
        "data_class": "INTERNAL",
        "redaction_counts": {"EMAIL_ADDRESS": 1},
        "model": "gemini-2.5-pro",
        "region": "europe-west1",
        "event_time": T0 + dt.timedelta(seconds=5),
        "dead_letter_id": None,
        "recorded_at": T0 + dt.timedelta(seconds=7),
    }
    return _build(AuditRecord, fields, overrides)


def dead_letter(**overrides: Any) -> DeadLetter:
    """Returns a valid ``DeadLetter``; any field can be overridden by keyword."""
    payload = overrides.get("payload", '{"event_id": "evt-0001", "user_id": "[PSEUDONYM]"}')
    payload_sha256 = hashlib.sha256((payload or "").encode()).hexdigest()
    fields: dict[str, Any] = {
        "dead_letter_id": hashlib.sha256(
            f"{payload_sha256}|parse|bad_timestamp".encode()
        ).hexdigest(),
        "event_id": "evt-0001",
        "request_id": "req-0001",
        "reason": "bad_timestamp",
        "error_type": "InvalidEvent",
        "error_message": "event_time is not RFC 3339",
        "step": "parse",
        "failed_at": T0 + dt.timedelta(seconds=3),
        "payload": payload,
        "payload_state": "redacted",
        "payload_sha256": payload_sha256,
        "payload_bytes": len((payload or "").encode()),
        "replay_of": None,
        "input_id": None,
    }
    return _build(DeadLetter, fields, overrides)
