"""No host reads in the per-step functions with a tensor ``t`` (PyTorch): what holds on CUDA.

A ``TorchFunctionMode`` sees every tensor method and function the core calls, including
``item``, ``__bool__``, ``__int__``, ``tolist``, ``numpy`` and ``cpu``: the calls that copy a
value to the host and, on a GPU, wait for the device. A CPU run therefore proves that no such
read exists in the code path, which is what makes a user's loop free of synchronisation on
CUDA (and capturable in a CUDA graph). Range and order checks of ``t`` stay in force: they
are device-side (``index_select`` bounds checks, ``torch._assert_async``), raising at once on
the CPU, as the last tests show.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest
from per_step_calls import Inputs, numpy_inputs, per_step_calls

from ddpm_core.forward import q_sample
from ddpm_core.samplers import ddim_step, ddpm_step
from ddpm_core.schedules import Schedule
from ddpm_core.timesteps import sample_timesteps, uniform_weights

torch = pytest.importorskip("torch")
from host_reads import HostReads  # noqa: E402

S = Schedule.linear(50, 1e-3, 0.2)
CALLS = per_step_calls(S)


def _inputs(device: str = "cpu") -> Inputs:
    return Inputs(*(torch.asarray(a, device=device) for a in numpy_inputs(S.num_timesteps)))


def test_the_counter_sees_every_kind_of_host_read():
    t, f = torch.tensor([3]), torch.tensor([1.5])
    reads = [bool, int, operator.index, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy,
             torch.Tensor.cpu, np.asarray, lambda a: a.to("cpu"), lambda a: a.to(device=torch.device("cpu"))]
    for read in reads:
        with HostReads() as mode:
            read(t)
        assert sum(mode.counts.values()) == 1, read
    with HostReads() as mode:
        float(f)
    assert mode.counts == {"__float__": 1}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_no_host_read_with_a_tensor_t(name):
    args = _inputs()
    CALLS[name](args)  # the first call builds the cached tables (one-time host work)
    with HostReads() as mode:
        CALLS[name](args)
    assert not mode.counts, f"{name} reads the host: {dict(mode.counts)}"


def test_the_old_range_check_would_be_counted():
    """The counter is not blind to the check this file guards against (aminmax then int)."""
    t = _inputs().t
    with HostReads() as mode:
        lo, hi = t.aminmax()
        int(lo), int(hi)
    assert mode.counts == {"__int__": 2}


# Device-side checks still fire: on the CPU at once, with a message naming the argument.
@pytest.mark.parametrize("name", sorted(n for n in CALLS if not any(
    skip in n for skip in ("sample_timesteps", "t=0", "validate=False", "classifier_free_guidance"))))
def test_out_of_range_t_raises_naming_t_and_the_range(name):
    a = _inputs()
    for bad, lo, hi in (([0, 1, 2, 50], 0, 50), ([-1, 0, 1, 2], -1, 2)):
        t = torch.tensor(bad)
        with pytest.raises(ValueError, match=rf"^t must lie in \[0, 50\), got values in \[{lo}, {hi}\]$"):
            CALLS[name](a._replace(t=t, t_prev=t - 1))


def test_bad_t_prev_and_order_raise_naming_t_prev():
    a = _inputs()
    with pytest.raises(ValueError, match=r"^t_prev must lie in \[-1, 50\), got values in \[-2, "):
        ddim_step(S, a.out, a.x, a.t, torch.tensor([-2, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"^t_prev must be smaller than t"):
        ddim_step(S, a.out, a.x, a.t, a.t)


def test_validate_false_skips_only_the_value_check():
    a = _inputs()
    with pytest.raises(TypeError, match=r"\bt\b"):
        q_sample(S, a.x, a.t.double(), a.noise, validate=False)
    with pytest.raises(ValueError, match=r"\bt\b.*shape"):
        q_sample(S, a.x, a.t[:2], a.noise, validate=False)


def test_noise_none_away_from_index_0_and_bad_u_raise_on_the_device_path():
    a = _inputs()
    with pytest.raises(ValueError, match=r"^noise is required"):
        ddpm_step(S, a.out, a.x, a.t, None)
    with pytest.raises(ValueError, match=r"^u must lie in \[0, 1\)"):
        sample_timesteps(uniform_weights(50), torch.tensor([0.5, float("nan")]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype feature")
def test_no_synchronisation_on_cuda():
    """What the CPU count proves, checked by CUDA itself: any sync raises in this mode."""
    args = _inputs("cuda")
    for call in CALLS.values():
        call(args)
    torch.cuda.synchronize()
    syncs = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for name, call in CALLS.items():
            try:
                call(args)
            except RuntimeError as exc:
                syncs.append(f"{name}: {exc}")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not syncs, "these calls synchronise:\n" + "\n".join(syncs)
