"""Shared test set-up: a pseudonym key for the redaction steps (tests only). Pipelines in tests
run on the project's local runner (``tests.support.pipelines.TestPipeline``)."""

import os

TEST_PSEUDONYM_KEY = "test-only-pseudonym-key-0123456789"
os.environ.setdefault("GENAI_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)
