"""DPM-Solver++(2M) and its SDE variant: a direct float64 reference, diffusers, per-sample
indices, tracing, guidance and the toy point (docs/equations.md, "DPM-Solver++")."""

from __future__ import annotations

import numpy as np
import pytest
from ddpm_testing import as_t, asarray, assert_close, backend_name, to_numpy

from ddpm_core import dpmpp_2m_sde_step, dpmpp_2m_step, reverse_step, sample
from ddpm_core.schedules import Schedule

T = 1000
BASE = Schedule.linear(T)


def _model(x, t):
    """A smooth non-ideal network (NumPy, float64): its x0_hat changes from step to step."""
    t = np.asarray(t, dtype=np.float64).reshape(-1, *([1] * (x.ndim - 1)))
    return 0.7 * np.tanh(x) + 1e-3 * t * x


def _reference(schedule, x, noises, *, prediction, sde, solver_type):
    """The solver written out from Lu et al. 2022 in lambda (float64, scalar index loop)."""
    abar = schedule.alphas_cumprod
    alpha = lambda i: 1.0 if i < 0 else np.sqrt(abar[i])  # noqa: E731
    sigma = lambda i: 0.0 if i < 0 else np.sqrt(1.0 - abar[i])  # noqa: E731
    lam = lambda i: np.log(alpha(i) / sigma(i))  # noqa: E731
    K, prev = schedule.num_timesteps, None
    for n, i in enumerate(range(K - 1, -1, -1)):
        out = _model(x, np.full(x.shape[0], schedule.timesteps[i]))
        x0 = (x - sigma(i) * out) / alpha(i) if prediction == "eps" else alpha(i) * x - sigma(i) * out
        first = prev is None or i == 0
        if i == 0:  # to sigma = 0: the data prediction itself
            x = x0
        else:
            h = lam(i - 1) - lam(i)
            e = np.exp(-h) if not sde else np.exp(-2.0 * h)
            d1 = 0.0 if first else (x0 - prev) / ((lam(i) - lam(i + 1)) / h)
            if solver_type == "midpoint":
                w = 0.5 * (1.0 - e)
            else:
                w = (np.exp(-h) - 1.0) / h + 1.0 if not sde else (1.0 - e) / (-2.0 * h) + 1.0
            ratio = sigma(i - 1) / sigma(i) * (np.exp(-h) if sde else 1.0)
            x = ratio * x + alpha(i - 1) * (1.0 - e) * x0 + alpha(i - 1) * w * d1
            if sde:
                x = x + sigma(i - 1) * np.sqrt(1.0 - e) * noises[n]
        prev = x0
    return x


def _ours(schedule, x, noises, xp, dtype, *, prediction, sde, solver_type, per_sample=False):
    x = asarray(x, xp, dtype)
    prev = None
    K = schedule.num_timesteps
    for n, i in enumerate(range(K - 1, -1, -1)):
        out = asarray(_model(to_numpy(x).astype(np.float64), np.full(x.shape[0], schedule.timesteps[i])), xp, dtype)
        idx = as_t([i] * x.shape[0], xp) if per_sample else i
        kw = dict(prediction=prediction, solver_type=solver_type)
        if sde:
            r = dpmpp_2m_sde_step(schedule, out, x, idx, prev, asarray(noises[n], xp, dtype), **kw)
        else:
            r = dpmpp_2m_step(schedule, out, x, idx, prev, **kw)
        x, prev = r.x_prev, r.x0_hat
    return x


