"""The U-Net on CUDA: bf16 autocast, channels_last and ``torch.compile`` against float32 eager.

Forward outputs and parameter gradients of a squared-output loss are compared. Wrong
results here (an overflowing bf16 softmax, a timestep embedding rounded to bf16, a layout
bug) are O(1) errors; the bounds leave room only for the precision used.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.cuda


def _inputs(net, batch: int = 4, seed: int = 1):
    c = net.config
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, c.in_channels, c.image_size, c.image_size, device="cuda", generator=g)
    t = torch.tensor([0, 1, 500, 999][:batch], device="cuda")  # the embedding's whole range
    return x, t


def _forward_backward(net, x, t, *, bf16: bool = False):
    """Output (float32) and the flat gradient of mean(output^2) over every parameter."""
    net.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = net(x, t)
    assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
    out.float().square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert grads.dtype == torch.float32 and bool(torch.isfinite(grads).all())
    return out.detach().float(), grads


# In float64: a float32 cosine of 35M-element gradients is off by ~4e-3 (measured 1.0037 for
# two equal vectors), more than the differences these tests bound.
def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def test_bf16_autocast_forward_backward(make_net, exact_float32):
    net = make_net("cifar10")
    x, t = _inputs(net)
    ref_out, ref_grads = _forward_backward(net, x, t)
    out, grads = _forward_backward(net, x, t, bf16=True)
    # bf16 keeps 8 significant bits (eps 7.8e-3); the CPU's bf16 autocast gives 6e-3 and a
    # gradient cosine of 0.99998 here
    assert _rel(out, ref_out) < 5e-2
    assert _cos(grads, ref_grads) > 0.98


def test_group_norm_stays_bf16_under_autocast(make_net):
    """CUDA autocast runs ``group_norm`` in float32; the U-Net's GroupNorm keeps bf16, so that
    no normalisation adds float32 passes over an activation (what makes the net memory-bound)."""
    net = make_net("cifar10")
    seen = []
    for m in net.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    x, t = _inputs(net)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        net(x, t)
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
def test_channels_last_matches_contiguous(make_net, exact_float32, bf16):
    """The trainer's CUDA layout: weights and inputs channels_last, same numbers."""
    net = make_net("cifar10")
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x, t = _inputs(net)
    ref_out, ref_grads = _forward_backward(net, x, t, bf16=bf16)
    out, grads = _forward_backward(last, x.contiguous(memory_format=torch.channels_last), t, bf16=bf16)
    # float32: other convolution algorithms round differently; bf16: any rounding flip
    # moves a value by a bf16 ulp
    tol = 5e-2 if bf16 else 1e-4
    assert _rel(out, ref_out) < tol
    assert _cos(grads, ref_grads) > (0.98 if bf16 else 0.99999)


@pytest.mark.filterwarnings("ignore:TensorFloat32 tensor cores")
def test_compile_matches_eager(make_net, exact_float32):
    """``torch.compile`` of the U-Net (the tiny preset: every kind of block, a short compile)."""
    net = make_net("tiny")
    compiled = torch.compile(net)
    x, t = _inputs(net)
    ref_out, ref_grads = _forward_backward(net, x, t)
    for _ in range(2):  # the second call runs the cached program
        out, grads = _forward_backward(compiled, x, t)
        assert _rel(out, ref_out) < 1e-4  # fused kernels reorder float32 sums
        assert _rel(grads, ref_grads) < 1e-3
