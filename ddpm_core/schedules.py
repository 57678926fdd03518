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
import warnings
from typing import Any

import numpy as np

from ddpm_core._namespace import (
    broadcast_to_batch,
    check_range_now,
    device_of,
    is_concrete,
    is_torch,
    namespace,
    take_rows,
)

__all__ = ["Schedule", "TABLES"]

TABLES = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "log_betas",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "fixed_large_variance",
    "fixed_large_log_variance",
    "posterior_std",
    "fixed_large_step_std",
    "snr",
)

_SPACINGS = ("linspace", "leading", "trailing")


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
    # "fixed large" uses beta_t, with beta~ at index 0 for a better decoder likelihood (Ho et al.).
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
class Schedule:
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

    # ---- lookups ------------------------------------------------------------------------

    def table(self, name: str, *, xp: Any, device: Any = None, dtype: Any = None) -> Any:
        """Table ``name`` as an array of namespace ``xp`` (cached per device and dtype).

        Warns once per (namespace, device, dtype) when ``dtype`` cannot hold abar_t apart
        from 1 for some t (float16, bfloat16): such tables are wrong near t = 0.
        """
        if name not in TABLES:
            raise ValueError(f"name must be one of {TABLES}, got name={name!r}")
        dtype = xp.float64 if dtype is None else dtype
        key = (name, xp.__name__, str(device), str(dtype))
        cached = self._cache.get(key)  # type: ignore[attr-defined]
        if cached is not None:
            return cached
        # No lock: two threads racing here build equal values, and dict stores are atomic.
        value = _convert(getattr(self, name), xp, device, dtype)
        if is_concrete(value):  # a tracer must not outlive its trace
            if name == "alphas_cumprod":
                _warn_if_rounds_to_one(value, xp, dtype)
            self._cache[key] = value  # type: ignore[attr-defined]
        return value

    def lookup(self, name: str, t: Any, like: Any, *, dtype: Any = None) -> Any:
        """``table[t]`` shaped (B, 1, ..., 1) to broadcast against ``like``.

        ``t`` must already be a validated integer vector of shape (B,) in ``like``'s namespace
        (``ddpm_core._namespace.as_timesteps``). ``dtype`` defaults to ``like.dtype``.
        """
        xp = namespace(like)
        tab = self.table(name, xp=xp, device=device_of(like), dtype=dtype or like.dtype)
        return broadcast_to_batch(xp.take(tab, t, axis=0), like.ndim, xp)

    def coefs(self, names: tuple[str, ...], t: Any, like: Any, xp: Any) -> tuple[Any, ...]:
        """Several tables at ``t`` at once: the hot path of every step.

        A Python int ``t`` gives Python floats (float64, no device work). A validated integer
        vector (B,) gives arrays (B, 1, ..., 1) in ``like``'s dtype, gathered in one ``take``
        from a (K, T) table that is built once per namespace, device and dtype. A name with a
        leading ``-`` gives the negated table (so a subtraction costs no negation on device).
        """
        if isinstance(t, int):
            return tuple(_scalar(self, n, t) for n in names)
        if type(t) is TablesAt:
            try:
                return tuple([t.values[n] for n in names])
            except KeyError:  # not prefetched: gather at the plain vector
                t = t.t
        try:  # under PyTorch the index_select's bounds check is t's range check
            return take_rows(self._stacked(names, like, xp, 0), t, xp)
        except (IndexError, RuntimeError):  # raise the ValueError naming t if that is the cause
            check_range_now(t, self.num_timesteps)
            raise

    def tables_at(self, names: tuple[str, ...], t: Any, like: Any, xp: Any) -> Any:
        """Prefetch ``names`` at ``t`` in one gather, for the ``coefs`` calls of one step.

        A Python int ``t`` is returned as is (its coefficients cost no device work). A vector
        gives a ``TablesAt`` that ``coefs`` answers from; names it lacks are gathered then.
        """
        if isinstance(t, int):
            return t
        return TablesAt(t, dict(zip(names, self.coefs(names, t, like, xp), strict=True)))

    def prev_coefs(self, names: tuple[str, ...], after: Any, like: Any, xp: Any) -> tuple[Any, ...]:
        """Tables at a DDIM target step t_prev in [-1, T), given as ``after`` = t_prev + 1.

        t_prev = -1 is x_0 itself: there ``alphas_cumprod`` and ``sqrt_alphas_cumprod`` are 1
        and ``sqrt_one_minus_alphas_cumprod`` is 0. The tables have that value prepended, so
        ``after`` (a Python int, or a vector gathered in one ``take`` like ``coefs``) indexes
        them directly; the caller computes t_prev + 1 once and reuses it.
        """
        if isinstance(after, int):
            return tuple(_AT_X0[n] if after == 0 else _scalar(self, n, after - 1) for n in names)
        try:
            return take_rows(self._stacked(names, like, xp, 1), after, xp)
        except (IndexError, RuntimeError):
            check_range_now(after - 1, self.num_timesteps, name="t_prev", minimum=-1)
            raise

    def _stacked(self, names: tuple[str, ...], like: Any, xp: Any, before: int) -> Any:
        """(K, before + T, 1, ..., 1) table of ``names`` in ``like``'s namespace, device, dtype.

        ``before`` = 1 prepends each table's value at index -1 (``_AT_X0``); the trailing unit
        axes make a gather along axis 1 broadcast against ``like`` with no reshape.
        """
        dev = like.device if is_torch(xp) else device_of(like)
        key = (names, xp.__name__, dev, like.dtype, like.ndim, before)  # devices, dtypes hash
        table = self._cache.get(key)  # type: ignore[attr-defined]
        if table is None:
            rows = [_signed(self, n) for n in names]
            if before:
                rows = [np.append(_AT_X0[n], r) for n, r in zip(names, rows, strict=True)]
            stacked = np.stack(rows)
            table = _convert(stacked.reshape(stacked.shape + (1,) * (like.ndim - 1)), xp, dev, like.dtype)
            if is_concrete(table):
                self._cache[key] = table  # type: ignore[attr-defined]
        return table

    def __repr__(self) -> str:
        respaced = "" if np.array_equal(self.timesteps, np.arange(len(self.betas))) else ", respaced"
        return (
            f"Schedule(T={self.num_timesteps}, beta=[{self.betas[0]:.6g} .. {self.betas[-1]:.6g}], "
            f"abar_T={self.alphas_cumprod[-1]:.4g}{respaced})"
        )

    # ---- diffusers ----------------------------------------------------------------------

    @classmethod
    def from_diffusers_config(cls, config: Any) -> Schedule:
        """The schedule of a diffusers ``DDPMScheduler`` config (``scheduler_config.json``).

        Covers ``beta_schedule`` linear, scaled_linear, squaredcos_cap_v2 and sigmoid, given
        ``trained_betas`` and ``rescale_betas_zero_snr``; the tables are computed in float64.
        Any field that cannot be represented raises ``ValueError`` naming it (see
        :func:`ddpm_core.diffusers_config.read_scheduler_config`, which also returns the
        prediction, variance and clipping).

        Examples
        --------
        >>> float(Schedule.from_diffusers_config({"beta_schedule": "linear"}).betas[-1])
        0.02
        """
        from ddpm_core.diffusers_config import read_scheduler_config, schedule_from_entry

        return schedule_from_entry(read_scheduler_config(config).schedule)

    def to_diffusers_config(self, *, prediction: str = "eps", variance: str = "fixed_small",
                            clip: Any = 1.0) -> dict[str, Any]:
        """A diffusers ``DDPMScheduler`` config (JSON-able dict) that reproduces this schedule.

        The linear and cosine schedules are written by name, any other as ``trained_betas``
        (diffusers rounds those to float32). ``prediction``, ``variance`` and ``clip`` (x0
        clipped to [-clip, clip], or None) become ``prediction_type``, ``variance_type`` and
        ``clip_sample``/``clip_sample_range``. A respaced schedule raises ``ValueError``.

        Examples
        --------
        >>> Schedule.linear(1000).to_diffusers_config(variance="fixed_large")["beta_schedule"]
        'linear'
        """
        from ddpm_core.diffusers_config import schedule_entry, write_scheduler_config

        return write_scheduler_config(schedule_entry(self), prediction=prediction,
                                      variance=variance, clip=clip)


