"""The fused arithmetic every step is made of (internal): linear combinations, clipping,
scalar-or-array sqrt/exp, per-sample broadcasting and table-row gathers.
"""

from __future__ import annotations

import math
from typing import Any

from ddpm_core._namespace import is_torch

__all__ = [
    "broadcast_to_batch",
    "fsqrt",
    "fexp",
    "lincomb",
    "clip_to",
    "take_rows",
    "LN2",
]


def broadcast_to_batch(v: Any, ndim: int, xp: Any) -> Any:
    """Reshape a per-sample vector (B,) to (B, 1, ..., 1) with ``ndim`` axes."""
    return xp.reshape(v, (v.shape[0],) + (1,) * (ndim - 1))


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
