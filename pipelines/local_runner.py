"""The local runner: Beam's ``DirectRunner`` without its attempt at the Prism runner.

Beam 2.77's default runner (``DirectRunner``, an alias of ``SwitchingDirectRunner``) first tries
the Prism runner, a Go binary it downloads from github.com when the pipeline runs, and falls back
to its Python runners (the ``FnApiRunner`` for batch, ``BundleBasedDirectRunner`` for
streaming) only when that fails. The same command would so run on a different runner depending on
whether the machine can reach GitHub: here and in CI (no route to GitHub) the Python runners,
on a laptop Prism. Every test, figure and shim (``pipelines.local.direct_runner_fixes``) of this project is
of the Python runners, so local runs use them always: ``PythonDirectRunner`` is Beam's own
choice of runner with the Prism attempt skipped (it fails at once, as offline, and Beam logs
``Falling back to DirectRunner`` at INFO), and ``install_python_direct_runner`` makes it what
``--runner DirectRunner`` (the default) means in this process. ``launch`` installs it for local
runs and the tests' ``conftest`` for every test; ``GENAI_ALLOW_PRISM=1`` leaves Beam's choice
as it is. An explicit ``--runner PrismRunner`` is untouched.
"""

from __future__ import annotations

import os
import threading

from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability import prism_runner

__all__ = ["PythonDirectRunner", "install_python_direct_runner", "uninstall_python_direct_runner"]

_BEAM_DIRECT_RUNNER = direct_runner.DirectRunner
_PRISM_RUNNER = prism_runner.PrismRunner
_LOCK = threading.Lock()


class _PrismSkipped:
    """Stands in for ``PrismRunner`` while ``PythonDirectRunner`` picks a runner."""

    def run_pipeline(self, pipeline, options):
        raise RuntimeError("Prism is not used for local runs here (pipelines.local_runner)")


class PythonDirectRunner(direct_runner.SwitchingDirectRunner):
    """Beam's ``DirectRunner`` minus its first try of Prism: the ``FnApiRunner`` for batch
    pipelines (``--direct_num_workers`` and ``--direct_running_mode`` apply) and the
    ``BundleBasedDirectRunner`` for streaming ones and wherever the ``FnApiRunner`` lacks a
    feature (``TestStream``, processing-time timers), as Beam decides."""

    def run_pipeline(self, pipeline, options):
        # Beam looks PrismRunner up in its module when it runs a pipeline; it is swapped out for
        # that call only (a batch pipeline runs to its end within it).
        with _LOCK:
            prism_runner.PrismRunner = _PrismSkipped
            try:
                return super().run_pipeline(pipeline, options)
            finally:
                prism_runner.PrismRunner = _PRISM_RUNNER


def install_python_direct_runner() -> bool:
    """Makes ``DirectRunner`` (the default ``--runner``) mean ``PythonDirectRunner`` in this
    process. Returns whether it did (not with ``GENAI_ALLOW_PRISM=1``)."""
    if os.environ.get("GENAI_ALLOW_PRISM"):
        return False
    direct_runner.DirectRunner = PythonDirectRunner
    return True


def uninstall_python_direct_runner() -> None:
    direct_runner.DirectRunner = _BEAM_DIRECT_RUNNER
