"""Pure helpers of the DLP engine: request sizes, packing under DLP's limits, result mapping.

Cloud DLP documents three per-request limits for ``content.deidentify``: 0.5 MB request
size, 50,000 table values and 3,000 findings. The engine sends one table item per request
with one column and one row per text, so a request's values are its texts.

* Bytes are exact: ``request_bytes`` is the protobuf size of the request, computed from the
  UTF-8 length of each text (a test checks it against the serialised message), packed to
  ``max_request_bytes`` (default 500,000: headroom under 0.5 MiB whichever MB DLP means).
* Findings cannot be known before DLP answers, so each text gets a conservative estimate
  (``estimate_findings``): one, plus what the offline pre-screen found in it (PII comes in
  clusters: a text holding k values the offline engine knows may hold as many it does not),
  plus one per ``bytes_per_finding`` bytes (default 200). Typical 1 KB prompts estimate 6-8,
  so bytes, not findings, bound their requests; texts dense with findings get fewer per
  request. If DLP still answers "too many findings", the engine splits the request.

DLP output is mapped back with ``map_texts``: ``replace_with_info_type_config`` writes each
finding as ``[INFO_TYPE]`` (as the documented example ``My email is [EMAIL_ADDRESS]``), the
same placeholders as the offline engine, so per-text counts are the placeholders in the output
that were not already in the input. They must add up to the per-info-type counts of DLP's
transformation overview; when they do not (the template does something else), the texts fail.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "PackLimits",
    "UnmappedOutput",
    "cell_bytes",
    "estimate_findings",
    "map_texts",
    "pack",
    "placeholder_counts",
    "request_bytes",
]

# Info type names as DLP writes them between brackets (built-in names are upper case).
_PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]{0,63})\]")


class PackLimits(NamedTuple):
    """Per-request limits the packer must respect (defaults: DLP's documented limits)."""

    max_request_bytes: int = 500_000
    max_cells: int = 50_000
    max_findings: int = 3_000


def _varint(n: int) -> int:
    """Bytes of a protobuf varint holding ``n``."""
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _field(body: int) -> int:
    """Bytes of a length-delimited field (tag < 16) whose body has ``body`` bytes."""
    return 1 + _varint(body) + body


def cell_bytes(text_bytes: int) -> int:
    """Bytes one table row adds to the request: ``Row{values: [Value{string_value}]}``."""
    return _field(_field(_field(text_bytes)))


def request_bytes(fixed_bytes: int, header_bytes: int, rows_bytes: int) -> int:
    """Protobuf size of a request whose non-item fields take ``fixed_bytes``, whose table
    headers take ``header_bytes`` and whose rows take ``rows_bytes`` (sum of ``cell_bytes``).
    """
    return fixed_bytes + _field(_field(header_bytes + rows_bytes))


def estimate_findings(text_bytes: int, screened_findings: int, bytes_per_finding: int) -> int:
    """Conservative estimate of DLP's findings in one text (see the module docstring)."""
    return 1 + screened_findings + text_bytes // bytes_per_finding


def pack(
    sizes: Sequence[tuple[int, int]],
    limits: PackLimits,
    *,
    fixed_bytes: int,
    header_bytes: int,
) -> tuple[list[list[int]], list[int]]:
    """Packs items into requests, in order, greedily.

    Args:
      sizes: per item, (``cell_bytes`` of its text, estimated findings).
      limits: the per-request limits; every returned request respects all three.
      fixed_bytes, header_bytes: see ``request_bytes``.

    Returns:
      (requests as lists of item indices, indices of items that exceed a limit on their own).
    """
    requests: list[list[int]] = []
    oversize: list[int] = []
    current: list[int] = []
    rows = findings = 0
    for index, (cell, estimate) in enumerate(sizes):
        if (
            request_bytes(fixed_bytes, header_bytes, cell) > limits.max_request_bytes
            or estimate > limits.max_findings
        ):
            oversize.append(index)
            continue
        if current and (
            request_bytes(fixed_bytes, header_bytes, rows + cell) > limits.max_request_bytes
            or len(current) + 1 > limits.max_cells
            or findings + estimate > limits.max_findings
        ):
            requests.append(current)
            current, rows, findings = [], 0, 0
        current.append(index)
        rows += cell
        findings += estimate
    if current:
        requests.append(current)
    return requests, oversize


def placeholder_counts(text: str) -> Counter[str]:
    """``[INFO_TYPE]`` placeholders in ``text``, per info type."""
    return Counter(_PLACEHOLDER.findall(text))


class UnmappedOutput(ValueError):
    """DLP's answer cannot be mapped back to the texts sent (no text in the message)."""


def map_texts(
    sent: Sequence[str], returned: Sequence[str], overview: Counter[str]
) -> list[tuple[str, dict[str, int]]]:
    """Per text sent: (DLP's text, findings per info type), from the placeholders DLP added.

    Args:
      sent: the texts of the request, in row order.
      returned: the texts of the response's rows, in row order.
      overview: findings per info type from the response's transformation overview.

    Raises:
      UnmappedOutput: a different number of rows came back, or the placeholders do not add
        up to the overview's counts.
    """
    if len(returned) != len(sent):
        raise UnmappedOutput(f"{len(sent)} rows sent, {len(returned)} returned")
    results = []
    total: Counter[str] = Counter()
    for before, after in zip(sent, returned, strict=True):
        added = placeholder_counts(after) - placeholder_counts(before)
        total.update(added)
        results.append((after, dict(added)))
    if total != +overview:
        raise UnmappedOutput(
            "placeholders in the output do not match the transformation overview "
            f"({sorted(total.items())} vs {sorted((+overview).items())}); the de-identify "
            "template must use replace_with_info_type_config"
        )
    return results
