"""Fixtures shared by the run-time tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context of the test's own, destroyed (LINGER 0) after it."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)
