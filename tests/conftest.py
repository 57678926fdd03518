"""Shared fixtures: the array backends, dtypes, Hypothesis profiles and an example counter.

Backends: ``DDPM_TEST_BACKENDS=numpy,array_api_strict`` (comma list) selects backends; by
default every importable one runs (the others are skipped via ``pytest.importorskip``).
A backend named explicitly that cannot be imported is an error, not a skip, so that a nox
session can never pass vacuously. ``DDPM_TEST_DEVICE=cuda`` puts torch/JAX arrays on a GPU.

Hypothesis: profile ``ci`` (default; 30 examples, derandomized, no deadline) or ``dev``
(300 examples, random), chosen with ``HYPOTHESIS_PROFILE``. The terminal summary reports
how many Hypothesis examples the session ran.

Helpers (``asarray``, ``assert_close``, float64 references) live in ``support/ddpm_testing.py``.
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# The helpers live in tests/support: putting tests/ itself on sys.path would let the folders
# tests/torch and tests/jax shadow the real frameworks as namespace packages.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))

from ddpm_testing import BACKENDS, import_backend, selected_backends  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "dev",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_NAMES, _EXPLICIT = selected_backends()


@pytest.fixture(scope="session", params=_NAMES)
def xp(request):
    """The array-API namespace of one backend (array_api_compat-wrapped; JAX with x64)."""
    name = request.param
    if _EXPLICIT:
        try:
            return import_backend(name)
        except ImportError as exc:  # explicitly requested: failing beats a silent skip
            pytest.fail(f"DDPM_TEST_BACKENDS requests {name!r} but it cannot be imported: {exc}")
    pytest.importorskip({"jax": "jax", "torch": "torch"}.get(name, name))
    return import_backend(name)


@pytest.fixture(scope="session", params=["float32", "float64"])
def dtype(request):
    """Compute dtype name; the backends' arrays are built in it (tables stay float64)."""
    return request.param


@pytest.fixture(scope="session")
def backend(xp):
    """Name of the current backend: one of ``BACKENDS``."""
    from ddpm_testing import backend_name

    name = backend_name(xp)
    assert name in BACKENDS
    return name


# --------------------------------------------------------------------------- example counter
_EXAMPLES = {"tests": 0, "examples": 0}


def _count_examples(stats) -> None:
    try:
        valid = sum(
            sum(1 for case in phase.get("test-cases", []) if case.get("status") == "valid")
            for key, phase in stats.items()
            if key.endswith("-phase") and isinstance(phase, dict)
        )
    except Exception:  # the statistics format is not a stable Hypothesis API
        return
    _EXAMPLES["tests"] += 1
    _EXAMPLES["examples"] += valid


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item):
    """Chain a statistics callback inside Hypothesis' own one to count examples."""
    if not hasattr(getattr(item, "obj", None), "hypothesis"):
        yield
        return
    from hypothesis.statistics import collector

    outer = collector.value

    def note(stats):
        _count_examples(stats)
        if outer is not None:
            outer(stats)

    with collector.with_value(note):
        yield


def pytest_terminal_summary(terminalreporter):
    """Report the number of Hypothesis examples run in this session."""
    if _EXAMPLES["tests"]:
        profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
        terminalreporter.write_line(
            f"hypothesis: {_EXAMPLES['examples']} examples in {_EXAMPLES['tests']} "
            f"property-test runs (profile {profile!r}, backends {','.join(_NAMES)})"
        )
