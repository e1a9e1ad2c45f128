"""Reads ``terraform/*.tf`` with python-hcl2 into plain dicts that tests can assert on.

python-hcl2 (v8) gives every file as ``{"resource": [{TYPE: {NAME: body}}], "variable": [...],
"locals": [...], ...}``; blocks are lists of dicts and expressions stay strings such as
``"${var.raw_retention_days}"``. ``Terraform`` indexes them by address, and ``default_of`` looks
up what a ``${var.NAME}`` reference is when the variable keeps its default.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "terraform"
_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
_VAR_REF = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")


class Terraform(NamedTuple):
    resources: dict[tuple[str, str], dict[str, Any]]
    data: dict[tuple[str, str], dict[str, Any]]
    variables: dict[str, dict[str, Any]]
    locals: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    terraform: list[dict[str, Any]]
    files: dict[str, dict[str, Any]]

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources[(kind, name)]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}

    def default_of(self, reference: str) -> Any:
        """The default of the variable in ``"${var.NAME}"``."""
        match = _VAR_REF.fullmatch(reference)
        assert match, f"not a plain variable reference: {reference!r}"
        return self.variables[match.group(1)]["default"]


def parse_file(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=_OPTIONS)


@cache
def load(directory: Path = TERRAFORM_DIR) -> Terraform:
    tf = Terraform({}, {}, {}, {}, {}, [], {})
    for path in sorted(directory.glob("*.tf")):
        parsed = parse_file(path)
        tf.files[path.name] = parsed
        for kind, address in (("resource", tf.resources), ("data", tf.data)):
            for block in parsed.get(kind, []):
                for type_name, by_name in block.items():
                    for name, body in by_name.items():
                        address[(type_name, name)] = body
        for block in parsed.get("variable", []):
            tf.variables.update(block)
        for block in parsed.get("locals", []):
            tf.locals.update({k: v for k, v in block.items() if k != "__comments__"})
        for block in parsed.get("output", []):
            tf.outputs.update(block)
        tf.terraform.extend(parsed.get("terraform", []))
    return tf


def blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The nested blocks ``name`` of a body (python-hcl2 gives each block type as a list)."""
    return body.get(name, [])


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block ``name`` of a body."""
    found = blocks(body, name)
    assert len(found) == 1, f"expected one {name} block, found {len(found)}"
    return found[0]


def dynamic_block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``dynamic "name"`` block of a body (``for_each``, ``content``)."""
    for entry in body.get("dynamic", []):
        if name in entry:
            return entry[name]
    raise AssertionError(f"no dynamic {name!r} block")


def dynamic_for_each(body: dict[str, Any], name: str) -> str:
    """The ``for_each`` expression of the ``dynamic "name"`` block of a body."""
    return dynamic_block(body, name)["for_each"]
