"""Fixtures of the CUDA tests (``pytest -m cuda``): every test here skips without a CUDA device.

These tests run where a GPU is at hand (``benchmarks/gpu_check.py`` runs them first); CI
collects none of them.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _needs_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture
def exact_float32():
    """float32 matrix products and convolutions without TF32 for the test, then as before."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture
def make_net():
    """``make_net(preset, variance="fixed_small")``: a U-Net on CUDA, eval mode, whose zero-
    initialised output convolution is made random so that every output is non-trivial."""
    import torch

    from ddpm_core.backends.torch.unet import build_unet

    def make(preset: str, variance: str = "fixed_small"):
        torch.manual_seed(0)
        net = build_unet(preset, variance=variance)
        with torch.no_grad():
            net.conv_out.weight.normal_(0, 0.05)
        return net.cuda().eval()

    return make
