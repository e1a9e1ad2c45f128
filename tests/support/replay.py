"""The dead-letter replay scenario's inputs: the lines of two ingest runs (valid, ahead of the
clock, redelivered, unredactable, negative, oversize) and the key and clock they are judged by."""

from __future__ import annotations

import datetime as dt
import json

from tests.conftest import TEST_PSEUDONYM_KEY
from tests.support.core_inputs import document
from tests.support.fakes import FAIL_MARKER

__all__ = ["AHEAD", "F1", "F2", "F3", "KEY", "N1", "NOW", "O1", "R1", "SOON", "V1", "line"]


KEY = TEST_PSEUDONYM_KEY.encode()
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SOON = NOW + dt.timedelta(minutes=2)  # within the default 300 s clock skew
AHEAD = NOW + dt.timedelta(hours=1)  # beyond it: event_time_in_future


def stamp(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def line(n: int, when: dt.datetime, **changes) -> bytes:
    return json.dumps(document(n, event_time=stamp(when), **changes)).encode()


# Run 1 (offline engine, --max_event_bytes 4096) and run 2 (an engine that fails on a marker).
V1 = line(1, SOON)  # valid
F1 = line(2, AHEAD)  # the gateway's clock ran ahead: event_time_in_future
F2 = line(3, AHEAD)  # ... and redelivered (F2 twice: one dead letter id)
F3 = line(4, AHEAD, prompt=f"please summarise {FAIL_MARKER}")  # ahead, and unredactable
N1 = line(5, SOON, latency_ms=-1)  # negative_value:latency_ms, for good
O1 = line(6, SOON, prompt="x" * 5000)  # oversize: the payload is not kept
R1 = line(7, SOON, region="eu", prompt=f"call me {FAIL_MARKER}")  # redaction_failed
