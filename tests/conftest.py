from __future__ import annotations

import os

import pytest

# Tests never read the developer's environment by accident.
for _k in list(os.environ):
    if _k.startswith("DISPATCHER_") and not _k.startswith("DISPATCHER_TEST_"):
        del os.environ[_k]


@pytest.fixture
def fake_clock():
    from dispatcher.clock import FakeClock

    return FakeClock()
