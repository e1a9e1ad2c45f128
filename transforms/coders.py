"""Beam coders for the typed elements: msgpack through msgspec, typed on decode.

Without a registered coder Beam pickles NamedTuples wherever a PCollection is materialized
(every GroupByKey and fusion break), ~14 µs per redacted event; msgspec round-trips one in
~1 µs and decodes straight back to the NamedTuple, validating field types on the way.
Importing ``transforms.elements`` registers these for every element type, so any step that
declares its output type (``with_output_types``) gets the fast coder.

The encoding is an internal wire format between steps, never stored: the archive is Avro.
Not deterministic (dicts keep insertion order), so these types are never used as keys.
"""

from __future__ import annotations

from typing import Any

import msgspec
from apache_beam import coders

__all__ = ["MsgpackCoder", "register_msgpack_coders"]


class MsgpackCoder(coders.Coder):
    """Encodes instances of one NamedTuple type with msgspec's msgpack codec."""

    element_type: Any = None  # set by the per-type subclasses register_msgpack_coders makes
    # An estimate of the encoded size, for types whose elements are large (batches): Beam
    # samples elements to estimate their size for its metrics, and encoding a batch of
    # megabytes to learn its size costs more than the work on it. None: encode and measure.
    size_of: Any = None

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(self.element_type)

    def encode(self, value: Any) -> bytes:
        return self._encoder.encode(value)

    def decode(self, encoded: bytes) -> Any:
        return self._decoder.decode(encoded)

    def estimate_size(self, value: Any) -> int:
        if self.size_of is not None:
            return self.size_of(value)
        return len(self._encoder.encode(value))

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> Any:
        return self.element_type

    def __reduce__(self):
        # Encoders are not picklable; a coder is rebuilt from its type on the workers.
        return _coder_for, (self.element_type,)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


_CODERS: dict[Any, type[MsgpackCoder]] = {}


def _coder_for(element_type: Any) -> MsgpackCoder:
    return _CODERS[element_type]()


def register_msgpack_coders(*element_types: Any, sizes: dict | None = None) -> None:
    """Registers a ``MsgpackCoder`` subclass for each NamedTuple type (idempotent).
    ``sizes``: type -> a function estimating an element's encoded size (see ``size_of``)."""
    for element_type in element_types:
        if element_type in _CODERS:
            continue
        size_of = (sizes or {}).get(element_type)
        attributes = {
            "element_type": element_type,
            "size_of": None if size_of is None else staticmethod(size_of),
        }
        coder_class = type(f"{element_type.__name__}Coder", (MsgpackCoder,), attributes)
        _CODERS[element_type] = coder_class
        coders.registry.register_coder(element_type, coder_class)