@pytest.mark.parametrize("sde", [False, True], ids=["2m", "2m-sde"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("K", [5, 10, 25])
def test_the_chain_is_the_solver_written_out(xp, dtype, K, prediction, solver_type, sde):
    s = BASE.respace(K, timestep_spacing="trailing")
    rng = np.random.default_rng(K)
    x = rng.standard_normal((3, 2, 4))
    noises = [rng.standard_normal(x.shape) for _ in range(K)]
    expected = _reference(s, x, noises, prediction=prediction, sde=sde, solver_type=solver_type)
    got = _ours(s, x, noises, xp, dtype, prediction=prediction, sde=sde, solver_type=solver_type,
                per_sample=dtype == "float64")
    # K steps, each rounding in the compute dtype and feeding the network the rounded state
    assert_close(got, expected, xp=xp, dtype=dtype, factor=50.0 * K)


# diffusers 0.42 builds its sigmas with np.array(torch tensor), which NumPy 2 warns about
DIFFUSERS_NUMPY = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@DIFFUSERS_NUMPY
@pytest.mark.parametrize("sde", [False, True], ids=["2m", "2m-sde"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("K", [5, 10, 20])
def test_matches_diffusers_dpm_solver_multistep(K, prediction, solver_type, sde):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=BASE.betas.tolist(), solver_type=solver_type,
        algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++",
        prediction_type={"eps": "epsilon", "v": "v_prediction"}[prediction])  # defaults otherwise
    sch.set_timesteps(K)
    ts = sch.timesteps.numpy()
    s = BASE.respace(sorted(ts.tolist()))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 4))
    noises = [rng.standard_normal(x.shape) for _ in range(K)]
    theirs = torch.tensor(x)
    for n, t in enumerate(ts):
        out = torch.tensor(_model(theirs.numpy(), np.full(2, t)))
        theirs = sch.step(out, int(t), theirs, variance_noise=torch.tensor(noises[n])).prev_sample
    import numpy as xp_np

    ours = _ours(s, x, noises, xp_np, "float64", prediction=prediction, sde=sde, solver_type=solver_type)
    # diffusers rounds its sigmas (and so alpha, lambda, h) to float32 and steps in float64:
    # agreement to float32 rounding of the coefficients, amplified over K steps
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=16 * K * np.finfo(np.float32).eps
                               * np.max(np.abs(ours)))


@DIFFUSERS_NUMPY
def test_default_timesteps_are_diffusers_linspace():
    """With no spacing the chain of ddpm_core.app.sampling.chains is diffusers' default."""
    diffusers = pytest.importorskip("diffusers")
    from ddpm_core.app.sampling.chains import chain_schedule

    for K in (5, 10, 20, 25):
        sch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T)
        sch.set_timesteps(K)
        got = chain_schedule(BASE, "dpmpp-2m", K).timesteps[::-1]
        np.testing.assert_array_equal(got, sch.timesteps.numpy())


def test_per_sample_indices_give_each_sample_its_own_step(xp):
    s = BASE.respace(8, timestep_spacing="trailing")
    rng = np.random.default_rng(1)
    out, x, prev, noise = (rng.standard_normal((4, 3)) for _ in range(4))
    i = [7, 5, 3, 0]
    for step, extra in ((dpmpp_2m_step, ()), (dpmpp_2m_sde_step, (noise,))):
        batch = step(s, asarray(out, xp), asarray(x, xp), as_t(i, xp), asarray(prev, xp),
                     *(asarray(e, xp) for e in extra))
        for b, ib in enumerate(i):
            one = step(s, out[b:b + 1], x[b:b + 1], ib, prev[b:b + 1], *(e[b:b + 1] for e in extra))
            assert_close(batch.x_prev[b:b + 1, ...], one.x_prev, xp=xp, dtype="float64", factor=4)
        # sample 0 is at the chain's first index: first order, x0_prev ignored there
        first = step(s, out[:1], x[:1], 7, None, *(e[:1] for e in extra))
        assert_close(batch.x_prev[:1, ...], first.x_prev, xp=xp, dtype="float64", factor=4)


def test_the_last_step_returns_x0_hat_and_the_first_ignores_x0_prev(xp):
    s = BASE.respace(6)
    rng = np.random.default_rng(2)
    out, x, prev = (asarray(rng.standard_normal((2, 3)), xp) for _ in range(3))
    last = dpmpp_2m_step(s, out, x, 0, prev)
    assert_close(last.x_prev, to_numpy(last.x0_hat), xp=xp, dtype="float64", factor=0)
    a = dpmpp_2m_step(s, out, x, 5, prev, start=5)
    b = dpmpp_2m_step(s, out, x, 5, None)
    assert_close(a.x_prev, to_numpy(b.x_prev), xp=xp, dtype="float64", factor=0)
    c = dpmpp_2m_step(s, out, x, 3, prev, start=5)  # second order: x0_prev matters
    d = dpmpp_2m_step(s, out, x, 3, None, start=5)
    assert not np.allclose(to_numpy(c.x_prev), to_numpy(d.x_prev))


