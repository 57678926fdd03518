"""Array-namespace plumbing shared by the core (internal).

Everything here is written against the array API standard; no framework is imported at
module level. Framework-specific branches (``stop_gradient``, ``is_concrete``) only import a
framework when the array handed in already came from it, so that framework is loaded.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "device_of",
    "is_concrete",
    "stop_gradient",
    "compute_dtype",
    "broadcast_to_batch",
    "as_timesteps",
    "check_same_shape",
    "check_choice",
    "check_batch",
    "upcast",
    "index_dtype",
    "cast_like",
    "fsqrt",
    "fexp",
    "lincomb",
    "take_along",
    "clip_to",
]


def namespace(*arrays: Any, xp: Any = None) -> Any:
    """Return the array namespace of ``arrays`` (or ``xp`` when given)."""
    if xp is not None:
        return xp
    if len(arrays) == 1:  # the hot path: one array, its namespace cached by type
        known = _NAMESPACE_OF_TYPE.get(type(arrays[0]))
        if known is not None:
            return known
    arrays = tuple(a for a in arrays if a is not None and not isinstance(a, (int, float)))
    found = array_api_compat.array_namespace(*arrays)
    if len(arrays) == 1:
        _NAMESPACE_OF_TYPE[type(arrays[0])] = found
    return found


_NAMESPACE_OF_TYPE: dict[type, Any] = {}


def device_of(x: Any) -> Any:
    """The device of ``x``; ``None`` where a tracer cannot report one."""
    try:
        return array_api_compat.device(x)
    except Exception:  # noqa: BLE001 - some tracers refuse; the default device is then right
        return None


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values that may be inspected now (not a jit/compile tracer)."""
    if array_api_compat.is_jax_array(x):
        import jax

        return not isinstance(x, jax.core.Tracer)
    if array_api_compat.is_torch_array(x):
        import torch

        return not torch.compiler.is_compiling()
    return True


def stop_gradient(x: Any) -> Any:
    """Block gradients through ``x`` (identity for libraries without autodiff)."""
    if array_api_compat.is_torch_array(x):
        return x.detach()
    if array_api_compat.is_jax_array(x):
        import jax

        return jax.lax.stop_gradient(x)
    return x


def compute_dtype(xp: Any, x: Any) -> Any:
    """The dtype schedule coefficients are looked up in for an input of ``x``'s dtype.

    float32 and float64 inputs compute in their own dtype; half-precision inputs (float16,
    bfloat16) compute in float32, because half precision cannot hold the tables (SPEC).
    """
    if x.dtype == xp.float64 or x.dtype == xp.float32:
        return x.dtype
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"expected a real floating-point array, got dtype {x.dtype}")
    return xp.float32


def broadcast_to_batch(v: Any, ndim: int, xp: Any) -> Any:
    """Reshape a per-sample vector (B,) to (B, 1, ..., 1) with ``ndim`` axes."""
    return xp.reshape(v, (v.shape[0],) + (1,) * (ndim - 1))


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {name}={value!r}")


def check_batch(name: str, x: Any) -> None:
    """Raise ValueError unless ``x`` has a leading batch axis."""
    if getattr(x, "ndim", 0) < 1:
        raise ValueError(f"{name} must have a leading batch axis, got shape {getattr(x, 'shape', ())}")


def check_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Raise ValueError when two arrays that must match elementwise differ in shape.

    Broadcasting between e.g. ``x_t`` and ``noise`` is never intended and would silently
    produce a wrong result, so it is refused.
    """
    if tuple(a.shape) != tuple(b.shape):
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
) -> Any:
    """Validate ``t`` and return it as an integer vector of shape (B,) in ``like``'s namespace.

    ``t`` is a Python int (broadcast to the batch) or an integer array of shape (B,) or ().
    Values must lie in [minimum, num_timesteps); they are checked whenever they are concrete
    (not inside ``jax.jit`` or ``torch.compile``, where checking would need the values).
    With ``scalar_ok`` a Python int is returned as a Python int: the caller then looks up
    scalar coefficients, which costs no gather and keeps them in float64.
    """
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
    return _as_vector(t, like, num_timesteps, name, minimum)


def _as_vector(t: Any, like: Any, num_timesteps: int, name: str, minimum: int) -> Any:
    xp = namespace(like)
    batch = like.shape[0]
    if isinstance(t, np.ndarray) and not array_api_compat.is_numpy_namespace(xp):
        t = xp.asarray(t, device=device_of(like))  # NumPy index arrays work with any backend
    t_xp = xp if type(t) is type(like) else namespace(t)
    if not t_xp.isdtype(t.dtype, "integral"):
        raise TypeError(f"{name} must be an integer array, got dtype {t.dtype}")
    if t.ndim == 0:
        t = xp.broadcast_to(xp.reshape(t, (1,)), (batch,))
    elif t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must be a Python int or an integer array of shape ({batch},) matching the "
            f"batch, got {name}.shape={tuple(t.shape)}"
        )
    if is_concrete(t):
        lo, hi = _min_max(t, xp)
        if lo < minimum or hi >= num_timesteps:
            raise ValueError(
                f"{name} must lie in [{minimum}, {num_timesteps}), got values in [{lo}, {hi}]"
            )
    return t


def _min_max(t: Any, xp: Any) -> tuple[int, int]:
    """(min, max) of a concrete integer array as Python ints (torch: one device sync)."""
    if _is_torch(xp):
        lo, hi = t.aminmax()
        if t.device.type != "cpu":
            lo, hi = xp.stack((lo, hi)).tolist()
        return int(lo), int(hi)
    return int(xp.min(t)), int(xp.max(t))


def index_dtype(xp: Any, device: Any = None) -> Any:
    """The namespace's default indexing dtype: int64, or int32 where the namespace has no
    64-bit integers (JAX without x64), so no dtype is silently truncated."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
    except (AttributeError, TypeError, ValueError):  # pre-2023.12 namespaces
        return xp.int64


