"""Compatibility between revisions of the contract, and the history of every revision.

Every revision of each ``schemas/avro/<name>.avsc`` that ever shipped is kept under
``schemas/avro/history/<name>/r<N>.avsc`` (N from 1; the newest is the current file), rebuilt
from git for the revisions before this history existed. A test holds every revision to these
rules, so a change that would break a reader fails before it ships:

* ``resolution_problems(writer, reader)``: Avro schema resolution, as the Avro specification
  defines it. Data written with ``writer`` must be readable with ``reader``: every reader field
  the writer lacks has a default, every shared field's writer type resolves to the reader type
  (the same type, a promotion int -> long -> float -> double, string <-> bytes, union branches
  matched by type), logical types unchanged.
* Backward (the current schema reads every earlier revision: old archive and dead-letter files,
  events of an older gateway) and forward (every earlier revision's reader reads the current
  one: a job still on the old image during a rolling update, a backfill with an older template)
  across all revisions: additive, optional changes only.
* ``table_problems(old, new)``: what BigQuery can apply in place to a table of that schema
  (``terraform apply``, the sinks' ``ALTER``): added columns NULLABLE or REPEATED, no column
  removed, no type or mode changed except REQUIRED -> NULLABLE.

A new major version of the input contract is by definition not compatible: it gets a new
namespace (``genai.gateway.v2``), a file of its own and a converter (``transforms.versions``).
"""

from __future__ import annotations

import itertools
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from schemas.contract import SCHEMA_NAMES, load_schema

__all__ = [
    "TABLE_SCHEMA_NAMES",
    "compatibility_problems",
    "history",
    "resolution_problems",
    "table_problems",
]

# Schemas whose rows live in BigQuery tables (metrics_minute, audit_log, dead_letters,
# metrics_rollup, freshness_minute, usage_hourly).
TABLE_SCHEMA_NAMES = (
    "metric_row",
    "audit_record",
    "dead_letter",
    "metric_rollup",
    "freshness_row",
    "usage_row",
)

_REVISION = re.compile(r"r([1-9][0-9]*)\.avsc")
_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
    "boolean": {"boolean"},
    "null": {"null"},
}


@cache
def _history_files(name: str) -> tuple[tuple[int, str], ...]:
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    folder = resources.files("schemas").joinpath("avro", "history", name)
    found = []
    for entry in folder.iterdir():
        match = _REVISION.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"schemas/avro/history/{name}/{entry.name}: not r<N>.avsc")
        found.append((int(match.group(1)), entry.read_text("utf-8")))
    found.sort()
    if [n for n, _ in found] != list(range(1, len(found) + 1)):
        raise ValueError(f"schemas/avro/history/{name}: revisions must be r1..rN without gaps")
    return tuple(found)


def history(name: str) -> list[tuple[int, dict[str, Any]]]:
    """Every revision of schema ``name``, oldest first: ``(N, schema)`` of ``r<N>.avsc``."""
    return [(n, json.loads(text)) for n, text in _history_files(name)]


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return schema["type"] if isinstance(schema["type"], str) else _kind(schema["type"])


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _record_name(schema: dict[str, Any]) -> str:
    return schema["name"].rsplit(".", 1)[-1]


