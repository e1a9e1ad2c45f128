"""Fixes for the streaming DirectRunner of Beam 2.77 (``BundleBasedDirectRunner``): local only.

They change no result, only what a long local streaming run costs; the streaming figures of
``docs/performance.md`` are measured with them. ``installed()`` puts them in place for the
duration of one local run and takes them out after it (``pipelines.local.run`` wraps every
local run in it); ``install()``/``uninstall()`` are the two halves. They read and replace
private names of Beam's direct runner, so they refuse to install (a warning, and the run goes
on without them) on any Beam version but ``TESTED_BEAM_VERSION``, and a test pins the source of
every Beam function they fork or wrap, so an upgrade fails loudly there first. Nothing on the
Dataflow path imports this module. One ADR per fix says what Beam does, why it hurts here and
the upstream fix: ``docs/adr/``.

**DoFn state/timer specs, cached per DoFn class** (``GENAI_NO_SPEC_CACHE=1`` leaves Beam as it
is). The runner calls ``apache_beam.transforms.userstate.get_dofn_specs`` about three times for
every bundle of every ``ParDo`` (to schedule it, to build its evaluator and to build its
``DoFnRunner``), and each call builds a ``MethodWrapper`` — an ``inspect.signature`` — for every
method of the DoFn, some forty of them. Profiled on a 1,000 events/s synthetic stream that was
~29% of the run's CPU, and a 60-second run used a third less CPU with the cache (README
"Performance"). Dataflow and the other portable runners inspect a DoFn once, when they build its
bundle processor. Exact: ``get_dofn_specs`` reads the state and timer parameters declared in the
defaults of the DoFn's bound methods. Those come from its class, except for bound methods stored
on the instance (``vars(dofn)``); a DoFn with none of those gets its class's cached result, any
other is inspected as before. (A ``beam.Map`` of a plain function stores the function itself,
which is not a bound method and which ``get_dofn_specs`` skips as well.) Each call returns fresh
sets.

**Expired window state collected, empty keyed state dropped** (``GENAI_NO_STATE_PRUNING=1``
keeps both). The runner's trigger driver never garbage-collects a window (``GeneralTriggerDriver``
in ``apache_beam.transforms.trigger``: "TODO(robertwb): allowed lateness"): with a trigger that
never finishes, as the metrics' late firings, a window's buffered values stay in memory for the
rest of the run, after the window can take no more data. It also keeps an entry per key and
step for every key it has ever seen, and visits them all on every timer scan (after each
bundle). Streaming metrics are keyed by window, so memory and the scan grew with the length of
a run. After a bundle of a streaming group-by-window commits (at most every
``_COLLECT_EVERY_S`` per step), this drops each window that the watermark has passed by more
than the allowed lateness and that has no timer left, the rule by which the driver itself
already ignores new data for it (Beam's model: a window's state is garbage-collected then);
the end-of-window timer is delivered (and cleared) before, so no pane is lost. After any
bundle commits, a key entry with no state, no timers and no global state is removed: a missing
entry is what the runner creates afresh when the key comes again (an empty
``DirectUnmergedState``), so nothing reads differently. Both hold the runner's lock and the
step's watermark lock, which its timer scan holds while it iterates the entries; a state is
replaced, never changed in place, as bundles in flight hold copies.

**Watermark holds compacted, timer scans visit only keys with a timer due** (also off with
``GENAI_NO_STATE_PRUNING=1``). A group-by-window step keeps each window's watermark holds as a
list that gets one entry per bundle of the key, and in the global window with an
``AfterWatermark`` trigger, as the sinks' flush triggers, nothing ever clears it: the runner
takes the ``min`` of the whole list for every bundle of the key (7% of a streaming run's GIL
time at 41 minutes, and growing). After a commit, each such list becomes its smallest and
largest entries: every timestamp combiner is a ``min`` or a ``max``, and the runner's own
earliest-hold query is a ``min``, so both read the same. The timer scan visits every key of
every step after each bundle (58% of the GIL within five minutes once usage was keyed per
user); the replacement ``extract_transform_timers`` is Beam's (2.77), except that it asks only
the keys whose earliest timer is due, from an index per step (``_TimerIndex``) that each commit
updates: the same timers, found without visiting the other keys.

**Trigger state tags** (``GENAI_NO_TAG_CACHE=1`` leaves Beam as it is). The trigger driver
calls ``_CombiningValueStateTag.without_extraction`` for every element of every key (through
``AfterWatermark.is_late``), and it defines a new class on every call (~11% of the GIL at
2,500 events/s). The replacement builds that combine function once per original one.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import time
import types
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.transforms.timeutil import TimeDomain

__all__ = [
    "TESTED_BEAM_VERSION",
    "cached_without_extraction",
    "compact_holds",
    "install",
    "install_spec_cache",
    "install_state_pruning",
    "install_tag_cache",
    "installed",
    "is_empty_state",
    "uninstall",
    "uninstall_spec_cache",
    "uninstall_state_pruning",
    "uninstall_tag_cache",
]

_LOGGER = logging.getLogger(__name__)
TESTED_BEAM_VERSION = "2.77.0"
_CACHE: dict[type, tuple[frozenset, frozenset]] = {}
_LOCK = threading.Lock()


class _Beam:
    """Beam's direct-runner modules and the originals the fixes replace, read on first use, only
    on the tested version (another version may not have them)."""

    def __init__(self) -> None:
        from apache_beam.runners.direct import (
            direct_runner,
            evaluation_context,
            transform_evaluator,
            watermark_manager,
        )
        from apache_beam.runners.direct.util import TimerFiring
        from apache_beam.transforms import trigger, userstate

        self.direct_runner = direct_runner
        self.evaluation_context = evaluation_context
        self.transform_evaluator = transform_evaluator
        self.watermark_manager = watermark_manager
        self.userstate = userstate
        self.trigger = trigger
        self.without_extraction = trigger._CombiningValueStateTag.without_extraction
        self.TimerFiring = TimerFiring
        self.get_dofn_specs = userstate.get_dofn_specs
        self.handle_result = evaluation_context.EvaluationContext.handle_result
        self.extract_transform_timers = (
            watermark_manager._TransformWatermarks.extract_transform_timers
        )


_BEAM: _Beam | None = None
_REFUSED: set[str] = set()  # untested Beam versions already warned about


def _beam() -> _Beam | None:
    """The direct-runner internals, or None (with a warning, once) on an untested Beam."""
    global _BEAM
    if _BEAM is None:
        if beam.__version__ != TESTED_BEAM_VERSION:
            if beam.__version__ in _REFUSED:
                return None
            _REFUSED.add(beam.__version__)
            _LOGGER.warning(
                "DirectRunner fixes not installed: written for Beam %s, this is Beam %s "
                "(local streaming runs work, slower over long runs; see docs/adr)",
                TESTED_BEAM_VERSION,
                beam.__version__,
            )
            return None
        _BEAM = _Beam()
    return _BEAM


def _has_bound_methods(dofn) -> bool:
    return any(isinstance(value, types.MethodType) for value in vars(dofn).values())


def cached_dofn_specs(dofn) -> tuple[set, set]:
    """``get_dofn_specs(dofn)``, from the class's cached result where that is exact."""
    original = _BEAM.get_dofn_specs
    if _has_bound_methods(dofn):
        return original(dofn)
    cls = type(dofn)
    specs = _CACHE.get(cls)
    if specs is None:
        state_specs, timer_specs = original(dofn)
        specs = (frozenset(state_specs), frozenset(timer_specs))
        with _LOCK:
            _CACHE[cls] = specs
    return set(specs[0]), set(specs[1])


