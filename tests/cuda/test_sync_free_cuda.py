"""The core's per-step functions with a tensor ``t`` never synchronise with the host.

``torch.cuda.set_sync_debug_mode("error")`` turns every synchronising CUDA call (``item``,
``tolist``, a copy to the host or from pageable host memory, ``nonzero`` ...) into an
error. Each function runs once to build its cached device tables, then again under that
mode, and must give the same result.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import ddpm_core as dc  # noqa: E402
from ddpm_core.backends.torch.sampling import host_sync_errors  # noqa: E402

pytestmark = pytest.mark.cuda

SHAPE = (8, 3, 16, 16)

CALLS = {
    "q_sample": lambda s, a: dc.q_sample(s, a["x0"], a["t"], a["noise"]),
    "ddpm_step": lambda s, a: dc.ddpm_step(s, a["eps"], a["x"], a["t"], a["noise"], clip=True),
    "ddpm_step learned_range": lambda s, a: dc.ddpm_step(s, a["out2"], a["x"], a["t"], a["noise"],
                                                         variance="learned_range"),
    "ddim_step": lambda s, a: dc.ddim_step(s, a["eps"], a["x"], a["t"], a["t"] - 1, clip=True),
    "ddim_step eta": lambda s, a: dc.ddim_step(s, a["eps"], a["x"], a["t"], a["t"] - 1, a["noise"],
                                               eta=0.5),
    "p_mean_variance": lambda s, a: dc.p_mean_variance(s, a["eps"], a["x"], a["t"], clip=True),
    "training_losses": lambda s, a: dc.training_losses(s, a["eps"], a["x0"], a["x"], a["t"], a["noise"]),
    "training_losses hybrid": lambda s, a: dc.training_losses(
        s, a["out2"], a["x0"], a["x"], a["t"], a["noise"], loss="hybrid", variance="learned_range"),
}


def _arrays():
    g = torch.Generator(device="cuda").manual_seed(0)
    a = {k: torch.randn(SHAPE, device="cuda", generator=g) for k in ("x", "eps", "noise")}
    a["x0"] = torch.rand(SHAPE, device="cuda", generator=g) * 2 - 1
    a["out2"] = torch.randn((SHAPE[0], 2 * SHAPE[1], *SHAPE[2:]), device="cuda", generator=g)
    a["t"] = torch.tensor([0, 1, 2, 10, 500, 997, 998, 999], device="cuda")  # both ends
    return a


def _flat(result):
    return [result] if isinstance(result, torch.Tensor) else [r for r in result if r is not None]


@pytest.mark.parametrize("name", list(CALLS))
def test_no_host_sync_with_a_tensor_t(name):
    s, a, call = dc.Schedule.linear(1000), _arrays(), CALLS[name]
    ref = call(s, a)
    torch.cuda.synchronize()
    with host_sync_errors():
        got = call(s, a)
    for x, y in zip(_flat(got), _flat(ref), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