def upcast(x: Any, xp: Any) -> Any:
    """``x`` in its compute dtype (float32 for half precision, else unchanged)."""
    dt = compute_dtype(xp, x)
    return x if x.dtype == dt else xp.astype(x, dt)


def cast_like(v: Any, like: Any, xp: Any) -> Any:
    """``v`` in ``like``'s dtype."""
    return v if v.dtype == like.dtype else xp.astype(v, like.dtype)


def fsqrt(v: Any, xp: Any) -> Any:
    """sqrt of a scalar coefficient (Python float) or a coefficient array."""
    return math.sqrt(v) if isinstance(v, float) else xp.sqrt(v)


def fexp(v: Any, xp: Any) -> Any:
    """exp of a scalar coefficient (Python float) or a coefficient array."""
    return math.exp(v) if isinstance(v, float) else xp.exp(v)


LN2 = math.log(2.0)


def lincomb(xp: Any, *terms: tuple[Any, Any]) -> Any:
    """sum(c * a for c, a in terms): the linear combinations every step is made of.

    Each coefficient ``c`` is a Python float or an array that broadcasts into the shape of
    the terms (e.g. (B, 1, ..., 1) per-sample coefficients); the arrays ``a`` share one shape.
    Terms whose coefficient is the float 0.0 are left out (so a zero std ignores its noise).
    The result is always a new array. Under PyTorch the sum is accumulated into that array
    with fused multiply-adds (``torch.add(alpha=)``, ``add_(alpha=)``, ``addcmul_``): one
    kernel per term where the plain expression needs two. Other namespaces evaluate the
    plain expression.
    """
    kept = [(c, a) for c, a in terms if not (isinstance(c, float) and c == 0.0)] or [terms[0]]
    if _is_torch(xp):
        return _torch_lincomb(kept)
    out = kept[0][0] * kept[0][1]
    for c, a in kept[1:]:
        out = out + c * a
    return out


_TORCH_NAMESPACES: dict[int, bool] = {}


def _is_torch(xp: Any) -> bool:
    known = _TORCH_NAMESPACES.get(id(xp))
    if known is None:
        known = _TORCH_NAMESPACES[id(xp)] = bool(array_api_compat.is_torch_namespace(xp))
    return known


def _torch_lincomb(terms: list[tuple[Any, Any]]) -> Any:
    (c0, a0), (c1, a1) = terms[0], terms[1] if len(terms) > 1 else (None, None)
    if isinstance(c0, float) and c0 == 1.0 and isinstance(c1, float) and _fits(a0, a1):
        out, rest = a0.add(a1, alpha=c1), terms[2:]  # x + c y in one kernel
    else:
        out, rest = a0 * c0, terms[1:]
    for c, a in rest:
        if _fits(out, a) and isinstance(c, float):
            out.add_(a, alpha=c)
        elif _fits(out, a) and c.dtype == out.dtype and _broadcasts_into(c.shape, out.shape):
            out.addcmul_(c, a)
        else:
            out = out + c * a  # type promotion or broadcasting: the plain expression
    return out


def clip_to(x: Any, lo: float, hi: float, xp: Any) -> Any:
    """``x`` clipped to [lo, hi] (a new array; torch: one ``clamp``)."""
    if _is_torch(xp):
        return x.clamp(lo, hi)
    return xp.clip(x, lo, hi)


def _broadcasts_into(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    """True when an array of shape ``small`` broadcasts to ``big`` without growing it."""
    if len(small) > len(big):
        return False
    return all(s in (1, b) for s, b in zip(small[::-1], big[::-1], strict=False))


def take_along(table: Any, t: Any, axis: int, xp: Any) -> Any:
    """``xp.take(table, t, axis=axis)`` for an integer vector ``t`` (torch: one ``index_select``)."""
    if _is_torch(xp) and str(t.dtype) in ("torch.int64", "torch.int32"):
        return table.index_select(axis, t)
    return xp.take(table, t, axis=axis)


def _fits(out: Any, a: Any) -> bool:
    """True when ``a`` can be accumulated into ``out`` in place (same shape and dtype)."""
    return a.shape == out.shape and a.dtype == out.dtype
