"""Bad input gives a clear error naming the argument (never a silent broadcast)."""

from __future__ import annotations

import numpy as np
import pytest
from ddpm_testing import as_t, asarray

from ddpm_core.forward import q_mean_variance, q_sample, q_step_sample
from ddpm_core.losses import discretized_gaussian_log_likelihood, training_losses, vlb_terms
from ddpm_core.parameterization import p_mean_variance, predict_x0
from ddpm_core.posterior import q_posterior
from ddpm_core.samplers import ddim_step, ddpm_step
from ddpm_core.schedules import Schedule

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
