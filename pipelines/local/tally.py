"""Run totals computed by the pipeline itself, for the end-of-run summary of local runs.

Local runs only (``pipelines.local.run`` applies it; no Dataflow graph has it). Beam counters
are the production signal (Dataflow shows them live, per outcome and reason), but the
DirectRunner's streaming mode keeps only the last bundle's counter values, so the local summary
cannot rely on them. ``TallyOutcomes`` counts the same things as data: inputs read, the core's
outcomes (written, duplicates, dead letters by reason), redactions per info type, and writes the
totals as JSON to ``{output_root}/runs/{run_id}.json``. It also adds up what the metrics count
(the largest pane of each window and key), so the summary can tell how many written events were
too late for the metrics, and, when the sinks report it, the events each metrics commit made
visible per freshness bucket (``freshness_s.<latency_s>``: the freshness of ADR 0010). In batch
it writes once. In streaming the totals so far live in the state of one key, as each bundle's
partial sums folded into one whenever the file is rewritten: at most every ``every_s`` seconds
of wall time and once more when the stream ends. They grow with the run by one entry per metric
window and key only (and per freshness bucket).
"""

from __future__ import annotations

import json
import threading
import time
import typing
from collections import Counter

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.utils.windowed_value import WindowedValue

from transforms.audit import WRITTEN
from transforms.elements import LineChunk
from transforms.windowing import in_global_window

__all__ = ["FRESHNESS_PREFIX", "TallyOutcomes", "read_tally", "tally_inputs", "tally_path"]


def tally_path(output_root: str, run_id: str) -> str:
    return FileSystems.join(output_root, "runs", f"{run_id}.json")


def read_tally(output_root: str, run_id: str) -> dict[str, int]:
    """The totals of run ``run_id`` (empty when the run wrote none)."""
    path = tally_path(output_root, run_id)
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


class _SumCountsFn(beam.CombineFn):
    """Sums (name, n) items; for (("pane", key), n) items keeps the largest n per key, since
    metric panes accumulate: the largest pane of a window and key is its total."""

    def create_accumulator(self) -> tuple[Counter, dict]:
        return Counter(), {}

    def add_input(self, accumulator, item):
        totals, panes = accumulator
        name, n = item
        if isinstance(name, tuple):
            panes[name[1]] = max(panes.get(name[1], 0), n)
        else:
            totals[name] += n
        return accumulator

    def merge_accumulators(self, accumulators):
        # Into the first accumulator (Beam allows it): the running totals of a stream merge
        # each bundle's small partial into the totals so far, so a copy would cost time in
        # proportion to the run's length, once per bundle.
        accumulators = iter(accumulators)
        totals, panes = next(accumulators, None) or self.create_accumulator()
        for more_totals, more_panes in accumulators:
            totals.update(more_totals)
            for key, n in more_panes.items():
                if n > panes.get(key, 0):
                    panes[key] = n
        return totals, panes

    def extract_output(self, accumulator) -> dict[str, int]:
        totals, panes = accumulator
        out = dict(totals)
        out["metrics.requests_counted"] = sum(panes.values())
        out["metrics.windows"] = len(panes)
        return dict(sorted(out.items()))


class _TallyBundleFn(beam.DoFn):
    """Pre-sums a bundle into one partial accumulator, so the combine downstream sees one
    element per bundle instead of several per event. ``keyed``: emit it as ``("", partial)``,
    for the one-key running totals of a stream."""

    def __init__(self, keys, keyed: bool):
        self._keys = keys
        self._keyed = keyed
        self._sum = _SumCountsFn()

    def start_bundle(self):
        self._partial = self._sum.create_accumulator()
        self._first = None

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        for item in self._keys(element):
            self._sum.add_input(self._partial, item)
        if self._first is None or timestamp < self._first:
            self._first = timestamp

    def finish_bundle(self):
        if self._first is not None:
            value = ("", self._partial) if self._keyed else self._partial
            yield WindowedValue(value, self._first, (window.GlobalWindow(),))


