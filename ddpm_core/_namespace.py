"""Which array library an array belongs to, its device, the compute dtype policy and
cached constants (internal).

Everything here is written against the array API standard; no framework is imported at
module level. Framework-specific branches (``stop_gradient``, ``is_concrete``) only import a
framework when the array handed in already came from it, so that framework is loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "device_of",
    "is_concrete",
    "stop_gradient",
    "compute_dtype",
    "constant",
    "index_dtype",
    "upcast",
    "cast_like",
    "is_torch",
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
    check = _CONCRETE_CHECK.get(type(x))
    if check is None:
        check = _CONCRETE_CHECK[type(x)] = _concrete_check(x)
    return check(x)


def _concrete_check(x: Any) -> Any:
    """The test ``is_concrete`` applies to arrays of ``x``'s type (built once per type)."""
    if array_api_compat.is_jax_array(x):
        import jax

        return lambda a: not isinstance(a, jax.core.Tracer)
    if array_api_compat.is_torch_array(x):
        import torch

        return lambda a: not torch.compiler.is_compiling()
    return lambda a: True


_CONCRETE_CHECK: dict[type, Any] = {}


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
    bfloat16) compute in float32, because half precision cannot hold the tables
    (docs/equations.md, "Schedule", precision).
    """
    if x.dtype == xp.float64 or x.dtype == xp.float32:
        return x.dtype
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"expected a real floating-point array, got dtype {x.dtype}")
    return xp.float32


def _torch() -> Any:
    """The torch module (only called with torch arrays in hand, so it is imported)."""
    return sys.modules["torch"]


def constant(values: np.ndarray, xp: Any, device: Any, dtype: Any) -> Any:
    """NumPy ``values`` as an ``xp`` array on ``device`` in ``dtype``, cached by content.

    For per-step constants made on the host (a sampler's CDF, a weighting table): each is
    copied to the device once, not every step (a copy from host memory waits for the device
    on CUDA). The cache keeps the 64 most recent constants.
    """
    key = (values.tobytes(), values.shape, xp.__name__, str(device), str(dtype))
    hit = _CONSTANTS.get(key)
    if hit is None:
        hit = xp.asarray(values, dtype=dtype, device=device)
        if is_concrete(hit):  # a tracer must not outlive its trace
            if len(_CONSTANTS) >= 64:
                del _CONSTANTS[next(iter(_CONSTANTS))]
            _CONSTANTS[key] = hit
    return hit


_CONSTANTS: dict[tuple[Any, ...], Any] = {}


def index_dtype(xp: Any, device: Any = None) -> Any:
    """The namespace's default indexing dtype: int64, or int32 where the namespace has no
    64-bit integers (JAX without x64), so no dtype is silently truncated."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
    except (AttributeError, TypeError, ValueError):  # pre-2023.12 namespaces
        return xp.int64


def upcast(x: Any, xp: Any) -> Any:
    """``x`` in its compute dtype (float32 for half precision, else unchanged)."""
    if x.dtype == xp.float32 or x.dtype == xp.float64:  # the common case, without a call
        return x
    dt = compute_dtype(xp, x)
    return x if x.dtype == dt else xp.astype(x, dt)


def cast_like(v: Any, like: Any, xp: Any) -> Any:
    """``v`` in ``like``'s dtype."""
    return v if v.dtype == like.dtype else xp.astype(v, like.dtype)


_TORCH_NAMESPACES: dict[int, bool] = {}


def is_torch(xp: Any) -> bool:
    """True when ``xp`` is PyTorch's namespace (memoised: it is asked on every step)."""
    known = _TORCH_NAMESPACES.get(id(xp))
    if known is None:
        known = _TORCH_NAMESPACES[id(xp)] = bool(array_api_compat.is_torch_namespace(xp))
    return known