def install_spec_cache() -> bool:
    """Installs the cache (idempotent); returns whether it is installed."""
    b = _beam()
    if b is None or os.environ.get("GENAI_NO_SPEC_CACHE") == "1":
        return False
    if b.userstate.get_dofn_specs is not cached_dofn_specs:
        b.userstate.get_dofn_specs = cached_dofn_specs
        b.transform_evaluator.get_dofn_specs = cached_dofn_specs
    return True


def uninstall_spec_cache() -> None:
    """Puts Beam's own function back."""
    if _BEAM is None:
        return
    _BEAM.userstate.get_dofn_specs = _BEAM.get_dofn_specs
    _BEAM.transform_evaluator.get_dofn_specs = _BEAM.get_dofn_specs
    _CACHE.clear()


_NO_EXTRACTION: dict[int, tuple] = {}  # id(combine_fn) -> (combine_fn, its no-extraction twin)


def cached_without_extraction(self):
    """``_CombiningValueStateTag.without_extraction``, with the combine function Beam builds
    (a new class, every call) made once per original combine function."""
    combine_fn = self.combine_fn
    cached = _NO_EXTRACTION.get(id(combine_fn))
    if cached is None or cached[0] is not combine_fn:
        cached = (combine_fn, _BEAM.without_extraction(self).combine_fn)
        with _LOCK:
            _NO_EXTRACTION[id(combine_fn)] = cached
    return _BEAM.trigger._CombiningValueStateTag(self.tag, cached[1])


