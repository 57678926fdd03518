"""Helpers shared by the test suites: backends, array building, ``assert_close``, references.

Nothing here calls ``ddpm_core``: every expected value in the core suite is derived from
docs/equations.md in float64 NumPy (module ``REF`` functions below) so that the tests are
an independent check of the mathematics, never the function under test checking itself.

Tolerances
----------
``assert_close`` compares with ``rtol = factor * eps`` and ``atol = factor * eps * scale`` where
``eps`` is the machine epsilon of the *compute* dtype and ``scale`` the magnitude of the
quantities the result is computed from (default: ``max(1, max|expected|)``).  The default
``factor = 50`` covers a chain of a few dozen correctly rounded operations (each at most
0.5-1 ulp) plus the float64 tables rounded to the compute dtype at lookup; a wrong formula
gives an O(1) relative error, six orders of magnitude above this bound in float32 and
thirteen in float64.  Ill-conditioned results (division by ``sqrt(abar)`` near ``t = T``)
pass an explicit ``scale`` (the size of the cancelling terms), documented at the call site.
"""

from __future__ import annotations

import math
import os
from types import ModuleType

import numpy as np

BACKENDS = ("numpy", "array_api_strict", "torch", "jax")
_MODULES = {"numpy": "numpy", "array_api_strict": "array_api_strict", "torch": "torch", "jax": "jax.numpy"}
DEFAULT_FACTOR = 50.0
_DEVICES: dict[str, object] = {}


# --------------------------------------------------------------------------- backends
def selected_backends() -> tuple[tuple[str, ...], bool]:
    """Backends named by ``DDPM_TEST_BACKENDS`` (explicit) or all of them (default)."""
    env = os.environ.get("DDPM_TEST_BACKENDS", "").strip()
    if not env:
        return BACKENDS, False
    names = tuple(n.strip() for n in env.split(",") if n.strip())
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        raise ValueError(f"DDPM_TEST_BACKENDS names unknown backends {unknown}; allowed {BACKENDS}")
    return names, True


def import_backend(name: str) -> ModuleType:
    """Import backend ``name`` and return its array-API namespace (JAX with x64 enabled)."""
    import importlib

    import array_api_compat

    module = importlib.import_module(_MODULES[name])
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    xp = array_api_compat.array_namespace(module.empty(0))
    _DEVICES[backend_name(xp)] = _requested_device(name)
    return xp


def _requested_device(name: str) -> object:
    """Device from ``DDPM_TEST_DEVICE`` (e.g. ``cuda``) for torch/jax; None means default."""
    want = os.environ.get("DDPM_TEST_DEVICE", "").strip()
    if not want or want == "cpu" or name in ("numpy", "array_api_strict"):
        return None
    if name == "torch":
        import torch

        return torch.device(want)
    import jax

    return jax.devices("gpu" if want.startswith("cuda") else want)[0]


def backend_name(xp: ModuleType) -> str:
    """``numpy``, ``array_api_strict``, ``torch`` or ``jax`` for a namespace."""
    name = xp.__name__
    for key in ("array_api_strict", "torch", "jax"):
        if key in name:
            return key
    if "numpy" in name:
        return "numpy"
    raise ValueError(f"unknown namespace {name}")


def device_of(xp: ModuleType) -> object:
    """The device the tests put arrays of ``xp`` on."""
    import array_api_compat

    dev = _DEVICES.get(backend_name(xp))
    return dev if dev is not None else array_api_compat.device(xp.empty(0))


def xp_dtype(xp: ModuleType, dtype: object) -> object:
    """``dtype`` given by name (``"float32"``) resolved in ``xp``."""
    return getattr(xp, dtype) if isinstance(dtype, str) else dtype


def dtype_name(dtype: object) -> str:
    """Name of a dtype of any backend (``"float32"``, ``"bfloat16"``, ...)."""
    if isinstance(dtype, str):
        return dtype
    text = str(dtype)
    for name in ("bfloat16", "float16", "float32", "float64", "int64", "int32", "bool"):
        if name in text:
            return name
    raise ValueError(f"unknown dtype {dtype!r}")


def asarray(a: object, xp: ModuleType, dtype: object = "float64") -> object:
    """Array of ``xp`` on the test device in ``dtype`` built from a NumPy (float64) array."""
    a = np.asarray(a)
    return xp.asarray(a, dtype=xp_dtype(xp, dtype), device=device_of(xp))


def as_t(t: object, xp: ModuleType) -> object:
    """An int64 timestep vector of ``xp`` (Python ints are passed through)."""
    if isinstance(t, int):
        return t
    return xp.asarray(np.asarray(t, dtype=np.int64), dtype=xp.int64, device=device_of(xp))


