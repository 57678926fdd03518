"""Array-namespace plumbing shared by the core (internal).

Everything here is written against the array API standard; no framework is imported at
module level. Framework-specific branches (``stop_gradient``, ``is_concrete``) only import a
framework when the array handed in already came from it, so that framework is loaded.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "device_of",
    "is_concrete",
    "is_torch",
    "stop_gradient",
    "compute_dtype",
    "broadcast_to_batch",
    "as_timesteps",
    "check_same_shape",
    "check_choice",
    "check_batch",
    "check_range",
    "check_range_now",
    "check_all",
    "upcast",
    "index_dtype",
    "constant",
    "cast_like",
    "fsqrt",
    "fexp",
    "lincomb",
    "take_rows",
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


def _torch() -> Any:
    """The torch module (only called with torch arrays in hand, so it is imported)."""
    return sys.modules["torch"]


def _with_range(message: str, values: Any, xp: Any) -> str:
    """``message`` with the observed range of ``values`` (an error path: reads the host)."""
    if values is None:
        return message
    return f"{message}, got values in [{float(xp.min(values))}, {float(xp.max(values))}]"


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
    if is_torch(xp):
        return _torch_lincomb(terms)
    kept = [(c, a) for c, a in terms if not (isinstance(c, float) and c == 0.0)] or [terms[0]]
    out = kept[0][0] * kept[0][1]
    for c, a in kept[1:]:
        out = out + c * a
    return out


_TORCH_NAMESPACES: dict[int, bool] = {}


def is_torch(xp: Any) -> bool:
    """True when ``xp`` is PyTorch's namespace (memoised: it is asked on every step)."""
    known = _TORCH_NAMESPACES.get(id(xp))
    if known is None:
        known = _TORCH_NAMESPACES[id(xp)] = bool(array_api_compat.is_torch_namespace(xp))
    return known


def _torch_lincomb(terms: tuple[tuple[Any, Any], ...]) -> Any:
    for c, _ in terms:  # drop 0.0 terms (per-sample coefficients, the hot path, have none)
        if isinstance(c, float):
            terms = tuple((c, a) for c, a in terms if not (isinstance(c, float) and c == 0.0)) or terms[:1]
            break
    c0, a0 = terms[0]
    if isinstance(c0, float) and c0 == 1.0 and len(terms) > 1 and isinstance(terms[1][0], float) \
            and _fits(a0, terms[1][1]):
        out, rest = a0.add(terms[1][1], alpha=terms[1][0]), terms[2:]  # x + c y in one kernel
    else:
        out, rest = a0 * c0, terms[1:]
    dtype = out.dtype
    for c, a in rest:
        if a.dtype == dtype and (isinstance(c, float) or c.dtype == dtype):
            try:  # in place unless a or c would broadcast out to a bigger shape
                if isinstance(c, float):
                    out.add_(a, alpha=c)
                else:
                    out.addcmul_(c, a)
                continue
            except RuntimeError:  # raised before anything is written
                pass
        out = out + c * a  # type promotion or broadcasting: the plain expression
        dtype = out.dtype
    return out


def clip_to(x: Any, lo: float, hi: float, xp: Any) -> Any:
    """``x`` clipped to [lo, hi] (a new array; torch: one ``clamp``)."""
    if is_torch(xp):
        return x.clamp(lo, hi)
    return xp.clip(x, lo, hi)


def _broadcasts_into(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    """True when an array of shape ``small`` broadcasts to ``big`` without growing it."""
    if len(small) > len(big):
        return False
    return all(s in (1, b) for s, b in zip(small[::-1], big[::-1], strict=False))


def take_rows(table: Any, t: Any, xp: Any) -> tuple[Any, ...]:
    """The K rows of ``xp.take(table, t, axis=1)`` for a (K, T, ...) ``table`` and an integer
    vector ``t`` (torch: one ``index_select`` and one ``unbind``)."""
    if is_torch(xp):  # as_timesteps gave t an index_select dtype (int32 or int64)
        return table.index_select(1, t).unbind(0)
    gathered = xp.take(table, t, axis=1)
    return tuple(gathered[k, ...] for k in range(gathered.shape[0]))


def _fits(out: Any, a: Any) -> bool:
    """True when ``a`` can be accumulated into ``out`` in place (same shape and dtype)."""
    return a.shape == out.shape and a.dtype == out.dtype
