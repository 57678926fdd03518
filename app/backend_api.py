"""A backend's public ``api``: the sampling driver's functions and ``eval bpd`` with the
backend bound, so both backends' ``api`` modules have the same functions and signatures."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from ddpm_core.app.evaluation.bound import bpd
from ddpm_core.app.sampling.driver import interpolate, load_run, progressive, sample
from ddpm_core.app.sampling.protocol import SampleBackend

__all__ = ["BoundApi", "bind", "bound_api"]


def bind(fn: Callable[..., Any], backend: SampleBackend) -> Callable[..., Any]:
    """``fn`` with its first argument bound to ``backend``: a backend's ``api`` function,
    with ``fn``'s signature (less the backend) and docstring."""
    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        return fn(backend, *args, **kwargs)

    sig = inspect.signature(fn)
    bound.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
    return bound


class BoundApi(NamedTuple):
    """A backend's ``api`` functions (:func:`bound_api`)."""

    load_run: Callable[..., Any]
    sample: Callable[..., Any]
    progressive: Callable[..., Any]
    interpolate: Callable[..., Any]
    bpd: Callable[..., Any]


def bound_api(backend: SampleBackend) -> BoundApi:
    """The driver's :func:`load_run`, :func:`sample`, :func:`progressive`, :func:`interpolate` and
    ``ddpm_core.app.evaluation.bound.bpd`` with ``backend`` bound (:func:`bind`)."""
    return BoundApi(*(bind(fn, backend) for fn in (load_run, sample, progressive, interpolate, bpd)))
