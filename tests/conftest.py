"""Shared fixtures of the test suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prepared_run import write_prepared_run


@pytest.fixture
def prepared_run() -> Callable[..., object]:
    """The writer of prepared run folders (:func:`prepared_run.write_prepared_run`)."""
    return write_prepared_run
