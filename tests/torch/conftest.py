"""Fixtures of the PyTorch backend's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: CPU timings and results do not depend on the machine."""
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
