"""CUDA graphs: the core's steps with a tensor ``t`` replay correctly, and so does
``generate(cuda_graph=True)``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ddpm_core as dc  # noqa: E402
from ddpm_core.backends.torch import sampling  # noqa: E402
from ddpm_core.backends.torch.sampling import host_sync_errors  # noqa: E402

pytestmark = pytest.mark.cuda

B, SHAPE = 8, (8, 3, 16, 16)

STEPS = {
    "q_sample": lambda s, a, t: dc.q_sample(s, a["x"], t, a["noise"]),
    "ddpm_step": lambda s, a, t: dc.ddpm_step(s, a["eps"], a["x"], t, a["noise"], clip=True).x_prev,
    "ddim_step": lambda s, a, t: dc.ddim_step(s, a["eps"], a["x"], t, t - 1, a["noise"], eta=0.5,
                                              clip=True).x_prev,
}


def _arrays():
    g = torch.Generator(device="cuda").manual_seed(0)
    return {k: torch.randn(SHAPE, device="cuda", generator=g) for k in ("x", "eps", "noise")}


def _capture(fn):
    """Warm ``fn`` up on a side stream (tables, allocations), then capture it.

    The second warm-up call runs with synchronisation errors on, so that a step that cannot
    be captured fails there, leaving the device usable for the tests after this one.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
        with host_sync_errors():
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


@pytest.mark.parametrize("name", list(STEPS))
def test_core_step_replays_for_every_t(name):
    s, a, step = dc.Schedule.linear(1000), _arrays(), STEPS[name]
    t = torch.full((B,), 999, device="cuda")
    graph, out = _capture(lambda: step(s, a, t))
    for i in (999, 500, 1, 0):
        t.fill_(i)
        graph.replay()
        ref = step(s, a, torch.full((B,), i, device="cuda"))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same kernels, replayed


def _images(net, sched, **kw):
    return sampling.generate(net, sched, n=5, batch_size=3, seed=1, **kw)


@pytest.mark.parametrize(("sampler", "steps", "eta"), [("ddpm", None, 0.0), ("ddim", 10, 0.5)])
def test_generate_with_a_cuda_graph(make_net, sampler, steps, eta):
    """Graph replays give the eager chain's images. The model runs in bf16, where a float32
    coefficient rounded differently can flip a bf16 rounding; a wrong buffer, step index or
    noise row changes every image by O(1)."""
    net = make_net("tiny")
    sched = dc.Schedule.linear(40, 1e-3, 0.2)
    kw = dict(sampler=sampler, steps=steps, eta=eta)
    graph = _images(net, sched, cuda_graph=True, **kw)
    eager = _images(net, sched, **kw)
    diff = np.abs(graph - eager)
    assert graph.shape == (5, 8, 8, 1) and np.isfinite(graph).all()
    assert diff.mean() < 0.02 and np.quantile(diff, 0.99) < 0.1
    np.testing.assert_array_equal(graph, _images(net, sched, cuda_graph=True, **kw))


def test_cuda_graph_excludes_compile(make_net):
    with pytest.raises(ValueError, match="cuda_graph=True and compile=True exclude each other"):
        sampling.generate(make_net("tiny"), dc.Schedule.linear(40), n=1, cuda_graph=True, compile=True)
