"""The core runs unchanged under jax.jit (every per-step function, t traced) and torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
from ddpm_testing import import_backend, to_numpy
from per_step_calls import Inputs, as_tuple, numpy_inputs, per_step_calls

from ddpm_core.forward import q_sample
from ddpm_core.samplers import ddim_step, ddpm_step
from ddpm_core.schedules import Schedule

S = Schedule.linear(100)
RNG = np.random.default_rng(17)
X, EPS, NOISE = (RNG.standard_normal((3, 2, 4)).astype(np.float32) for _ in range(3))
T = np.array([0, 50, 99])
T_PREV = np.array([-1, 30, 90])


def _steps(x, eps, noise, t, t_prev):
    a = q_sample(S, x, t, noise)
    b = ddpm_step(S, eps, x, t, noise)
    c = ddim_step(S, eps, x, t, t_prev, noise, eta=0.5)
    return a, b.x_prev, b.x0_hat, c.x_prev


def _check(compiled, eager):
    for got, ref in zip(compiled, eager, strict=False):
        np.testing.assert_allclose(to_numpy(got), to_numpy(ref), rtol=1e-5, atol=1e-6)


def test_under_jax_jit():
    pytest.importorskip("jax")
    import jax

    jnp = import_backend("jax")
    args = (jnp.asarray(X), jnp.asarray(EPS), jnp.asarray(NOISE), jnp.asarray(T), jnp.asarray(T_PREV))
    eager = _steps(*args)
    _check(jax.jit(_steps)(*args), eager)


# Dynamo's advisory about array_api_compat.array_namespace's lru_cache (third-party; the
# namespace lookup has no value-dependent result, so tracing through the cache is correct)
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_under_torch_compile_fullgraph():
    torch = pytest.importorskip("torch")
    import_backend("torch")
    args = tuple(torch.asarray(a) for a in (X, EPS, NOISE, T, T_PREV))
    eager = _steps(*args)
    torch._dynamo.reset()
    compiled = torch.compile(_steps, fullgraph=True, backend="aot_eager")
    _check(compiled(*args), eager)


@pytest.mark.parametrize("name", sorted(per_step_calls(S)))
def test_every_per_step_function_under_jax_jit_with_a_traced_t(name):
    """No check breaks tracing: t, t_prev and u are jit arguments, so they are traced."""
    pytest.importorskip("jax")
    import jax

    jnp = import_backend("jax")
    call = per_step_calls(S)[name]
    args = Inputs(*(jnp.asarray(a) for a in numpy_inputs(S.num_timesteps)))
    eager = as_tuple(call(args))
    traced = as_tuple(jax.jit(lambda a: call(a))(args))
    _check(traced, eager)
