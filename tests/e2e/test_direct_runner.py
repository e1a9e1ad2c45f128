"""A local run of the streaming command leaves Beam as it found it: the DirectRunner fixes
(``pipelines.local.direct_runner_fixes``) are in place for that run only. The fixes themselves
are tested in ``tests/streaming/test_direct_runner.py``."""

from __future__ import annotations

import pytest
from apache_beam.runners.direct.evaluation_context import EvaluationContext
from apache_beam.transforms import trigger, userstate

from pipelines import streaming
from tests.support.direct_runner import (
    ORIGINAL_GET_DOFN_SPECS,
    ORIGINAL_HANDLE_RESULT,
    ORIGINAL_WITHOUT_EXTRACTION,
    fixes_removed,
)
from tests.support.verify import assert_verified


@pytest.fixture(autouse=True)
def _fresh_cache():
    with fixes_removed():
        yield


def test_a_local_run_leaves_beam_as_it_found_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    args = ["--source", "synthetic", "--rate", "20", "--duration_s", "1", "--tick_s", "0.5"]
    assert streaming.run([*args, "--output_root", str(tmp_path)]) == 0
    assert userstate.get_dofn_specs is ORIGINAL_GET_DOFN_SPECS
    assert EvaluationContext.handle_result is ORIGINAL_HANDLE_RESULT
    assert trigger._CombiningValueStateTag.without_extraction is ORIGINAL_WITHOUT_EXTRACTION
    assert_verified(tmp_path)
