"""Sample records of an Avro schema, for the compatibility tests: every field set (``full``,
each union's first non-null branch) or every nullable field null (``minimal``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

_EPOCH = dt.datetime(2026, 1, 27, 12, 0, tzinfo=dt.UTC)


def sample_value(schema: Any, full: bool, seed: int = 7) -> Any:
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if not full and "null" in schema:
            return None
        return sample_value(branches[0], full, seed)
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical in ("timestamp-micros", "timestamp-millis"):
            return _EPOCH + dt.timedelta(seconds=seed)
        if logical == "date":
            return _EPOCH.date()
        if logical == "uuid":
            return "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11"
        kind = schema["type"]
        if kind == "record":
            return sample_record(schema, full, seed)
        if kind == "array":
            return [sample_value(schema["items"], full, seed)] if full else []
        if kind == "map":
            return {"k": sample_value(schema["values"], full, seed)} if full else {}
        if kind == "enum":
            return schema["symbols"][0]
        if kind == "fixed":
            return b"\x00" * schema["size"]
        return sample_value(kind, full, seed)
    return {
        "string": f"s{seed}",
        "bytes": bytes([seed % 256]) * 3,
        "int": seed,
        "long": seed * 1000,
        "float": seed + 0.5,
        "double": seed + 0.25,
        "boolean": True,
        "null": None,
    }[schema]


def sample_record(schema: dict[str, Any], full: bool = True, seed: int = 7) -> dict[str, Any]:
    return {
        f["name"]: sample_value(f["type"], full, seed + i) for i, f in enumerate(schema["fields"])
    }
