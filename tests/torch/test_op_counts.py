"""The PyTorch chain step dispatches at most two ATen ops more than a hand-written step.

On a GPU every ATen op of a sampling step is at least one kernel launch, and a 1,000-step
chain of a small model is launch-bound: the library's step (``StaticChain.step``: the core's
``reverse_step`` on static buffers, the step a CUDA graph captures) must cost what a user's
own capturable step costs. Each hand-written step below is the natural capturable one: its
own float64 tables from the betas, stacked and cast to float32 once, one gather per step,
plain tensor arithmetic, its result written into the same static buffers. A
``TorchDispatchMode`` counts the ops on the CPU (the same ops CUDA would launch), and the
two steps' results agree to float32 precision, so the hand-written step is a real one.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from ddpm_core.app.sampling.chains import chain_schedule
from ddpm_core.app.sampling.protocol import ChainSpec
from ddpm_core.schedules import Schedule

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from ddpm_core.backends.torch.chain import StaticChain  # noqa: E402

SCHED = Schedule.linear(1000)
STEPS = 50
SHAPE = (4, 3, 8, 8)
MODEL_SCALE = 0.3  # the stand-in network eps = 0.3 x (one op, in both steps)


class AtenOps(TorchDispatchMode):
    """Counts the ATen ops dispatched inside ``with AtenOps() as ops:``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _model(x, t):  # noqa: ANN001, ANN202
    return x * MODEL_SCALE


def _tables(sampler: str, sched: Schedule) -> torch.Tensor:
    """(K, n, 1, 1, 1) float32 coefficients of the hand-written step, from the betas."""
    abar = np.cumprod(1.0 - np.asarray(sched.betas, dtype=np.float64))
    abar_prev = np.append(1.0, abar[:-1])
    cols = [1.0 / np.sqrt(abar), np.sqrt(1.0 / abar - 1.0)]  # x0_hat = a x - b eps
    if sampler == "ddpm":
        beta = 1.0 - abar / abar_prev
        cols += [beta * np.sqrt(abar_prev) / (1.0 - abar),
                 (1.0 - abar_prev) * np.sqrt(1.0 - beta) / (1.0 - abar),
                 np.sqrt(beta * (1.0 - abar_prev) / (1.0 - abar))]
    elif sampler == "ddim":
        cols += [np.sqrt(abar_prev), np.sqrt(1.0 - abar_prev)]
    else:  # DPM-Solver++(2M), midpoint: x = sigma_s/sigma x + alpha_s (1 - e^-h) D
        alpha, sigma = np.sqrt(abar), np.sqrt(1.0 - abar)
        alpha_s, sigma_s = np.sqrt(abar_prev), np.sqrt(1.0 - abar_prev)
        lam = np.log(alpha / sigma)
        with np.errstate(divide="ignore"):
            lam_s = np.append(np.inf, lam[:-1])
        h, h_prev = lam_s - lam, np.append(lam[:-1] - lam[1:], 1.0)
        second = (np.arange(len(abar)) > 0) & (np.arange(len(abar)) < len(abar) - 1)
        c0 = alpha_s * (1.0 - np.exp(-h))
        cols += [sigma_s / sigma, c0, np.where(second, c0 * h / (2.0 * h_prev), 0.0)]
    return torch.as_tensor(np.stack(cols, 1)[..., None, None, None], dtype=torch.float32)


def _hand_step(sampler: str, tab: torch.Tensor, start: int):  # noqa: ANN202
    def step(chain: StaticChain) -> None:
        x, i = chain.x, chain.i
        eps = _model(x, chain.t_model)
        c = tab.index_select(0, i).unbind(1)
        x0 = (c[0] * x - c[1] * eps).clamp(-1.0, 1.0)
        if sampler == "ddpm":
            out = c[2] * x0 + c[3] * x + c[4] * chain.noise
        elif sampler == "ddim":
            out = c[2] * x0 + c[3] * eps
        else:
            second = (i != start).to(x.dtype).view(-1, 1, 1, 1) * c[4]
            out = c[2] * x + c[3] * x0 + second * (x0 - chain.x0)
            chain.x0.copy_(x0)
        chain.x.copy_(out)
    return step


def _chain(sampler: str, sched: Schedule) -> StaticChain:
    spec = ChainSpec(sched, sampler, 0.0, "eps", "fixed_small", True, "network")
    chain = StaticChain(_model, spec, SHAPE, torch.device("cpu"), capture=False)
    g = torch.Generator().manual_seed(0)
    chain.x.copy_(torch.randn(SHAPE, generator=g))
    chain.x0.copy_(torch.randn(SHAPE, generator=g).clamp(-1, 1))
    chain.noise.copy_(torch.randn(SHAPE, generator=g))
    return chain


def _counted(step, chain: StaticChain, i: int) -> tuple[int, torch.Tensor]:  # noqa: ANN001
    saved = chain.x.clone(), chain.x0.clone()
    chain._set_step(i)
    step()  # tables cached and cast on the first call, as in a chain's warm-up
    chain.x.copy_(saved[0])
    chain.x0.copy_(saved[1])
    with torch.inference_mode(), AtenOps() as ops:
        step()
    out = chain.x.clone()
    chain.x.copy_(saved[0])
    chain.x0.copy_(saved[1])
    return ops.total, out


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_chain_step_is_within_two_ops_of_a_hand_written_step(sampler, where):
    sched = chain_schedule(SCHED, sampler, STEPS)
    start = sched.num_timesteps - 1
    i = {"first": start, "middle": start // 2, "last": 0}[where]
    chain = _chain(sampler, sched)
    hand = _hand_step(sampler, _tables(sampler, sched), start)
    ours, ours_x = _counted(chain.step, chain, i)
    theirs, hand_x = _counted(lambda: hand(chain), chain, i)
    torch.testing.assert_close(ours_x, hand_x, rtol=2e-5, atol=2e-5)
    assert ours <= theirs + 2, f"{sampler} step {i}: {ours} ATen ops against {theirs} hand-written"


def test_the_counter_counts_every_op():
    with AtenOps() as ops:
        x = torch.ones(3)
        (x * 2 + 1).clamp_(0, 2)
    assert ops.counts["aten.mul"] == ops.counts["aten.add"] == ops.counts["aten.clamp_"] == 1
    assert ops.total >= 4
