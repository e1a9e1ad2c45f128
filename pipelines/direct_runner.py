"""A local-runner shim: Beam's DoFn state/timer inspection, cached per DoFn class.

Why: the streaming DirectRunner of Beam 2.77 (``BundleBasedDirectRunner``) calls
``apache_beam.transforms.userstate.get_dofn_specs`` about three times for every bundle of every
``ParDo`` (to schedule it, to build its evaluator and to build its ``DoFnRunner``), and each call
builds a ``MethodWrapper`` — an ``inspect.signature`` — for every method of the DoFn, some forty
of them. Profiled on a 1,000 events/s synthetic stream that was ~29% of the run's CPU, and a
60-second run used a third less CPU with the cache (README "Performance"). Dataflow and the
other portable runners inspect a DoFn once, when they build its bundle processor; they are
untouched (``launch`` installs this for local runners only).

Exact: ``get_dofn_specs`` reads the state and timer parameters declared in the defaults of the
DoFn's bound methods. Those come from its class, except for bound methods stored on the instance
(``vars(dofn)``); a DoFn with none of those gets its class's cached result, any other is
inspected as before. (A ``beam.Map`` of a plain function stores the function itself, which is
not a bound method and which ``get_dofn_specs`` skips as well.) Each call returns fresh sets.
``GENAI_NO_SPEC_CACHE=1`` leaves Beam as it is.
"""

from __future__ import annotations

import logging
import os
import threading
import types

from apache_beam.runners.direct import transform_evaluator
from apache_beam.transforms import userstate

__all__ = ["install_spec_cache", "uninstall_spec_cache"]

_LOGGER = logging.getLogger(__name__)
_ORIGINAL = userstate.get_dofn_specs
_CACHE: dict[type, tuple[frozenset, frozenset]] = {}
_LOCK = threading.Lock()


def _has_bound_methods(dofn) -> bool:
    return any(isinstance(value, types.MethodType) for value in vars(dofn).values())


def cached_dofn_specs(dofn) -> tuple[set, set]:
    """``get_dofn_specs(dofn)``, from the class's cached result where that is exact."""
    if _has_bound_methods(dofn):
        return _ORIGINAL(dofn)
    cls = type(dofn)
    specs = _CACHE.get(cls)
    if specs is None:
        state_specs, timer_specs = _ORIGINAL(dofn)
        specs = (frozenset(state_specs), frozenset(timer_specs))
        with _LOCK:
            _CACHE[cls] = specs
    return set(specs[0]), set(specs[1])


def install_spec_cache() -> bool:
    """Installs the cache (idempotent); returns whether it is installed."""
    if os.environ.get("GENAI_NO_SPEC_CACHE") == "1":
        return False
    if userstate.get_dofn_specs is not cached_dofn_specs:
        userstate.get_dofn_specs = cached_dofn_specs
        transform_evaluator.get_dofn_specs = cached_dofn_specs
        _LOGGER.info("DirectRunner: DoFn state/timer specs cached per class")
    return True


def uninstall_spec_cache() -> None:
    """Puts Beam's own function back (for tests)."""
    userstate.get_dofn_specs = _ORIGINAL
    transform_evaluator.get_dofn_specs = _ORIGINAL
    _CACHE.clear()