def resolution_problems(writer: Any, reader: Any, path: str = "") -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can)."""
    where = path or "<root>"
    if isinstance(writer, list):
        # Every branch the writer may have written must resolve against the reader.
        problems = []
        for branch in writer:
            problems += resolution_problems(branch, reader, f"{path}<{_kind(branch)}>")
        return problems
    if isinstance(reader, list):
        if any(not resolution_problems(writer, branch, path) for branch in reader):
            return []
        return [f"{where}: writer type {_kind(writer)} matches no branch of the reader's union"]
    w_kind, r_kind = _kind(writer), _kind(reader)
    if _logical(writer) != _logical(reader):
        return [f"{where}: logical type {_logical(writer)} became {_logical(reader)}"]
    if w_kind in _PROMOTIONS:
        if r_kind not in _PROMOTIONS[w_kind]:
            return [f"{where}: {w_kind} cannot be read as {r_kind}"]
        return []
    if w_kind != r_kind:
        return [f"{where}: {w_kind} became {r_kind}"]
    if w_kind == "array":
        return resolution_problems(writer["items"], reader["items"], f"{path}[]")
    if w_kind == "map":
        return resolution_problems(writer["values"], reader["values"], f"{path}{{}}")
    if w_kind == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{where}: enum symbols {sorted(missing)} removed without a default"]
        return []
    if w_kind == "fixed":
        if writer["size"] != reader["size"] or _record_name(writer) != _record_name(reader):
            return [f"{where}: fixed changed name or size"]
        return []
    if w_kind == "record":
        return _record_problems(writer, reader, path)
    return [f"{where}: unsupported type {w_kind}"]


def _record_problems(writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[str]:
    problems = []
    if _record_name(writer) != _record_name(reader):
        problems.append(f"{path or '<root>'}: record {writer['name']} renamed {reader['name']}")
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        names = [field["name"], *field.get("aliases", [])]
        source = next((written[n] for n in names if n in written), None)
        at = f"{path}.{field['name']}" if path else field["name"]
        if source is None:
            if "default" not in field:
                problems.append(f"{at}: added without a default")
            continue
        problems += resolution_problems(source["type"], field["type"], at)
    return problems


def compatibility_problems(name: str) -> list[str]:
    """Every problem between the revisions of ``name`` and with the current schema: the
    current reads every revision (backward), every revision reads the current (forward), and
    the newest revision is the current schema."""
    revisions = history(name)
    current = load_schema(name)
    problems = []
    if not revisions or _canonical(revisions[-1][1]) != _canonical(current):
        problems.append(
            f"{name}: schemas/avro/{name}.avsc differs from its newest revision in "
            f"schemas/avro/history/{name}/: add it as r{len(revisions) + 1}.avsc"
        )
    for n, old in revisions:
        problems += [
            f"{name} r{n} -> current (backward): {p}" for p in resolution_problems(old, current)
        ]
        problems += [
            f"{name} current -> r{n} (forward): {p}" for p in resolution_problems(current, old)
        ]
    if name in TABLE_SCHEMA_NAMES:
        for (n, old), (_, new) in itertools.pairwise(revisions):
            problems += [f"{name} r{n} -> r{n + 1} (table): {p}" for p in table_problems(old, new)]
    return problems


def _canonical(schema: dict[str, Any]) -> str:
    """The schema without its documentation (``doc`` anywhere): doc edits need no revision."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "doc"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return json.dumps(strip(schema), sort_keys=True)


def _shape(field: dict[str, Any]) -> dict[str, Any]:
    """A BigQuery field without its descriptions (a description changes nothing stored)."""
    shaped = {k: v for k, v in field.items() if k != "description"}
    if "fields" in field:
        shaped["fields"] = [_shape(f) for f in field["fields"]]
    return shaped


def table_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What BigQuery could not apply in place when a table of schema ``old`` becomes ``new``."""
    from schemas.contract import bigquery_fields

    before = {f["name"]: _shape(f) for f in bigquery_fields(old)}
    after = {f["name"]: _shape(f) for f in bigquery_fields(new)}
    problems = [f"column {n} removed" for n in before.keys() - after.keys()]
    for name, field in after.items():
        if name not in before:
            if field["mode"] == "REQUIRED":
                problems.append(f"column {name} added as REQUIRED (BigQuery adds NULLABLE only)")
            continue
        was = before[name]
        if (was["type"], was.get("fields")) != (field["type"], field.get("fields")):
            problems.append(f"column {name} changed type")
        if was["mode"] != field["mode"] and (was["mode"], field["mode"]) != (
            "REQUIRED",
            "NULLABLE",
        ):
            problems.append(f"column {name} changed mode {was['mode']} -> {field['mode']}")
    return problems