def install_tag_cache() -> bool:
    """Installs the no-extraction cache (idempotent); returns whether it is installed."""
    b = _beam()
    if b is None or os.environ.get("GENAI_NO_TAG_CACHE") == "1":
        return False
    b.trigger._CombiningValueStateTag.without_extraction = cached_without_extraction
    return True


def uninstall_tag_cache() -> None:
    """Puts Beam's own method back."""
    if _BEAM is None:
        return
    _BEAM.trigger._CombiningValueStateTag.without_extraction = _BEAM.without_extraction
    _NO_EXTRACTION.clear()


_WINDOW_IDS = "window_ids"  # MergeableStateAdapter's global state: window -> raw state ids
_COLLECT_EVERY_S = 5.0
_LAST_COLLECT: dict[int, float] = {}  # id(applied transform) -> monotonic time of last sweep


def is_empty_state(state) -> bool:
    """Whether a key's ``InMemoryUnmergedState`` holds nothing: no global state (an empty
    window-id map counts as none), no timers, and no window state but empty lists (what reading
    an unset tag leaves behind)."""
    return (
        all(name == _WINDOW_IDS and value == {} for name, value in state.global_state.items())
        and not any(state.timers.values())
        and all(
            type(values) is list and not values
            for tags in state.state.values()
            for values in tags.values()
        )
    )


def without_expired_windows(state, input_watermark, allowed_lateness):
    """``state`` without the windows whose end plus ``allowed_lateness`` the input watermark
    has passed and that have no timer left, or ``state`` itself when there are none; a copy,
    the original is not changed."""
    window_ids = state.global_state.get(_WINDOW_IDS)
    if not window_ids:
        return state
    expired = [
        window
        for window, ids in window_ids.items()
        if input_watermark > window.end + allowed_lateness
        and not any(state.timers.get(i) for i in ids)
    ]
    if not expired:
        return state
    collected = state.copy()
    kept = collected.global_state[_WINDOW_IDS]
    for window in expired:
        for raw_id in kept.pop(window):
            collected.state.pop(raw_id, None)
            collected.timers.pop(raw_id, None)
    return collected


def _collect_due(applied) -> bool:
    now = time.monotonic()
    if now - _LAST_COLLECT.get(id(applied), 0.0) < _COLLECT_EVERY_S:
        return False
    _LAST_COLLECT[id(applied)] = now
    return True


