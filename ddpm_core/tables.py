"""Schedule tables on devices: a cache of each table per namespace, device and dtype, and the gathers.

The float64 NumPy tables of a :class:`~ddpm_core.schedules.Schedule` are converted on demand
(cached on the schedule) to the namespace, device and dtype of the arrays they meet, and
gathered at a timestep vector in one ``take`` per step. ``Schedule`` gets these lookups from
:class:`TableLookups`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ddpm_core._arith import broadcast_to_batch, take_rows
from ddpm_core._namespace import device_of, is_concrete, is_torch, namespace
from ddpm_core.checks import check_choice, check_range_now

__all__ = ["TABLES", "TableLookups", "TablesAt"]

# The tables a Schedule derives from its betas (its attributes of these names).
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


class TableLookups:
    """The device-side lookups of a :class:`~ddpm_core.schedules.Schedule` (a base class of it).

    Reads the schedule's float64 tables by name and caches their conversions in the
    schedule's ``_cache`` dict.
    """

    def add_tables(self, tables: dict[str, np.ndarray]) -> None:
        """Register further float64 tables (T,) of this schedule under their names, read by
        :meth:`coefs` like the schedule's own (e.g. a sampler's per-step coefficients,
        ``ddpm_core.dpm_solver``); registered once, never replaced."""
        derived = self._cache.setdefault("derived", {})  # type: ignore[attr-defined]
        for name, values in tables.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (self.num_timesteps,):  # type: ignore[attr-defined]
                raise ValueError(f"table {name!r} must have shape ({self.num_timesteps},), "  # type: ignore[attr-defined]
                                 f"got {values.shape}")
            values.setflags(write=False)
            derived.setdefault(name, values)

    def has_tables(self, *names: str) -> bool:
        """True when every table of ``names`` was registered with :meth:`add_tables`."""
        derived = self._cache.get("derived", {})  # type: ignore[attr-defined]
        return all(n in derived for n in names)

    def table(self, name: str, *, xp: Any, device: Any = None, dtype: Any = None) -> Any:
        """Table ``name`` as an array of namespace ``xp`` (cached per device and dtype).

        Warns once per (namespace, device, dtype) when ``dtype`` cannot hold abar_t apart
        from 1 for some t (float16, bfloat16): such tables are wrong near t = 0.
        """
        check_choice("name", name, TABLES)
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


def _array(schedule: TableLookups, name: str) -> np.ndarray:
    """The float64 table ``name``: the schedule's own, or one registered with ``add_tables``."""
    derived = schedule._cache.get("derived")  # type: ignore[attr-defined]
    if derived is not None and name in derived:
        return derived[name]
    return getattr(schedule, name)


def _signed(schedule: TableLookups, name: str) -> np.ndarray:
    """Table ``name``, or its negation for ``-name``."""
    return -_array(schedule, name[1:]) if name[0] == "-" else _array(schedule, name)


def _scalar(schedule: TableLookups, name: str, t: int) -> float:
    """Entry ``t`` of table ``name`` (or ``-name``) as a Python float."""
    return -float(_array(schedule, name[1:])[t]) if name[0] == "-" else float(_array(schedule, name)[t])


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