def test_traced_step_is_the_eager_step(xp):
    if backend_name(xp) != "jax":
        pytest.skip("jax.jit")
    import jax

    s = BASE.respace(10, timestep_spacing="trailing")
    rng = np.random.default_rng(3)
    out, x, prev, noise = (asarray(rng.standard_normal((2, 3)), xp) for _ in range(4))

    def f(out, x, i, prev, noise):
        return reverse_step(s, out, x, i, noise, sampler="dpmpp-2m-sde", x0_prev=prev, start=9).x_prev

    for i in ([9, 9], [4, 2], [0, 1]):
        eager = f(out, x, as_t(i, xp), prev, noise)
        traced = jax.jit(f)(out, x, as_t(i, xp), prev, noise)
        assert_close(traced, to_numpy(eager), xp=xp, dtype="float64", factor=4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde"])
def test_every_sampler_reaches_the_one_point_of_the_toy_data_in_10_steps(xp, sampler):
    """The ideal eps-model of data at one point c: eps*(x_t) = (x_t - sqrt(abar) c) / sqrt(1 - abar)."""
    c = np.array([[0.5, -0.25, 0.75]])
    abar = BASE.alphas_cumprod

    def model(x, t):
        a = asarray(abar[to_numpy(t)][:, None], xp)
        return (x - xp.sqrt(a) * asarray(c, xp)) / xp.sqrt(1.0 - a)

    s = BASE.respace(10, timestep_spacing="trailing") if sampler != "ddpm" else BASE.respace("10")
    rng = np.random.default_rng(4)
    x_T = asarray(rng.standard_normal((4, 3)), xp)
    x0 = sample(s, model, x_T, lambda i: asarray(rng.standard_normal((4, 3)), xp), sampler=sampler)
    # every step's x0_hat is exactly c, so each sampler lands on c up to float64 rounding
    assert_close(x0, np.repeat(c, 4, axis=0), xp=xp, dtype="float64", factor=1e3)


def test_learned_variance_head_and_guidance_go_through_reverse_step(xp):
    s = BASE.respace(5)
    rng = np.random.default_rng(5)
    eps, var, x, prev, grad = (asarray(rng.standard_normal((2, 3)), xp) for _ in range(5))
    both = xp.concat([eps, var], axis=1)
    a = reverse_step(s, both, x, 3, None, sampler="dpmpp-2m", variance="learned_range", x0_prev=prev)
    b = dpmpp_2m_step(s, eps, x, 3, prev)
    assert_close(a.x_prev, to_numpy(b.x_prev), xp=xp, dtype="float64", factor=0)
    g = reverse_step(s, eps, x, 3, None, sampler="dpmpp-2m", x0_prev=prev, grad=grad, classifier_scale=2.0)
    moved = to_numpy(eps) - np.sqrt(1.0 - s.alphas_cumprod[3]) * 2.0 * to_numpy(grad)  # G4
    h = dpmpp_2m_step(s, asarray(moved, xp), x, 3, prev)
    assert_close(g.x_prev, to_numpy(h.x_prev), xp=xp, dtype="float64", factor=8)


def test_bad_arguments_are_named():
    s = BASE.respace(5)
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="solver_type must be one of 'midpoint', 'heun'; got solver_type='rk4'"):
        dpmpp_2m_step(s, x, x, 3, None, solver_type="rk4")
    with pytest.raises(ValueError, match="x0_prev must have the same shape as x_t"):
        dpmpp_2m_step(s, x, x, 3, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="noise is required for the SDE solver"):
        dpmpp_2m_sde_step(s, x, x, 3, None, None)
    with pytest.raises(ValueError, match=r"start must be an integer in \[0, 5\)"):
        dpmpp_2m_step(s, x, x, 3, None, start=5)
