r"""DPM-Solver++(2M) and SDE-DPM-Solver++(2M) (Lu et al. 2022), steps of a respaced chain.

Both solve the diffusion ODE (or SDE) in :math:`\lambda = \log(\alpha/\sigma)`, with
:math:`\alpha_i = \sqrt{\bar\alpha_i}`, :math:`\sigma_i = \sqrt{1-\bar\alpha_i}` on the
chain's own index i, from the data prediction :math:`\hat x_0` (after clipping or
thresholding). One step goes from index i to i - 1 (index -1: :math:`\sigma = 0`, the data),
with :math:`h = \lambda_{i-1} - \lambda_i` and :math:`r = (\lambda_i - \lambda_{i+1}) / h`
(docs/equations.md, "DPM-Solver++"):

.. math::
    D = \hat x_0^{(i)} + \tfrac{1}{2r}\,(\hat x_0^{(i)} - \hat x_0^{(i+1)})

    x_{i-1} = \tfrac{\sigma_{i-1}}{\sigma_i}\,x_i + \alpha_{i-1}(1 - e^{-h})\,D
    \quad\text{(2M, midpoint)}

    x_{i-1} = \tfrac{\sigma_{i-1}}{\sigma_i}e^{-h}\,x_i + \alpha_{i-1}(1 - e^{-2h})\,D
    + \sigma_{i-1}\sqrt{1 - e^{-2h}}\,z \quad\text{(SDE 2M, midpoint)}

The Heun correction replaces the midpoint's :math:`\tfrac{1}{2}(1 - e^{-h})` weight of
:math:`(\hat x_0^{(i)} - \hat x_0^{(i+1)})/r` by :math:`(e^{-h} - 1)/h + 1` (SDE:
:math:`(1 - e^{-2h})/(-2h) + 1`). The first step of a chain and the last (to
:math:`\sigma = 0`, where the step returns :math:`\hat x_0` itself) are first order
(:math:`D = \hat x_0`): diffusers' ``DPMSolverMultistepScheduler`` defaults
(``algorithm_type="dpmsolver++"`` / ``"sde-dpmsolver++"``, ``solver_order=2``,
``lower_order_final``, ``final_sigmas_type="zero"``).

Every coefficient is a float64 table of the schedule, built once (``Schedule.add_tables``)
and gathered per sample like the others: a step is one gather and one linear combination,
with no host read, traceable under ``jax.jit`` and capturable in a CUDA graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ddpm_core._arith import lincomb
from ddpm_core._namespace import cast_like, namespace, upcast
from ddpm_core.checks import as_timesteps, check_batch, check_choice, check_same_shape
from ddpm_core.parameterization import PREDICTIONS, _check_zero_snr, _clip_x0, _x0_eps
from ddpm_core.samplers import StepResult
from ddpm_core.schedules import Schedule

__all__ = ["SOLVER_TYPES", "dpm_solver_tables", "dpmpp_2m_sde_step", "dpmpp_2m_step"]

SOLVER_TYPES = ("midpoint", "heun")  # the second-order correction (diffusers' solver_type)

_ODE = ("dpm_x", "dpm_0")  # x_i's and x0_hat's coefficients of the first-order ODE step
_SDE = ("dpm_sde_x", "dpm_sde_0", "dpm_sde_z")


def dpm_solver_tables(schedule: Schedule) -> dict[str, np.ndarray]:
    """The per-index float64 coefficients (T,) of both solvers on ``schedule`` (its own
    indices; index i steps to i - 1).

    ``dpm_x``, ``dpm_0``: the first-order ODE step's weights of x_i and D; ``dpm_midpoint``,
    ``dpm_heun``: the weight of (x0_hat_i - x0_hat_{i+1}), 0 where the step is first order
    (i = 0, the step to sigma = 0, and i = T - 1, which has no earlier step); ``dpm_sde_*``
    the same for the SDE step and ``dpm_sde_z`` the weight of its noise.
    """
    abar = schedule.alphas_cumprod
    alpha, sigma = np.sqrt(abar), np.sqrt(1.0 - abar)
    alpha_s, sigma_s = np.append(1.0, alpha[:-1]), np.append(0.0, sigma[:-1])  # index i - 1
    lam = np.log(alpha) - np.log(sigma)
    emh = (sigma_s * alpha) / (alpha_s * sigma)  # exp(-h), 0 at i = 0 (sigma_{-1} = 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.append(np.inf, lam[:-1] - lam[1:])  # lambda_{i-1} - lambda_i
        h_prev = np.append(lam[:-1] - lam[1:], np.nan)  # lambda_i - lambda_{i+1}
        second = np.arange(len(abar)) > 0
        second[-1] = False
        r = np.where(second, h_prev / np.where(second, h, 1.0), 1.0)
        hs = np.where(second, h, 1.0)
        ode_mid = 0.5 * alpha_s * (1.0 - emh) / r
        ode_heun = alpha_s * ((emh - 1.0) / hs + 1.0) / r
        sde_mid = 0.5 * alpha_s * (1.0 - emh**2) / r
        sde_heun = alpha_s * ((1.0 - emh**2) / (-2.0 * hs) + 1.0) / r
    zero = np.zeros_like(abar)
    return {
        "dpm_x": sigma_s / sigma, "dpm_0": alpha_s * (1.0 - emh),
        "dpm_midpoint": np.where(second, ode_mid, zero), "dpm_heun": np.where(second, ode_heun, zero),
        "dpm_sde_x": sigma_s / sigma * emh, "dpm_sde_0": alpha_s * (1.0 - emh**2),
        "dpm_sde_z": sigma_s * np.sqrt(1.0 - emh**2),
        "dpm_sde_midpoint": np.where(second, sde_mid, zero), "dpm_sde_heun": np.where(second, sde_heun, zero),
    }


def dpmpp_2m_step(schedule: Schedule, model_output: Any, x_t: Any, i: Any, x0_prev: Any = None, *,
                  start: int | None = None, prediction: str = "eps", clip: Any = None,
                  threshold: float | None = None, solver_type: str = "midpoint") -> StepResult:
    """One DPM-Solver++(2M) step from index ``i`` of ``schedule`` to ``i - 1`` (module docstring).

    Parameters
    ----------
    model_output, x_t : (B, C, ...); ``model_output`` is the prediction (a learned variance
        head already split off, as ``ddpm_core.reverse_step`` does)
    i : int or int array (B,) in [0, T), the schedule's own index
    x0_prev : (B, C, ...), the x0_hat the previous step of this chain returned, or None at
        the chain's first step
    start : the chain's first index (default T - 1): there the step is first order whatever
        ``x0_prev`` holds (so a compiled chain may carry any array into its first step)
    prediction, clip, threshold : see ``ddpm_core.parameterization``
    solver_type : {"midpoint", "heun"}, the second-order correction

    Returns
    -------
    StepResult(x_prev, x0_hat); at i = 0, x_prev is x0_hat (the step to sigma = 0).

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.linear(1000).respace([0, 500, 999])
    >>> x = np.ones((1, 2)); eps = np.zeros((1, 2))
    >>> dpmpp_2m_step(s, eps, x, 0, None).x_prev.tolist() == dpmpp_2m_step(s, eps, x, 0, None).x0_hat.tolist()
    True
    """
    return _step(schedule, model_output, x_t, i, x0_prev, None, start, prediction, clip, threshold,
                 solver_type, sde=False)


def dpmpp_2m_sde_step(schedule: Schedule, model_output: Any, x_t: Any, i: Any, x0_prev: Any = None,
                      noise: Any = None, *, start: int | None = None, prediction: str = "eps", clip: Any = None,
                      threshold: float | None = None, solver_type: str = "midpoint") -> StepResult:
    """One SDE-DPM-Solver++(2M) step from index ``i`` to ``i - 1``; ``noise`` (B, C, ...)
    standard normal draws (unused, and may be None, where every i is 0). The other
    arguments are :func:`dpmpp_2m_step`'s."""
    return _step(schedule, model_output, x_t, i, x0_prev, noise, start, prediction, clip, threshold,
                 solver_type, sde=True)


