"""Bad input gives a clear error naming the argument (never a silent broadcast)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ddpm_testing import as_t, asarray, assert_close, to_numpy

from ddpm_core.bounds import bits_per_dim
from ddpm_core.forward import q_mean_variance, q_sample, q_step_sample
from ddpm_core.losses import discretized_gaussian_log_likelihood, training_losses, vlb_terms
from ddpm_core.parameterization import p_mean_variance, predict_x0
from ddpm_core.posterior import q_posterior
from ddpm_core.reverse import interpolate
from ddpm_core.samplers import ddim_step, ddpm_step
from ddpm_core.schedules import Schedule
from ddpm_core.timesteps import sample_timesteps, uniform_weights

S = Schedule.linear(10, 1e-3, 0.2)


def _x(xp, shape=(2, 3)):
    return asarray(np.zeros(shape), xp)


def _raises(name, fn, *args, **kwargs):
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        fn(*args, **kwargs)


def test_q_sample_errors(xp):
    x = _x(xp)
    _raises("noise", q_sample, S, x, 0, _x(xp, (1, 3)))  # would broadcast silently
    _raises("noise", q_sample, S, x, 0, _x(xp, (3,)))
    _raises("t", q_sample, S, x, 10, x)  # t == T
    _raises("t", q_sample, S, x, -1, x)
    _raises("t", q_sample, S, x, as_t([0, 1, 2], xp), x)  # batch mismatch
    _raises("t", q_sample, S, x, asarray(np.array([0.5, 1.0]), xp), x)  # non-integer
    _raises("t", q_sample, S, x, 2.0, x)


def test_forward_helpers_errors(xp):
    x = _x(xp)
    _raises("t", q_mean_variance, S, x, as_t([0, 10], xp))
    _raises("noise", q_step_sample, S, x, 0, _x(xp, (2, 1)))


def test_q_posterior_errors(xp):
    _raises("x0", q_posterior, S, _x(xp, (1, 3)), _x(xp), 0)
    _raises("t", q_posterior, S, _x(xp), _x(xp), as_t([11, 0], xp))


def test_parameterization_errors(xp):
    x = _x(xp, (2, 2, 3))
    _raises("prediction", p_mean_variance, S, x, x, 0, prediction="score")
    _raises("variance", p_mean_variance, S, x, x, 0, variance="large")
    _raises("model_output", p_mean_variance, S, _x(xp, (2, 1, 3)), x, 0)
    _raises("prediction", predict_x0, S, x, x, 0, prediction="noise")


def test_learned_variance_odd_channels_names_model_output(xp):
    x = _x(xp, (2, 2, 3))
    _raises("model_output", p_mean_variance, S, _x(xp, (2, 3, 3)), x, 0, variance="learned")


def test_ddpm_step_errors(xp):
    x = _x(xp)
    _raises("noise", ddpm_step, S, x, x, 1, _x(xp, (1, 3)))
    _raises("model_output", ddpm_step, S, _x(xp, (2, 1)), x, 1, x)
    _raises("t", ddpm_step, S, x, x, as_t([0, 10], xp), x)
    _raises("variance", ddpm_step, S, x, x, 1, x, variance="tiny")


def test_ddim_step_errors(xp):
    x = _x(xp)
    _raises("eta", ddim_step, S, x, x, 5, 4, x, eta=-0.1)
    _raises("eta", ddim_step, S, x, x, 5, 4, x, eta=1.5)
    _raises("noise", ddim_step, S, x, x, 5, 4, None, eta=0.5)
    _raises("noise", ddim_step, S, x, x, 5, 4, _x(xp, (1, 3)), eta=0.5)
    _raises("t_prev", ddim_step, S, x, x, 5, -2)
    _raises("prediction", ddim_step, S, x, x, 5, 4, prediction="score")


def test_ddim_t_prev_must_precede_t(xp):
    x = _x(xp)
    _raises("t_prev", ddim_step, S, x, x, 4, 4)
    _raises("t_prev", ddim_step, S, x, x, as_t([4, 2], xp), as_t([3, 5], xp))


def test_loss_errors(xp):
    x = _x(xp)
    _raises("loss", training_losses, S, x, x, x, 0, x, loss="l1")
    _raises("noise", training_losses, S, x, x, x, 0, _x(xp, (1, 3)))
    _raises("x0", training_losses, S, x, _x(xp, (1, 3)), x, 0, x)
    _raises("weighting", training_losses, S, x, x, x, 0, x, weighting="max_snr")
    _raises("x0", vlb_terms, S, x, _x(xp, (2, 1)), x, 0)
    _raises("num_bins", discretized_gaussian_log_likelihood, x, x, x, num_bins=1)


def test_zero_terminal_snr_refuses_eps_prediction(xp):
    z = Schedule.linear(10, 1e-3, 0.2).rescale_zero_terminal_snr()
    x = _x(xp)
    _raises("prediction", ddpm_step, z, x, x, 9, x, prediction="eps")


# --------------------------------------------------------------------------- issue 12, item 11
def test_ddpm_step_noise_none_is_an_error_naming_noise_except_at_index_0(xp):
    x = _x(xp)
    _raises("noise", ddpm_step, S, x, x, 5, None)  # was an AttributeError deep inside
    _raises("noise", ddpm_step, S, x, x, as_t([0, 3], xp), None)
    # Index 0 (the paper's t = 1) adds no noise (Algorithm 2), so None is allowed there.
    rng = np.random.default_rng(0)
    eps, x_t = (asarray(rng.standard_normal((2, 3)), xp) for _ in range(2))
    zeros = _x(xp)
    for t in (0, as_t([0, 0], xp)):
        got, want = ddpm_step(S, eps, x_t, t, None), ddpm_step(S, eps, x_t, t, zeros)
        assert_close(got.x_prev, to_numpy(want.x_prev), xp=xp, dtype="float64", factor=1)


@pytest.mark.parametrize("build, names", [
    (lambda: Schedule.linear(1000, 0.5, 0.9), ("beta_start", "beta_end", "num_timesteps")),
    (lambda: Schedule.quadratic(1000, 0.5, 0.9), ("beta_start", "beta_end", "num_timesteps")),
    (lambda: Schedule.sigmoid(2000, 0.3, 0.6), ("beta_start", "beta_end", "num_timesteps")),
    (lambda: Schedule.scaled_linear(1000, 0.5, 0.9), ("beta_start", "beta_end", "num_timesteps")),
    (lambda: Schedule.from_betas(np.full(400, 0.9)), ("betas",)),
])
def test_betas_that_underflow_alphas_cumprod_are_refused_naming_them(build, names):
    """Schedule.linear(1000, 0.5, 0.9) used to warn of an overflow and later blame zero SNR."""
    with pytest.raises(ValueError, match=r"alphas_cumprod below the smallest float64 .* at step \d+") as info:
        build()
    for name in names:
        assert re.search(rf"\b{name}\b", str(info.value)), (name, str(info.value))


def test_every_beta_constructor_argument_is_checked():
    for bad in (0.0, 1.0, -0.1, float("nan"), float("inf")):
        for make in (Schedule.linear, Schedule.quadratic, Schedule.sigmoid, Schedule.scaled_linear):
            _raises("beta_start", make, 10, bad, 0.02)
            _raises("beta_end", make, 10, 1e-4, bad)
    _raises("s", Schedule.cosine, 10, float("inf"))


@pytest.mark.parametrize("bad", [float("nan"), 1.0, 2.0, -0.5])
def test_sample_timesteps_refuses_u_outside_0_1(xp, bad):
    u = asarray(np.array([0.25, bad]), xp)
    with pytest.raises(ValueError, match=r"^u must lie in \[0, 1\).*got values in"):
        sample_timesteps(uniform_weights(10), u)
    _raises("u", sample_timesteps, uniform_weights(10), as_t([0, 1], xp))  # integers are not draws


def _zero_model(x, t):  # noqa: ARG001
    return x * 0.0


@pytest.mark.parametrize("lam", [1.5, -0.1, float("nan"), [0.5, 1.5], [0.5, 0.5, 0.5]])
def test_interpolate_refuses_a_mixing_weight_outside_0_1(xp, lam):
    x = _x(xp)
    _raises("lam", interpolate, S, _zero_model, x, x, lam, 3, x, x, lambda i: x)


@pytest.mark.parametrize("bad", [1.5, -1.01, float("nan")])
def test_bits_per_dim_refuses_x0_outside_minus_1_1(xp, bad):
    x0 = asarray(np.array([[0.0, 1.0, -1.0], [0.5, bad, 0.0]]), xp)
    with pytest.raises(ValueError, match=r"^x0 must hold data scaled to \[-1, 1\].*got values in"):
        bits_per_dim(S, _zero_model, x0, lambda i: x0 * 0.0)
