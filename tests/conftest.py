"""Shared test set-up: a pseudonym key for the redaction steps (tests only), and the local
runner every pipeline of the tests runs on (Beam's Python runners, never Prism: see
``pipelines.local_runner``)."""

import os

from pipelines.local_runner import install_python_direct_runner

install_python_direct_runner()

TEST_PSEUDONYM_KEY = "test-only-pseudonym-key-0123456789"
os.environ.setdefault("GENAI_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)
