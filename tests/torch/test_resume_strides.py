"""A resumed fused Adam steps as the uninterrupted one on channels_last weights.

The fused kernel (the trainer's Adam on every device) walks a parameter, its gradient and
its moments as flat memory. The state file holds the moments contiguous, so loading them
beside channels_last parameters (CUDA; DDP on 1-channel data) must restride them, or every
step after a resume pairs the wrong elements. Found by the killed-DDP-pair resume test.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from ddpm_core.backends.torch import checkpoint  # noqa: E402


def _step(net, opt, seed: int) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    opt.zero_grad(set_to_none=True)
    net(x).square().mean().backward()
    opt.step()


def _pair():  # noqa: ANN202
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.SiLU(), torch.nn.Conv2d(8, 2, 3))
    net.to(memory_format=torch.channels_last)
    return net, torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)


def test_resumed_fused_adam_matches_the_uninterrupted_run(tmp_path):
    net, opt = _pair()
    for s in range(2):
        _step(net, opt, s)
    checkpoint.save_state(tmp_path, model=net, ema=copy.deepcopy(net), optimizer=opt, step=2)
    again, again_opt = _pair()
    checkpoint.load_state(tmp_path, model=again, ema=copy.deepcopy(again), optimizer=again_opt)
    for s in range(2, 5):
        _step(net, opt, s)
        _step(again, again_opt, s)
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    moments = [v for st in again_opt.state.values() for k, v in st.items() if k.startswith("exp_avg")]
    assert moments and all(m.stride() == p.stride() for m, p in zip(moments[::2], again.parameters(), strict=True))
