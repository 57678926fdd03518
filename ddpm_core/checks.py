"""Argument checks, one home for every layer: names and integers (``check_choice``,
``check_int``, used by the core, the models, interop and the application alike), and the
core's array checks: shapes, timestep vectors, and value checks that never read the host
under PyTorch (``torch._assert_async``) and skip traced values (``jax.jit``,
``torch.compile``). Each error names the argument, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

from ddpm_core._namespace import (
    _torch,
    device_of,
    index_dtype,
    is_concrete,
    is_torch,
    namespace,
)

__all__ = [
    "check_choice",
    "check_int",
    "check_batch",
    "check_same_shape",
    "as_timesteps",
    "check_range",
    "check_range_now",
    "check_all",
]


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``.

    >>> check_choice("prediction", "noise", ("eps", "x0"))
    Traceback (most recent call last):
    ...
    ValueError: prediction must be one of 'eps', 'x0'; got prediction='noise'
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {name}={value!r}")


def check_int(name: str, value: Any, low: int, *, optional: bool = False) -> Any:
    """``value`` as an int >= ``low`` (None passes when ``optional``), or a ValueError naming
    ``name``, the value and the bound. A bool is not an integer here.

    >>> check_int("steps", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an integer >= 1; got 0
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def check_batch(name: str, x: Any) -> None:
    """Raise ValueError unless ``x`` has a leading batch axis."""
    if getattr(x, "ndim", 0) < 1:
        raise ValueError(f"{name} must have a leading batch axis, got shape {getattr(x, 'shape', ())}")


def check_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Raise ValueError when two arrays that must match elementwise differ in shape.

    Broadcasting between e.g. ``x_t`` and ``noise`` is never intended and would silently
    produce a wrong result, so it is refused.
    """
    if a.shape != b.shape and tuple(a.shape) != tuple(b.shape):  # same-library shapes compare fast
        raise ValueError(
            f"{name_b} must have the same shape as {name_a}: "
            f"got {name_a}.shape={tuple(a.shape)}, {name_b}.shape={tuple(b.shape)}"
        )


def as_timesteps(
    t: Any,
    like: Any,
    num_timesteps: int,
    *,
    name: str = "t",
    minimum: int = 0,
    scalar_ok: bool = False,
    check_values: bool = True,
    gathered: bool = False,
) -> Any:
    """Validate ``t`` and return it as an integer vector of shape (B,) in ``like``'s namespace.

    ``t`` is a Python int (broadcast to the batch) or an integer array of shape (B,) or ().
    Values must lie in [minimum, num_timesteps). The dtype and shape are always checked
    (metadata: no host read). The values are checked by ``check_range``, never with a host
    read under PyTorch, unless ``check_values`` is False: the validated-once path for callers
    that drew ``t`` themselves. ``gathered=True`` promises that the caller looks every value
    of ``t`` up in a schedule table (``Schedule.coefs``); under PyTorch on the CPU that
    gather's bounds check is the range check, so none is added here.
    With ``scalar_ok`` a Python int is returned as a Python int: the caller then looks up
    scalar coefficients, which costs no gather and keeps them in float64.
    """
    if type(t) is not type(like):  # an index array of the data's own library skips these
        if isinstance(t, bool) or isinstance(t, float):
            raise TypeError(f"{name} must be an integer index or integer array, got {t!r}")
    if isinstance(t, (int, np.integer)):
        t = int(t)
        if not minimum <= t < num_timesteps:
            raise ValueError(f"{name} must lie in [{minimum}, {num_timesteps}), got {name}={t}")
        if scalar_ok:
            return t
        xp = namespace(like)
        dev = device_of(like)
        return xp.full((like.shape[0],), t, dtype=index_dtype(xp, dev), device=dev)
    xp = namespace(like)
    t = _as_vector(t, like, xp, name)
    if check_values and not (gathered and is_torch(xp) and t.is_cpu):
        check_range(t, num_timesteps, name=name, minimum=minimum)
    return t


def _as_vector(t: Any, like: Any, xp: Any, name: str) -> Any:
    """``t`` as an integer vector (B,) of ``like``'s namespace ``xp``; dtype and shape checked."""
    batch = like.shape[0]
    if isinstance(t, np.ndarray) and not array_api_compat.is_numpy_namespace(xp):
        t = xp.asarray(t, device=device_of(like))  # NumPy index arrays work with any backend
    t_xp = xp if type(t) is type(like) else namespace(t)
    kind = _INDEX_KIND.get((id(t_xp), t.dtype)) or _index_kind(t_xp, t.dtype)
    if kind == "bad":
        raise TypeError(f"{name} must be an integer array, got dtype {t.dtype}")
    if kind == "widen":  # e.g. uint8: PyTorch gathers only with int32/int64 indices
        t = xp.astype(t, xp.int64)
    if t.ndim == 0:
        return xp.broadcast_to(xp.reshape(t, (1,)), (batch,))
    if t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must be a Python int or an integer array of shape ({batch},) matching the "
            f"batch, got {name}.shape={tuple(t.shape)}"
        )
    return t