class TablesAt:
    """Schedule tables gathered at a validated timestep vector ``t`` (``Schedule.tables_at``).

    Pass it in place of ``t`` to code that only reads coefficients through ``Schedule.coefs``.
    """

    __slots__ = ("t", "values")

    def __init__(self, t: Any, values: dict[str, Any]) -> None:
        self.t = t  # the integer vector (B,)
        self.values = values  # table name -> (B, 1, ..., 1) coefficients


# The chain's end (DDIM's t_prev = -1, x_0 itself): abar = 1.
_AT_X0 = {"alphas_cumprod": 1.0, "sqrt_alphas_cumprod": 1.0, "sqrt_one_minus_alphas_cumprod": 0.0}


def _signed(schedule: Schedule, name: str) -> np.ndarray:
    """Table ``name``, or its negation for ``-name``."""
    return -getattr(schedule, name[1:]) if name[0] == "-" else getattr(schedule, name)


def _scalar(schedule: Schedule, name: str, t: int) -> float:
    """Entry ``t`` of table ``name`` (or ``-name``) as a Python float."""
    return -float(getattr(schedule, name[1:])[t]) if name[0] == "-" else float(getattr(schedule, name)[t])


def _convert(table: np.ndarray, xp: Any, device: Any, dtype: Any) -> Any:
    """``table`` as ``xp`` array; cast in NumPy where possible, so the result is a constant."""
    for name in ("float64", "float32", "float16"):
        if dtype == getattr(xp, name, None):
            return xp.asarray(table.astype(name), device=device)
    arr = xp.asarray(table.astype(np.float32), device=device)  # e.g. bfloat16
    return xp.astype(arr, dtype)


def _warn_if_rounds_to_one(abar: Any, xp: Any, dtype: Any) -> None:
    try:
        hits = bool(xp.any(abar == 1.0))
    except Exception:  # noqa: BLE001 - tracer: the check runs on the first eager use
        return
    if hits:
        warnings.warn(
            f"alphas_cumprod rounds to 1 for some t in dtype {dtype}; schedule tables must be "
            "looked up in float32 or float64",
            RuntimeWarning,
            stacklevel=3,
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

