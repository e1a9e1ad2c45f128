"""A per-key combine whose partial results go through local files: ``CombinePerKeyOnDisk``.

For the local batch runner only (the FnApiRunner, which ``pipelines.launch`` picks for every
run that is not on Dataflow). That runner's shuffle is its main process's memory: every element
a ``GroupByKey`` or a ``CombinePerKey`` moves is held there, decoded, and then sent to one worker
in one piece, copied on the way (the data channel's queue, gRPC's serialization). A combine
over one key per event id therefore holds every id of the input several times over in the
runner's main process, and a worker then holds its half of them at once: measured with
``memray run --native`` on a 1,000,000-event backfill, the first pass's shuffle was 105 MB
per worker's part, and the main process peaked at about 715 MB, nearly all of it copies of that
shuffle.

Here each worker folds its inputs into one accumulator per key (the ``CombineFn``'s own
``add_input``), writes the accumulators to a file in ``directory`` every ``flush_every``
inputs and at the end of each bundle, and passes on only ``(key, (file, offset, length))``.
The shuffle moves those references; the merge step reads each key's accumulators back,
merges them (``merge_accumulators``) and outputs ``(key, extract_output(...))``, as
``CombinePerKey`` does. Memory per process: one flush's accumulators, or one key's merged
accumulator, whatever the input's size. The directory is removed once every key is merged.

Dataflow's shuffle is its own service, on disk: there ``beam.CombinePerKey`` is the right
tool, and nothing here runs. The files are pickles written and read by the same run's
processes on one machine, in a directory of their own (mode 0700).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["CombinePerKeyOnDisk"]

DEFAULT_FLUSH_EVERY = 256
_GLOBAL = (window.GlobalWindow(),)

# Where one key's accumulator is: (file path, byte offset, byte length).
_Ref = tuple[str, int, int]


def _write_accumulators(directory: str, accumulators: dict[Any, Any]) -> list[tuple[Any, _Ref]]:
    """Writes ``accumulators`` (key -> accumulator) to one new file under ``directory``;
    returns each key's reference. The file is complete before any reference is returned."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{uuid.uuid4().hex}.pickle")
    refs = []
    with open(path, "wb") as out:
        offset = 0
        for key, accumulator in accumulators.items():
            data = pickle.dumps(accumulator, protocol=pickle.HIGHEST_PROTOCOL)
            out.write(data)
            refs.append((key, (path, offset, len(data))))
            offset += len(data)
    return refs


def _read_accumulators(refs: Iterable[_Ref]) -> Iterable[Any]:
    """The accumulators at ``refs``, one file open at a time."""
    by_file: dict[str, list[tuple[int, int]]] = {}
    for path, offset, length in refs:
        by_file.setdefault(path, []).append((offset, length))
    for path, ranges in sorted(by_file.items()):
        with open(path, "rb") as source:
            for offset, length in sorted(ranges):
                source.seek(offset)
                data = source.read(length)
                if len(data) != length:
                    raise OSError(f"spilled accumulator cut short in {path}")
                yield pickle.loads(data)  # this run's own files, in a directory of mode 0700


class _SpillFn(beam.DoFn):
    """Folds ``(key, value)`` inputs into one accumulator per key; writes them out every
    ``flush_every`` inputs and at the end of the bundle; emits ``(key, ref)`` per key written."""

    def __init__(self, combine_fn: beam.CombineFn, directory: str, flush_every: int):
        self._fn = combine_fn
        self._directory = directory
        self._flush_every = flush_every

    def setup(self):
        self._fn.setup()

    def start_bundle(self):
        self._accumulators: dict[Any, Any] = {}
        self._inputs = 0

    def process(self, element: tuple[Any, Any]):
        key, value = element
        accumulator = self._accumulators.get(key)
        if accumulator is None:
            accumulator = self._fn.create_accumulator()
        self._accumulators[key] = self._fn.add_input(accumulator, value)
        self._inputs += 1
        if self._inputs >= self._flush_every:
            yield from self._flush()

    def finish_bundle(self):
        for key_and_ref in self._flush():
            yield WindowedValue(key_and_ref, Timestamp(0), _GLOBAL)

    def teardown(self):
        self._fn.teardown()

    def _flush(self) -> list[tuple[Any, _Ref]]:
        accumulators, self._accumulators, self._inputs = self._accumulators, {}, 0
        if not accumulators:
            return []
        return _write_accumulators(self._directory, accumulators)


class _MergeFn(beam.DoFn):
    """``(key, refs)`` -> ``(key, output)``: reads the key's accumulators back one at a time and
    merges them."""

    def __init__(self, combine_fn: beam.CombineFn):
        self._fn = combine_fn

    def setup(self):
        self._fn.setup()

    def process(self, element: tuple[Any, Iterable[_Ref]]):
        key, refs = element
        merged = self._fn.create_accumulator()
        for accumulator in _read_accumulators(refs):
            merged = self._fn.merge_accumulators([merged, accumulator])
        yield key, self._fn.extract_output(self._fn.compact(merged))

    def teardown(self):
        self._fn.teardown()


def _remove_directory(_, directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class CombinePerKeyOnDisk(beam.PTransform):
    """``beam.CombinePerKey(combine_fn)`` for bounded input in the global window, with the
    partial results in local files (see the module docstring).

    Input: a PCollection of ``(key, value)``, or a tuple of them (each is folded by its own
    workers before anything is flattened, so no input's elements are flattened: the local
    runner holds a flattened PCollection in its main process). Output: PCollection of
    ``(key, combine_fn's output)``, one per key, in the global window.

    Args:
      combine_fn: a ``beam.CombineFn``; its accumulators must pickle.
      directory: where the files go (created on first use, removed at the end); default a new
        directory under the system's temporary directory. Every worker must see it: the
        local runner's workers run on this machine.
      flush_every: inputs a worker folds in memory before writing them out.
    """

    def __init__(
        self,
        combine_fn: beam.CombineFn,
        directory: str | None = None,
        flush_every: int = DEFAULT_FLUSH_EVERY,
    ):
        super().__init__()
        if flush_every < 1:
            raise ValueError("flush_every must be >= 1")
        self._fn = combine_fn
        self._directory = directory or os.path.join(
            tempfile.gettempdir(), f"genai-combine-{uuid.uuid4().hex}"
        )
        self._flush_every = flush_every

    def expand(self, pcolls):
        branches = pcolls if isinstance(pcolls, tuple | list) else (pcolls,)
        if not all(p.is_bounded for p in branches):
            raise ValueError("CombinePerKeyOnDisk works on bounded input only")
        spilled = tuple(
            branch
            | f"Spill{i}"
            >> beam.ParDo(_SpillFn(self._fn, self._directory, self._flush_every)).with_output_types(
                tuple[Any, _Ref]
            )
            for i, branch in enumerate(branches)
        )
        refs = spilled[0] if len(spilled) == 1 else spilled | "FlattenRefs" >> beam.Flatten()
        combined = (
            refs
            | "GroupRefs" >> beam.GroupByKey()
            | "Merge" >> beam.ParDo(_MergeFn(self._fn)).with_output_types(tuple[Any, Any])
        )
        _ = (
            combined
            | "CountKeys" >> beam.combiners.Count.Globally()
            | "RemoveFiles" >> beam.Map(_remove_directory, self._directory)
        )
        return combined
