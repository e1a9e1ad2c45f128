"""Shared test set-up: a pseudonym key for the redaction steps (tests only). Pipelines in tests
run on the project's local runner (``tests.support.pipelines.TestPipeline``)."""

import os

TEST_PSEUDONYM_KEY = "test-only-pseudonym-key-0123456789"
os.environ.setdefault("GENAI_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)

from tests.support.profiles import register_profiles  # noqa: E402 - after the key is set

register_profiles()  # hypothesis profiles "suite" (default) and "fuzz" (make fuzz)


def pytest_terminal_summary(terminalreporter):
    """After fuzz tests: how many generated inputs went through each layer."""
    import sys

    fuzz = sys.modules.get("tests.support.fuzz")
    if fuzz is not None and fuzz.CASES:
        counts = ", ".join(f"{layer} {n}" for layer, n in sorted(fuzz.CASES.items()))
        terminalreporter.write_line(f"fuzz cases (generated inputs): {counts}")