class _MergePartialsFn(_SumCountsFn):
    """Combines the per-bundle partial accumulators."""

    def add_input(self, accumulator, partial):
        return self.merge_accumulators([accumulator, partial])


FRESHNESS_PREFIX = "freshness_s."


def _pane_keys(row) -> list[tuple[tuple | str, int]]:
    return [(("pane", (row.window_start, row.model, row.region)), row.request_count)]


def _freshness_keys(item: tuple[int, int]) -> list[tuple[str, int]]:
    # (latency_s, events): events a metrics commit made visible, by freshness bucket.
    latency_s, events = item
    return [(f"{FRESHNESS_PREFIX}{latency_s}", events)]


def _read_keys(element) -> list[tuple[str, int]]:
    # A raw input element is one event (bytes) or a chunk of lines, one event each.
    return [("read", len(element.lines) if isinstance(element, LineChunk) else 1)]


def _written_keys(batch) -> list[tuple[str, int]]:
    keys = [("outcome.written", len(batch.events))]
    for event in batch.events:
        keys.extend((f"redactions.{k}", v) for k, v in event.redaction_counts.items())
    return keys


def _duplicate_keys(_) -> list[tuple[str, int]]:
    return [("outcome.duplicate", 1)]


def _conflict_keys(_) -> list[tuple[str, int]]:
    return [("outcome.duplicate_conflict", 1)]


def _dead_letter_keys(record) -> list[tuple[str, int]]:
    return [("outcome.dead_lettered", 1), (f"dead_letter.{record.reason}", 1)]


def _write_totals(totals: dict[str, int], path: str) -> dict[str, int]:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(totals, indent=1).encode("utf-8"))
    return totals


def tally_inputs(outputs) -> dict:
    """The inputs ``TallyOutcomes`` takes from a pipeline's ``PipelineOutputs``: what it read,
    the core's outcomes and metrics, and the sinks' dead letters when the sinks report any."""
    inputs = {
        "read": outputs.read,
        "events": outputs.core.events,
        "duplicates": outputs.core.duplicates,
        "conflicts": outputs.core.conflicts,
        "dead_letters": outputs.core.dead_letters,
        "metrics": outputs.core.metrics,
    }
    if outputs.sinks.sink_dead_letters is not None:
        inputs["sink_dead_letters"] = outputs.sinks.sink_dead_letters
    if outputs.sinks.freshness is not None:
        inputs["freshness"] = outputs.sinks.freshness
    return inputs


def _sink_dead_letter_keys(record) -> list[tuple[str, int]]:
    return [(f"sink_dead_letter.{record.reason}", 1)]


def _audit_keys(record) -> list[tuple[str, int]]:
    keys = [(f"outcome.{record.outcome}", 1)]
    if record.reason:
        keys.append((f"dead_letter.{record.reason}", 1))
    if record.outcome == WRITTEN:  # a written event's record carries its redaction counts
        keys.extend((f"redactions.{k}", v) for k, v in record.redaction_counts.items())
    return keys


def _given_keys(item: tuple[str, int]) -> list[tuple[str, int]]:
    return [item]


# When each streaming tally last wrote its file (by output path), in this worker process: the
# DirectRunner makes a new DoFn instance for every bundle, so this cannot live on the instance.
_LAST_WRITE: dict[str, float] = {}
_LAST_WRITE_LOCK = threading.Lock()