def _step(schedule, pred, x_t, i, x0_prev, noise, start, prediction, clip, threshold, solver_type, *, sde):
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("solver_type", solver_type, SOLVER_TYPES)
    check_batch("x_t", x_t)
    check_same_shape("x_t", x_t, "model_output", pred)
    if x0_prev is not None:
        check_same_shape("x_t", x_t, "x0_prev", x0_prev)
    _check_zero_snr(schedule, prediction)
    T = schedule.num_timesteps
    start = T - 1 if start is None else start
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < T:
        raise ValueError(f"start must be an integer in [0, {T}), the chain's first index; got start={start!r}")
    i = as_timesteps(i, x_t, T, name="i", scalar_ok=True, gathered=True)
    if sde and noise is None and not (isinstance(i, int) and i == 0):
        raise ValueError("noise is required for the SDE solver where i > 0 (noise=None only at index 0)")
    if noise is not None:
        check_same_shape("x_t", x_t, "noise", noise)
    xp = namespace(x_t)
    if not schedule.has_tables("dpm_x"):
        schedule.add_tables(dpm_solver_tables(schedule))
    x = upcast(x_t, xp)
    x0 = _x0_eps(schedule, upcast(pred, xp), x, i, prediction, xp)[0]
    if clip is not None or threshold is not None:
        x0 = _clip_x0(x0, clip, threshold, xp)
    names = (_SDE if sde else _ODE) + (f"dpm{'_sde' if sde else ''}_{solver_type}",)
    coefs = schedule.coefs(names, i, x, xp)
    cx, c0, c1 = coefs[0], coefs[1], coefs[-1]
    if x0_prev is None:
        c1 = 0.0
    elif isinstance(i, int):
        c1 = 0.0 if i == start else c1
    else:
        c1 = c1 * xp.reshape(xp.astype(i != start, c1.dtype), (-1,) + (1,) * (x.ndim - 1))
    terms = [(cx, x), (c0, x0)]
    if not (isinstance(c1, float) and c1 == 0.0):
        terms += [(c1, x0), (-c1, upcast(x0_prev, xp))]
    if sde and noise is not None:
        terms.append((coefs[2], upcast(noise, xp)))
    x_prev = lincomb(xp, *terms)
    return StepResult(cast_like(x_prev, x_t, xp), cast_like(x0, x_t, xp))
