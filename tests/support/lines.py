"""The reference reading of a JSON-lines file for the tests of ``ReadLineChunks``."""

from __future__ import annotations

__all__ = ["lines_with_offsets"]


def lines_with_offsets(data: bytes) -> list[tuple[int, bytes]]:
    """The reference: (offset, line) of every non-blank line, by a plain scan."""
    out, position = [], 0
    for line in data.split(b"\n"):
        if line.strip():
            out.append((position, line))
        position += len(line) + 1
    return out
