"""The reference clock of batch runs (``--now``), recorded with the outputs.

A batch run checks event times against a clock (``event_time_in_future``: more than
``--max_clock_skew_s`` ahead of it). Were that clock the launch time, the same input could be
dead-lettered in one run and written in a re-run an hour later, and the outputs would hold two
outcomes for one event. So a batch run's clock is a reference recorded with its outputs:

* ``--now`` given: that time (RFC 3339 with an offset), and it is recorded for the input;
* else the time recorded for the same input under the same output root, by the first run over
  it (a re-run, a run resumed after a failure);
* else the launch time, recorded then, before anything is processed.

The record is ``<root>/reference_clock.json`` (``root``: the archive's, ``--output_root`` or
``--raw_root``, so ``gs://`` works): one entry per input (a backfill's ``--input`` as given; a
dead-letter replay's date range, reason and dead-letter root), so a later run over new input
gets its own launch time instead of an old reference that would reject newer events. To
re-check an input against a later clock, pass ``--now`` (or replay its dead letters).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from apache_beam.io.filesystems import FileSystems

__all__ = ["CLOCK_FILE", "add_now_option", "now_problems", "read_references", "reference_now"]

_LOGGER = logging.getLogger(__name__)

CLOCK_FILE = "reference_clock.json"


def add_now_option(parser) -> None:
    """Adds ``--now`` (batch pipelines only: streaming checks against the workers' clock)."""
    from pipelines.options import add_flag

    add_flag(
        parser,
        "--now",
        default="",
        help="Batch: the clock event times are checked against (event_time_in_future), RFC "
        "3339 with an offset. Default: the time recorded for this input by the first run over "
        "the output root (reference_clock.json), else the launch time, which is recorded.",
    )


def _parse(value: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def now_problems(value: str) -> list[str]:
    """Problems with a ``--now`` value (empty when fine or not given)."""
    if value and _parse(value) is None:
        return ["--now must be an RFC 3339 time with a UTC offset (e.g. 2026-11-07T00:00:00Z)"]
    return []


def _path(root: str) -> str:
    return FileSystems.join(root, CLOCK_FILE)


def read_references(root: str) -> dict[str, dict[str, str]]:
    """The references recorded under ``root``: input -> {"now": ..., "recorded_at": ...}."""
    path = _path(root)
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def reference_now(root: str, input_key: str, given: str, launched_at: dt.datetime) -> str:
    """The clock of a batch run over ``input_key`` writing under ``root`` (see the module
    docstring), as RFC 3339 UTC; records it when it is new or given."""
    references = read_references(root)
    recorded = references.get(input_key, {}).get("now")
    if given:
        now, how = _parse(given).astimezone(dt.UTC).isoformat(), "given by --now"
    elif recorded:
        now, how = recorded, "recorded by the first run over this input"
    else:
        now, how = launched_at.astimezone(dt.UTC).isoformat(), "the launch time, recorded"
    if now != recorded:
        references[input_key] = {"now": now, "recorded_at": launched_at.isoformat()}
        with FileSystems.create(_path(root)) as handle:
            handle.write(json.dumps(references, indent=1, sort_keys=True).encode("utf-8"))
    _LOGGER.info("reference clock %s (%s)", now, how)
    return now