def _collect_step(context, applied) -> None:
    """Drops the expired windows of one streaming group-by-window step, then its empty keys."""
    states = context._transform_keyed_states[applied]
    watermarks = context._watermark_manager.get_watermarks(applied)
    # Read before taking the step's lock, which the property takes itself; an older watermark
    # only collects less.
    input_watermark = watermarks.input_watermark
    lateness = applied.transform.windowing.allowed_lateness
    with context._lock, watermarks._lock:
        for key, state in list(states.items()):
            if key is None:
                continue
            collected = without_expired_windows(state, input_watermark, lateness)
            if is_empty_state(collected):
                del states[key]
            elif collected is not state:
                states[key] = collected
                _timer_index(watermarks).add(key, collected)


_HOLDS = "watermark"  # GeneralTriggerDriver's watermark-hold tag


def compact_holds(state) -> None:
    """Replaces each window's list of watermark holds with its smallest and largest entries
    (in place: a list is replaced, not changed, so copies made from it stay as they were)."""
    for tags in state.state.values():
        holds = tags.get(_HOLDS)
        if holds is not None and len(holds) > 2 and None not in holds:
            low, high = min(holds), max(holds)
            tags[_HOLDS] = [low] if low == high else [low, high]


def _is_group_by_window(applied) -> bool:
    return isinstance(applied.transform, _BEAM.direct_runner._StreamingGroupAlsoByWindow)


def _handle_result_and_prune(self, completed_bundle, completed_timers, result):
    committed = _BEAM.handle_result(self, completed_bundle, completed_timers, result)
    applied = result.transform
    if result.partial_keyed_state:
        states = self._transform_keyed_states[applied]
        group_by_window = _is_group_by_window(applied)
        watermarks = self._watermark_manager.get_watermarks(applied)
        with self._lock, watermarks._lock:
            index = _timer_index(watermarks)
            for key, state in result.partial_keyed_state.items():
                # Only the entry this bundle committed (a later commit may have replaced it).
                if states.get(key) is not state:
                    continue
                if key is not None and is_empty_state(state):
                    del states[key]
                    continue
                if key is not None and group_by_window:
                    compact_holds(state)
                index.add(key, state)
    # Every step's sweep is driven by any commit, as a window's expiry does not wait for its
    # own step to have work.
    for step in list(self._transform_keyed_states):
        if _is_group_by_window(step) and _collect_due(step):
            _collect_step(self, step)
    return committed


class _TimerIndex:
    """The keys of one step whose committed state holds timers, ordered by when they can fire.

    A committed state is never changed in place (the runner's evaluators work on copies and a
    commit replaces the entry, as do the fixes here), so a state's earliest event-time and
    processing-time timers are computed once, when it is committed, and an entry whose state is
    no longer the key's current one is stale and dropped when met."""

    def __init__(self, keyed_states: dict) -> None:
        self._states = keyed_states
        self._seq = 0
        self._watermark: list = []  # heap of (earliest event-time timer, seq, key, state)
        self._realtime: list = []  # heap of (earliest processing-time timer, seq, key, state)
        self._due: dict = {}  # key -> state with a timer already due (fires until replaced)
        self._live: dict = {}  # key -> indexed state holding a processing-time timer
        for key, state in list(keyed_states.items()):
            self.add(key, state)

    def add(self, key, state) -> None:
        """Indexes ``state``, the key's newly committed state."""
        if not state.timers:
            return
        earliest = {}
        for timers in state.timers.values():
            for (_name, domain, _tag), timestamp in timers.items():
                if domain not in earliest or timestamp < earliest[domain]:
                    earliest[domain] = timestamp
        self._seq += 1
        watermark = earliest.get(TimeDomain.WATERMARK)
        if watermark is not None:
            heapq.heappush(self._watermark, (watermark, self._seq, key, state))
        realtime = earliest.get(TimeDomain.REAL_TIME)
        if realtime is not None:
            heapq.heappush(self._realtime, (realtime, self._seq, key, state))
            self._live[key] = state
        if len(self._watermark) + len(self._realtime) > 4 * len(self._states) + 1024:
            self._compact()

    def _current(self, key, state) -> bool:
        return self._states.get(key) is state

    def _compact(self) -> None:
        self._watermark = [e for e in self._watermark if self._current(e[2], e[3])]
        self._realtime = [e for e in self._realtime if self._current(e[2], e[3])]
        heapq.heapify(self._watermark)
        heapq.heapify(self._realtime)

    def _pop_due(self, heap: list, now) -> None:
        while heap and heap[0][0] <= now:
            _, _, key, state = heapq.heappop(heap)
            if self._current(key, state):
                self._due[key] = state

    def due(self, watermark, processing_time) -> tuple[list, bool]:
        """The (key, state) pairs that have a timer due, in the order they became due, and
        whether any current state holds a processing-time timer."""
        self._pop_due(self._watermark, watermark)
        self._pop_due(self._realtime, processing_time)
        for key in [k for k, s in self._due.items() if not self._current(k, s)]:
            del self._due[key]
        return list(self._due.items()), self._any_realtime()

    def _any_realtime(self) -> bool:
        # Stale entries are dropped from the front only: amortised, one per replaced state.
        while self._live:
            key, state = next(iter(self._live.items()))
            if self._current(key, state):
                return True
            del self._live[key]
        return False