class _RunningTotalsFn(beam.DoFn):
    """Streaming: keeps each bundle's partial in a bag in state (one key) and, when ``every_s``
    of wall time has passed since the last write and at the end of the stream (a watermark
    timer at the end of the global window), folds the bag into one accumulator and writes (and
    emits) the totals. Appending costs the partial's size only: a single state value read and
    rewritten for every partial would be coded whole each time, a cost that grows with the
    run (the pane entries). It writes the file itself: a step after it would
    run, if only on empty bundles, after every one."""

    PARTIALS = BagStateSpec("partials", PickleCoder())
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, path: str, every_s: float):
        self._path = path
        self._every_s = every_s
        self._sum = _SumCountsFn()

    def process(
        self,
        element,
        partials=beam.DoFn.StateParam(PARTIALS),
        end=beam.DoFn.TimerParam(END),
    ):
        _, partial = element
        partials.add(partial)
        end.set(window.GlobalWindow().max_timestamp())
        now = time.monotonic()
        with _LAST_WRITE_LOCK:
            due = now - _LAST_WRITE.get(self._path, 0.0) >= self._every_s
            if due:
                _LAST_WRITE[self._path] = now
        if due:
            yield self._fold_and_write(partials)

    @on_timer(END)
    def final(self, partials=beam.DoFn.StateParam(PARTIALS)):
        yield self._fold_and_write(partials)

    def _fold_and_write(self, partials) -> dict[str, int]:
        merged = self._sum.merge_accumulators(list(partials.read()))
        partials.clear()
        partials.add(merged)
        return _write_totals(self._sum.extract_output(merged), self._path)


def _count_partials(keys, keyed: bool) -> beam.ParDo:
    count = beam.ParDo(_TallyBundleFn(keys, keyed=keyed))
    # Keyed partials feed a stateful DoFn, whose key must have a deterministic coder: typed,
    # the key ("") is coded as a string, not by FastPrimitivesCoder (which Beam warns about).
    return count.with_output_types(tuple[str, typing.Any]) if keyed else count


class TallyOutcomes(beam.PTransform):
    """Counts a run. Input: a dict with ``read`` (the raw input elements: events, or chunks
    of lines), the outcomes either as the core's ``events`` (``EventBatch``), ``duplicates``,
    ``conflicts`` and ``dead_letters`` or as ``audit`` (``AuditRecord``, one per outcome),
    optionally ``metrics`` (``MetricRow``), ``counts`` (``(name, n)`` pairs, summed as they
    are: what a command counts beyond these), ``sink_dead_letters`` (``DeadLetter`` of rows
    a sink could not write) and ``freshness`` (``(latency_s, events)`` pairs of the metrics
    commits). Output: the totals dicts written (one per firing)."""

    def __init__(self, output_root: str, run_id: str, every_s: int = 10):
        super().__init__()
        self._path = tally_path(output_root, run_id)
        self._every_s = every_s

    def expand(self, inputs):
        # Each input is re-windowed into the global window before the Flatten: Flatten needs
        # compatible windowing, and the metric rows come out of fixed event-time windows.
        # Each branch is pre-summed per bundle (see _TallyBundleFn).
        branches = {
            "Read": (inputs["read"], _read_keys),
            "Written": (inputs.get("events"), _written_keys),
            "Duplicates": (inputs.get("duplicates"), _duplicate_keys),
            "Conflicts": (inputs.get("conflicts"), _conflict_keys),
            "DeadLetters": (inputs.get("dead_letters"), _dead_letter_keys),
            "Outcomes": (inputs.get("audit"), _audit_keys),
            "MetricPanes": (inputs.get("metrics"), _pane_keys),
            "Counts": (inputs.get("counts"), _given_keys),
        }
        if "sink_dead_letters" in inputs:
            branches["SinkDeadLetters"] = (inputs["sink_dead_letters"], _sink_dead_letter_keys)
        if "freshness" in inputs:
            branches["Freshness"] = (inputs["freshness"], _freshness_keys)
        branches = {name: branch for name, branch in branches.items() if branch[0] is not None}
        bounded = inputs["read"].is_bounded
        partials = [
            in_global_window(pcoll, f"Rewindow{name}")
            | f"Count{name}" >> _count_partials(keys, keyed=not bounded)
            for name, (pcoll, keys) in branches.items()
        ] | "FlattenCounts" >> beam.Flatten()
        if bounded:
            return (
                partials
                | "Sum" >> beam.CombineGlobally(_MergePartialsFn()).without_defaults()
                | "WriteTally" >> beam.Map(_write_totals, self._path)
            )
        return partials | "RunningTotals" >> beam.ParDo(_RunningTotalsFn(self._path, self._every_s))
