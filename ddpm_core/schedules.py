r"""Noise schedules: one table of T betas in float64, everything else derived from it.

Indexing (read this once): the paper counts diffusion steps t = 1..T. Every table and every
function here uses the 0-based index ``i = t - 1`` in ``[0, T)``. Index 0 is the paper's
t = 1: the decoder step, where the sampler adds no noise and the variational bound's term is
the discretized decoder L_0 (eq. 13).

.. math::
    \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{s \le t} \alpha_s, \qquad
    \mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)

Tables are computed once in float64 NumPy and converted on demand (cached) to the
namespace, device and dtype of the arrays they meet.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ddpm_core.tables import TABLES, TableLookups

__all__ = ["SCHEDULES", "SCHEDULE_ENTRIES", "Schedule", "TABLES"]

# the named schedules, each a Schedule constructor of that name
SCHEDULES = ("linear", "quadratic", "sigmoid", "scaled_linear", "cosine")
# what a schedule entry (run.json's "schedule", a diffusers config) may name: one of them or explicit betas
SCHEDULE_ENTRIES = (*SCHEDULES, "betas")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _check_betas(betas: np.ndarray) -> None:
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"betas must be a non-empty 1-D array (T >= 1), got shape {betas.shape}")
    if not np.all(np.isfinite(betas)):
        raise ValueError("betas must be finite, got NaN or inf")
    if np.any(betas[:-1] <= 0) or np.any(betas[:-1] >= 1) or not 0 < betas[-1] <= 1:
        raise ValueError(
            "betas must lie in (0, 1) (the last may be 1 for zero terminal SNR), got values in "
            f"[{betas.min():.6g}, {betas.max():.6g}]"
        )
    _check_no_underflow(betas, "betas")


def _check_no_underflow(betas: np.ndarray, given: str) -> None:
    """Raise unless alphas_cumprod stays a normal float64 (> 2.2e-308) at every step.

    Past that, 1/abar overflows and x_0 cannot be recovered from x_t; only a last beta of
    exactly 1 (zero terminal SNR, chosen on purpose) may end the chain at abar = 0.
    """
    abar = np.cumprod(1.0 - betas)
    body = abar[:-1] if betas[-1] == 1.0 else abar
    low = np.flatnonzero(body < np.finfo(np.float64).tiny)
    if low.size:
        raise ValueError(
            f"{given} drive alphas_cumprod below the smallest float64 (2.2e-308) at step "
            f"{int(low[0])} of {len(betas)}, where x_0 can no longer be recovered; use smaller "
            "betas or fewer steps (only a last beta of exactly 1 may reach alphas_cumprod = 0)"
        )


def _derive_tables(betas: np.ndarray) -> dict[str, np.ndarray]:
    """All float64 tables of eqs. (4), (6), (7) and (11) from the betas."""
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)  # exactly 0 at zero terminal SNR
    # Where abar is close to 1 (small t), 1.0 - abar would lose up to half the digits of
    # 1 - abar; there -expm1(sum log1p(-beta)) keeps them (its partial sums are small, so
    # their rounding is too). Elsewhere the subtraction is exact enough and cumprod wins.
    with np.errstate(divide="ignore"):
        log_abar = np.cumsum(np.log1p(-betas))
    one_minus = np.where(abar > 0.5, -np.expm1(log_abar), 1.0 - abar)
    abar_prev = np.append(1.0, abar[:-1])
    one_minus_prev = np.append(0.0, one_minus[:-1])
    post_var = betas * one_minus_prev / one_minus
    # beta~ at index 0 is 0; its log is clipped to the value at index 1 (improved DDPM).
    first = post_var[1] if len(betas) > 1 else betas[0]
    post_logvar = np.log(np.append(first, post_var[1:]))
    # "fixed large" uses beta_t, with the clipped beta~ (its value at index 1) at index 0 for a
    # better decoder likelihood (Ho et al.'s code).
    large_var = np.append(first, betas[1:])
    with np.errstate(divide="ignore"):
        return {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": np.sqrt(abar),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(one_minus),
            "sqrt_recip_alphas_cumprod": 1.0 / np.sqrt(abar),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(one_minus / abar),
            "log_betas": np.log(betas),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_logvar,
            # At index 0 the posterior is x_0 itself: coefficients exactly 1 and 0.
            "posterior_mean_coef1": np.append(1.0, (betas * np.sqrt(abar_prev) / one_minus)[1:]),
            "posterior_mean_coef2": one_minus_prev * np.sqrt(alphas) / one_minus,
            "fixed_large_variance": large_var,
            "fixed_large_log_variance": np.log(large_var),
            # The ancestral step's noise scale; 0 at index 0, where Algorithm 2 adds no noise.
            "posterior_std": np.sqrt(post_var),
            "fixed_large_step_std": np.append(0.0, np.sqrt(betas[1:])),
            "snr": abar / one_minus,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule(TableLookups):
    r"""A frozen diffusion schedule: T betas and every table derived from them (float64).

    Parameters
    ----------
    betas : array_like, shape (T,)
        beta_t for the 0-based steps i = 0..T-1, each in (0, 1); the last may be exactly 1
        (zero terminal SNR).
    timesteps : array_like of int, shape (T,), optional
        The index in the *original* chain that each step of this schedule stands for: the
        identity for a plain schedule, the kept steps for a respaced one. Models are always
        called with these original indices.

    Attributes
    ----------
    num_timesteps : int
        T.
    betas, alphas, alphas_cumprod, ... : numpy.ndarray, float64, shape (T,)
        The tables listed in ``ddpm_core.schedules.TABLES``; read-only.

    Examples
    --------
    >>> s = Schedule.linear(1000)
    >>> s.num_timesteps, round(float(s.alphas_cumprod[-1]), 7)
    (1000, 4.04e-05)
    """

    betas: np.ndarray
    timesteps: Any = None  # becomes a read-only int64 array in __post_init__

    # Derived in __post_init__ (float64, read-only); see TABLES.
    alphas: np.ndarray = dataclasses.field(init=False, repr=False)
    alphas_cumprod: np.ndarray = dataclasses.field(init=False, repr=False)
    alphas_cumprod_prev: np.ndarray = dataclasses.field(init=False, repr=False)
    sqrt_alphas_cumprod: np.ndarray = dataclasses.field(init=False, repr=False)
    sqrt_one_minus_alphas_cumprod: np.ndarray = dataclasses.field(init=False, repr=False)
    sqrt_recip_alphas_cumprod: np.ndarray = dataclasses.field(init=False, repr=False)
    sqrt_recipm1_alphas_cumprod: np.ndarray = dataclasses.field(init=False, repr=False)
    log_betas: np.ndarray = dataclasses.field(init=False, repr=False)
    posterior_variance: np.ndarray = dataclasses.field(init=False, repr=False)
    posterior_log_variance_clipped: np.ndarray = dataclasses.field(init=False, repr=False)
    posterior_mean_coef1: np.ndarray = dataclasses.field(init=False, repr=False)
    posterior_mean_coef2: np.ndarray = dataclasses.field(init=False, repr=False)
    fixed_large_variance: np.ndarray = dataclasses.field(init=False, repr=False)
    fixed_large_log_variance: np.ndarray = dataclasses.field(init=False, repr=False)
    posterior_std: np.ndarray = dataclasses.field(init=False, repr=False)
    fixed_large_step_std: np.ndarray = dataclasses.field(init=False, repr=False)
    snr: np.ndarray = dataclasses.field(init=False, repr=False)
    zero_terminal_snr: bool = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = np.array(self.betas, dtype=np.float64, copy=True)
        _check_betas(betas)
        if self.timesteps is None:
            steps = np.arange(len(betas), dtype=np.int64)
        else:
            steps = np.asarray(self.timesteps)
            if steps.shape != betas.shape or not np.issubdtype(steps.dtype, np.integer):
                raise ValueError(
                    f"timesteps must be integers of shape {betas.shape}, got {steps.dtype} "
                    f"{steps.shape}"
                )
            if np.any(np.diff(steps) <= 0) or steps[0] < 0:
                raise ValueError("timesteps must be non-negative and strictly increasing")
            steps = steps.astype(np.int64)
        for name, table in _derive_tables(betas).items():
            object.__setattr__(self, name, _readonly(table))
        object.__setattr__(self, "timesteps", _readonly(steps))
        object.__setattr__(self, "zero_terminal_snr", bool(self.alphas_cumprod[-1] == 0.0))
        object.__setattr__(self, "_cache", {})

    # ---- constructors -------------------------------------------------------------------

    @classmethod
    def linear(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> Schedule:
        """The paper's schedule: betas linear from ``beta_start`` to ``beta_end``."""
        _check_t(num_timesteps)
        _check_range(beta_start=beta_start, beta_end=beta_end)
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
        _check_no_underflow(betas, _given(num_timesteps, beta_start, beta_end))
        return cls(betas)

    @classmethod
    def quadratic(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> Schedule:
        """betas linear in sqrt(beta) from ``beta_start`` to ``beta_end`` (Ho et al.'s "quad")."""
        _check_t(num_timesteps)
        _check_range(beta_start=beta_start, beta_end=beta_end)
        root = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_timesteps)
        _check_no_underflow(root**2, _given(num_timesteps, beta_start, beta_end))
        return cls(root**2)

    @classmethod
    def scaled_linear(
        cls, num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> Schedule:
        """Latent-diffusion's "scaled linear": quadratic with Stable Diffusion's defaults."""
        return cls.quadratic(num_timesteps, beta_start, beta_end)

    @classmethod
    def sigmoid(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> Schedule:
        """betas = beta_start + (beta_end - beta_start) * sigmoid(linspace(-6, 6, T))."""
        _check_t(num_timesteps)
        _check_range(beta_start=beta_start, beta_end=beta_end)
        s = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, num_timesteps)))
        betas = beta_start + (beta_end - beta_start) * s
        _check_no_underflow(betas, _given(num_timesteps, beta_start, beta_end))
        return cls(betas)

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
        r"""Nichol & Dhariwal's cosine schedule.

        .. math:: \bar\alpha(t) = f(t)/f(0),\quad f(t) = \cos^2\!\Big(\frac{t/T + s}{1 + s}\,
                  \frac{\pi}{2}\Big),\quad \beta_t = \min(1 - \bar\alpha(t)/\bar\alpha(t-1),
                  \beta_{max})
        """
        _check_t(num_timesteps)
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"s must be a finite number > 0, got s={s}")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must lie in (0, 1), got max_beta={max_beta}")
        grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
        f = np.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        return cls(np.minimum(1.0 - f[1:] / f[:-1], max_beta))

    @classmethod
    def from_betas(cls, betas: Any) -> Schedule:
        """A schedule from user-given betas, shape (T,), each in (0, 1)."""
        return cls(np.asarray(betas, dtype=np.float64))

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Any) -> Schedule:
        """A schedule from abar_t, shape (T,): strictly decreasing in [0, 1)."""
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or abar.shape[0] < 1:
            raise ValueError(f"alphas_cumprod must be a non-empty 1-D array, got {abar.shape}")
        if not np.all(np.isfinite(abar)):
            raise ValueError("alphas_cumprod must be finite, got NaN or inf")
        if np.any(abar >= 1) or np.any(abar < 0) or np.any(np.diff(abar) >= 0):
            raise ValueError("alphas_cumprod must be strictly decreasing with values in [0, 1)")
        return cls(1.0 - abar / np.append(1.0, abar[:-1]))

    # ---- derived schedules --------------------------------------------------------------

    @property
    def num_timesteps(self) -> int:
        """T, the number of steps of this chain."""
        return int(self.betas.shape[0])

    def rescale_zero_terminal_snr(self) -> Schedule:
        r"""Rescale so that SNR(T) = 0 exactly and abar at index 0 is kept (Lin et al. 2024).

        sqrt(abar) is shifted so its last value is 0 and scaled so its first is unchanged;
        the last beta becomes 1. Use ``prediction="v"`` or ``"x0"`` with such a schedule: eps
        carries no information about x_0 at SNR 0.
        """
        root = np.sqrt(self.alphas_cumprod)
        first, last = root[0], root[-1]
        root = (root - last) * first / (first - last)
        abar = root**2
        betas = 1.0 - abar / np.append(1.0, abar[:-1])
        betas[-1] = 1.0
        return Schedule(betas, self.timesteps)

    def respace(self, spacing: Any, *, timestep_spacing: str = "linspace") -> Schedule:
        """Keep a subset of the steps and re-derive betas so every step stays exact.

        The kept steps keep their abar; the new beta of kept step k is
        1 - abar_k / abar_{k-1} over the previous *kept* step, so the ancestral step and the
        posterior are correct on the shorter chain. See ``ddpm_core.respacing`` for the
        accepted ``spacing`` forms.
        """
        from ddpm_core.respacing import space_timesteps

        keep = space_timesteps(self.num_timesteps, spacing, timestep_spacing=timestep_spacing)
        abar = self.alphas_cumprod[keep]
        betas = 1.0 - abar / np.append(1.0, abar[:-1])
        return Schedule(betas, self.timesteps[keep])

    def __repr__(self) -> str:
        respaced = "" if np.array_equal(self.timesteps, np.arange(len(self.betas))) else ", respaced"
        return (
            f"Schedule(T={self.num_timesteps}, beta=[{self.betas[0]:.6g} .. {self.betas[-1]:.6g}], "
            f"abar_T={self.alphas_cumprod[-1]:.4g}{respaced})"
        )


def _check_t(num_timesteps: Any) -> None:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)):
        raise TypeError(f"num_timesteps must be an int, got {num_timesteps!r}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got num_timesteps={num_timesteps}")


def _given(num_timesteps: int, beta_start: float, beta_end: float) -> str:
    """The constructor arguments an error names."""
    return f"beta_start={beta_start}, beta_end={beta_end} with num_timesteps={num_timesteps}"


def _check_range(*, beta_start: float, beta_end: float) -> None:
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not (math.isfinite(value) and 0 < value < 1):
            raise ValueError(f"{name} must lie in (0, 1), got {name}={value}")