def _timer_index(watermarks) -> _TimerIndex:
    index = watermarks.__dict__.get("_genai_timer_index")
    if index is None:
        index = watermarks._genai_timer_index = _TimerIndex(watermarks._keyed_states)
    return index


def _extract_transform_timers(self):
    """``_TransformWatermarks.extract_transform_timers`` of Beam 2.77, visiting only the keys
    that have a timer due (``_TimerIndex``) instead of every key of the step: the same timers,
    and the same answer on whether any processing-time timer is set."""
    with self._lock:
        fired_timers = []
        processing_time = self._clock.time()
        due, has_realtime_timer = _timer_index(self).due(self._input_watermark, processing_time)
        for encoded_key, state in due:
            timers, _ = state.get_timers(
                watermark=self._input_watermark, processing_time=processing_time
            )
            for expired in timers:
                window, (name, time_domain, timestamp, dynamic_timer_tag) = expired
                fired_timers.append(
                    _BEAM.TimerFiring(
                        encoded_key,
                        window,
                        name,
                        time_domain,
                        timestamp,
                        dynamic_timer_tag=dynamic_timer_tag,
                    )
                )
        self._fired_timers.update(fired_timers)
        return fired_timers, has_realtime_timer


def install_state_pruning() -> bool:
    """Installs the state shims (idempotent); returns whether they are on."""
    b = _beam()
    if b is None or os.environ.get("GENAI_NO_STATE_PRUNING") == "1":
        return False
    context = b.evaluation_context.EvaluationContext
    if context.handle_result is not _handle_result_and_prune:
        context.handle_result = _handle_result_and_prune
        b.watermark_manager._TransformWatermarks.extract_transform_timers = (
            _extract_transform_timers
        )
    return True


def uninstall_state_pruning() -> None:
    """Puts Beam's own methods back."""
    if _BEAM is None:
        return
    _BEAM.evaluation_context.EvaluationContext.handle_result = _BEAM.handle_result
    _BEAM.watermark_manager._TransformWatermarks.extract_transform_timers = (
        _BEAM.extract_transform_timers
    )
    _LAST_COLLECT.clear()


def install() -> bool:
    """Installs every fix; returns whether any is on (none on an untested Beam)."""
    cache = install_spec_cache()
    tags = install_tag_cache()
    pruning = install_state_pruning()
    return cache or tags or pruning


def uninstall() -> None:
    """Puts every Beam function the fixes replaced back."""
    uninstall_spec_cache()
    uninstall_tag_cache()
    uninstall_state_pruning()


_DEPTH = [0]  # nested installed() blocks (a test may run a pipeline inside a launch)


@contextlib.contextmanager
def installed() -> Iterator[bool]:
    """The fixes in place for the duration of the block (one local run), removed after it,
    even when the run fails. Yields whether they are on."""
    with _LOCK:
        on = install()
        _DEPTH[0] += 1
    try:
        yield on
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                uninstall()
