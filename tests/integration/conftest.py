"""Fixtures of the integration tests: the local Google Cloud stack, checked once per module,
and fresh resources on it for each test (``tests/support/gcp_stack.py``)."""

from __future__ import annotations

import pytest

from tests.support.gcp_stack import Resources, Stack, check_stack, create_resources


@pytest.fixture(scope="module")
def stack() -> Stack:
    return check_stack()


@pytest.fixture
def resources(stack, tmp_path) -> Resources:
    """Fresh topics, subscriptions, bucket, dataset name and database for one test."""
    return create_resources(stack, tmp_path)