def rounded(a: np.ndarray, dtype: object) -> np.ndarray:
    """``a`` rounded to ``dtype`` and back to float64: the exact values the backend sees."""
    return np.asarray(a, dtype=np.float64).astype(dtype_name(dtype)).astype(np.float64)


def to_numpy(x: object) -> np.ndarray:
    """Float64-or-exact NumPy copy of an array of any backend."""
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu()
        if "bfloat16" in str(x.dtype):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def eps_of(dtype: object) -> float:
    """Machine epsilon of a floating dtype given by name or object."""
    name = dtype_name(dtype)
    return {"bfloat16": 2.0**-7, "float16": 2.0**-10}.get(name) or float(np.finfo(name).eps)


def check_array(actual: object, *, xp: ModuleType, dtype: object, shape: tuple | None = None):
    """Namespace, "secretly NumPy" guard, dtype, device and (optionally) shape of ``actual``."""
    import array_api_compat

    name = backend_name(xp)
    if name != "numpy":
        assert not isinstance(actual, (np.ndarray, np.generic)), (
            f"result is a NumPy array although the inputs were {name} arrays (secretly NumPy)"
        )
    got = array_api_compat.array_namespace(actual)
    assert got is xp, f"namespace {got.__name__} != {xp.__name__}"
    assert dtype_name(actual.dtype) == dtype_name(dtype), f"dtype {actual.dtype} != {dtype}"
    assert str(array_api_compat.device(actual)) == str(device_of(xp)), "device changed"
    if shape is not None:
        assert tuple(actual.shape) == tuple(shape), f"shape {tuple(actual.shape)} != {shape}"


def assert_close(actual, expected, *, xp, dtype, factor=DEFAULT_FACTOR, scale=None, shape=None):
    """Check ``actual`` (an ``xp`` array) against a float64 NumPy ``expected``.

    Checks namespace, not-secretly-NumPy, dtype, device, shape (``expected.shape`` unless
    ``shape`` is given), then values with ``rtol = factor*eps``, ``atol = factor*eps*scale``.
    """
    expected = np.asarray(expected, dtype=np.float64)
    check_array(actual, xp=xp, dtype=dtype, shape=expected.shape if shape is None else shape)
    eps = eps_of(dtype)
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    got = to_numpy(actual).astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=factor * eps, atol=factor * eps * scale)


def assert_close_np(actual, expected, *, dtype="float64", factor=DEFAULT_FACTOR, scale=None):
    """Value-only comparison of two NumPy arrays with the dtype-derived tolerance."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    eps = eps_of(dtype)
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=factor * eps, atol=factor * eps * scale)


# --------------------------------------------------------------------------- references
class Ref:
    """Float64 tables of a schedule derived from ``betas`` by docs/equations.md, "Schedule"."""

    def __init__(self, betas):
        b = np.asarray(betas, dtype=np.float64)
        self.T = b.shape[0]
        self.betas = b
        self.alphas = 1.0 - b
        self.abar = np.cumprod(self.alphas)
        self.abar_prev = np.concatenate([[1.0], self.abar[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            self.post_var = b * (1.0 - self.abar_prev) / (1.0 - self.abar)
            self.coef1 = b * np.sqrt(self.abar_prev) / (1.0 - self.abar)
            self.coef2 = (1.0 - self.abar_prev) * np.sqrt(self.alphas) / (1.0 - self.abar)
            self.snr = self.abar / (1.0 - self.abar)
        clip = self.post_var[1] if self.T > 1 else self.post_var[0]
        self.post_logvar = np.log(np.concatenate([[clip], self.post_var[1:]]))

    def at(self, name: str, t, ndim: int) -> np.ndarray:
        """``table[t]`` shaped ``(B, 1, ..., 1)`` (``ndim`` axes) to broadcast against x."""
        vals = np.asarray(getattr(self, name))[np.asarray(t)]
        return np.reshape(vals, np.shape(vals) + (1,) * (ndim - np.ndim(vals)))


def ref_linear(T, beta_start=1e-4, beta_end=0.02):
    """Ho et al. linear schedule."""
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def ref_normal_kl(m1, lv1, m2, lv2):
    """KL(N(m1, e^lv1) || N(m2, e^lv2)) per element, in nats (closed form)."""
    v1, v2 = np.exp(lv1), np.exp(lv2)
    return 0.5 * (lv2 - lv1) + (v1 + (m1 - m2) ** 2) / (2.0 * v2) - 0.5


def ref_log_ndtr(x: float) -> float:
    """log Phi(x) in float64 from math.erfc, with the asymptotic series below -37."""
    if x > 0.0:  # log(1 - Phi(-x)): log1p keeps the digits of the small Phi(-x)
        return math.log1p(-0.5 * math.erfc(x / math.sqrt(2.0)))
    if x > -37.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    # log Phi(x) = log(phi(x)/|x|) + log(1 - 1/x^2 + 3/x^4 - 15/x^6 + ...), x -> -inf
    x2 = x * x
    term, total = 1.0, 1.0
    for k in range(1, 12):
        term *= -(2 * k - 1) / x2
        total += term
    return -0.5 * x2 - math.log(-x) - 0.5 * math.log(2.0 * math.pi) + math.log(total)


def ref_log_bin_mass(lo: float, hi: float) -> float:
    """log(Phi(hi) - Phi(lo)) for standardised edges, accurate in either tail."""
    if lo == -math.inf:
        return ref_log_ndtr(hi)
    if hi == math.inf:
        return ref_log_ndtr(-lo)
    if lo > 0:  # mirror into the left tail, where the CDF has no cancellation
        lo, hi = -hi, -lo
    a, b = ref_log_ndtr(lo), ref_log_ndtr(hi)
    return b + math.log(-math.expm1(a - b))


def ref_decoder_log_likelihood(x, mean, log_scale):
    """Eq. 13: log of the Gaussian mass of x's bin (width 2/255, edge bins to +-inf)."""
    x, mean, log_scale = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (x, mean, log_scale)))
    out = np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        xi, m, s = x[idx], mean[idx], math.exp(log_scale[idx])
        lo = -math.inf if xi < -0.999 else (xi - 1.0 / 255.0 - m) / s
        hi = math.inf if xi > 0.999 else (xi + 1.0 / 255.0 - m) / s
        out[idx] = ref_log_bin_mass(lo, hi)
    return out


