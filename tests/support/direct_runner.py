"""What the DirectRunner-fix tests compare against: Beam's own functions as Beam defines them,
captured when this module is first imported, and a context that removes the fixes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from apache_beam.runners.direct.evaluation_context import EvaluationContext
from apache_beam.transforms import trigger, userstate

from pipelines.local import direct_runner_fixes as direct_runner

__all__ = [
    "ORIGINAL_GET_DOFN_SPECS",
    "ORIGINAL_HANDLE_RESULT",
    "ORIGINAL_WITHOUT_EXTRACTION",
    "fixes_removed",
]

ORIGINAL_GET_DOFN_SPECS = userstate.get_dofn_specs
ORIGINAL_HANDLE_RESULT = EvaluationContext.handle_result
ORIGINAL_WITHOUT_EXTRACTION = trigger._CombiningValueStateTag.without_extraction


@contextlib.contextmanager
def fixes_removed() -> Iterator[None]:
    """Runs the block without the fixes installed, and removes any the block left installed."""
    direct_runner.uninstall()
    yield
    direct_runner.uninstall()