_INDEX_KIND: dict[tuple[int, Any], str] = {}


def _index_kind(xp: Any, dtype: Any) -> str:
    """"bad" for a non-integer dtype, "widen" for an integer dtype PyTorch cannot gather
    with (anything but int32/int64), else "ok"; memoised in ``_INDEX_KIND`` (every step asks)."""
    if not xp.isdtype(dtype, "integral"):
        kind = "bad"
    elif is_torch(xp) and dtype not in (xp.int32, xp.int64):
        kind = "widen"
    else:
        kind = "ok"
    _INDEX_KIND[id(xp), dtype] = kind
    return kind


def check_range(t: Any, num_timesteps: int, *, name: str = "t", minimum: int = 0) -> None:
    """Raise unless every value of the integer vector ``t`` lies in [minimum, num_timesteps).

    Never a host read under PyTorch. On the CPU the check is the bounds check of one
    ``index_select`` into a cached vector of length ``num_timesteps - minimum``, whose
    IndexError is raised here as a ValueError naming ``t``, the range and its values. On an
    accelerator it is ``torch._assert_async`` with a message naming ``t`` and the range,
    reported at the next synchronisation. Other namespaces check concrete values eagerly; a
    traced ``t`` (``jax.jit``, ``torch.compile``) is not checked.
    """
    xp = namespace(t)
    if not is_concrete(t):
        return
    if not is_torch(xp):
        check_range_now(t, num_timesteps, name=name, minimum=minimum)
    elif not t.is_cpu:
        inside = (t >= minimum) & (t < num_timesteps)
        _torch()._assert_async(inside.all(), f"{name} must lie in [{minimum}, {num_timesteps})")
    else:
        try:
            _probe(num_timesteps - minimum, xp).index_select(0, t if minimum == 0 else t - minimum)
        except (IndexError, RuntimeError):
            check_range_now(t, num_timesteps, name=name, minimum=minimum)
            raise


_PROBES: dict[int, Any] = {}


def _probe(n: int, xp: Any) -> Any:
    """A cached int8 CPU tensor of length ``n`` whose gather bounds-checks an index vector."""
    probe = _PROBES.get(n)
    if probe is None:
        probe = _PROBES[n] = xp.zeros(n, dtype=xp.int8, device="cpu")
    return probe


def check_range_now(t: Any, num_timesteps: int, *, name: str = "t", minimum: int = 0) -> None:
    """``check_range`` by reading the values on the host (eager namespaces, error paths)."""
    if not t.shape[0]:
        return
    xp = namespace(t)
    lo, hi = int(xp.min(t)), int(xp.max(t))
    if lo < minimum or hi >= num_timesteps:
        raise ValueError(f"{name} must lie in [{minimum}, {num_timesteps}), got values in [{lo}, {hi}]")


def check_all(ok: Any, message: str, *, values: Any = None, xp: Any = None) -> None:
    """Raise ValueError(``message``) unless every element of the boolean array ``ok`` is true.

    Under PyTorch this is ``torch._assert_async`` (raises at once on the CPU, at the next
    synchronisation on CUDA): no host read. Other namespaces check concrete values eagerly;
    traced values are not checked. On failure the range of ``values`` (if given) is appended.
    """
    xp = namespace(ok, xp=xp)
    if not is_concrete(ok):
        return
    if is_torch(xp):
        try:
            _torch()._assert_async(ok.all(), message)
        except RuntimeError:
            raise ValueError(_with_range(message, values, xp)) from None
        return
    if not bool(xp.all(ok)):
        raise ValueError(_with_range(message, values, xp))


def _with_range(message: str, values: Any, xp: Any) -> str:
    """``message`` with the observed range of ``values`` (an error path: reads the host)."""
    if values is None:
        return message
    return f"{message}, got values in [{float(xp.min(values))}, {float(xp.max(values))}]"