def data_grid(rng: np.random.Generator, shape) -> np.ndarray:
    """Images with pixel values in {0..255} scaled to [-1, 1] (eq. 13's data grid)."""
    return rng.integers(0, 256, size=shape).astype(np.float64) / 127.5 - 1.0


def mean_flat(a: np.ndarray) -> np.ndarray:
    """Mean over every axis but the first."""
    return np.mean(np.reshape(a, (a.shape[0], -1)), axis=1)


# --------------------------------------------------------------------------- strategies
def _closed_form_betas(kind: str, T: int, lo: float, hi: float, rng: np.random.Generator):
    """Betas of a schedule kind by its textbook definition (not via ddpm_core)."""
    if kind == "linear":
        return np.linspace(lo, hi, T)
    if kind == "quadratic":
        return np.linspace(math.sqrt(lo), math.sqrt(hi), T) ** 2
    if kind == "sigmoid":
        return lo + (hi - lo) / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T)))
    if kind == "cosine":
        return ref_cosine_betas(T)
    return rng.uniform(lo, hi, size=T)  # "random": any user-given betas


def ref_cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal: beta_i = min(1 - f((i+1)/T)/f(i/T), max_beta), f = cos^2(...)."""
    f = [math.cos(((i / T) + s) / (1 + s) * math.pi / 2) ** 2 for i in range(T + 1)]
    return np.array([min(1.0 - f[i + 1] / f[i], max_beta) for i in range(T)])


def schedule_betas():
    """Hypothesis strategy: float64 betas of a drawn schedule kind, T and range."""
    from hypothesis import strategies as st

    @st.composite
    def draw_betas(draw):
        kind = draw(st.sampled_from(["linear", "quadratic", "sigmoid", "cosine", "random"]))
        # few distinct sizes: JAX compiles every primitive once per shape, so a new T or
        # shape per example would dominate the run time without testing anything new
        T = draw(st.sampled_from([2, 9, 40]))
        lo = draw(st.sampled_from([1e-4, 1e-3, 1e-2]))
        hi = draw(st.sampled_from([0.02, 0.05, 0.2]))
        seed = draw(st.integers(0, 2**32 - 1))
        return _closed_form_betas(kind, T, lo, hi, np.random.default_rng(seed))

    return draw_betas()


def batch_shapes():
    """Hypothesis strategy: (B, ...) shapes of 1 to 4 axes."""
    from hypothesis import strategies as st

    return st.sampled_from([(1,), (3, 2), (2, 2, 3), (4, 1, 2, 2)])


def table_factor(betas, dtype, base: float = DEFAULT_FACTOR) -> float:
    """``factor`` for results built from float64 tables, in units of ``dtype``'s eps.

    The tables carry float64 rounding of their own: O(T) roundings through the cumulative
    product, and ``1 - abar_t`` formed by subtraction has absolute error ~eps64, i.e. a
    relative error ~eps64 / (1 - abar_0) ~ eps64 / beta_0 in the posterior coefficients near
    t = 0 (about 1e-12 for the paper's schedule). That error is added, converted to units of
    the compute dtype's eps: negligible in float32, dominant in float64.
    """
    b = np.asarray(betas, dtype=np.float64)
    table_err = (8 * len(b) + 4.0 / b[0]) * np.finfo(np.float64).eps
    return base + table_err / eps_of(dtype)


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (benchmarks are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
