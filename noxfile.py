"""Test, docs, lint and benchmark sessions. README's test command: ``nox -s tests-numpy tests-torch tests-jax docs``."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

# torch is pinned here (not in the package) to the CPU build these machines keep on disk; an
# unpinned torch pulls several GB of CUDA wheels. Override with DDPM_TORCH_SPEC.
TORCH = os.environ.get("DDPM_TORCH_SPEC", "torch==2.13.0")
TEST_DEPS = ["pytest>=8", "hypothesis>=6.100", "array-api-strict>=2.0"]


def _install(session: nox.Session, extra: str | None) -> None:
    if extra and "torch" in extra:
        session.install(TORCH)
    session.install(*TEST_DEPS)
    session.install(f".[{extra}]" if extra else ".")


def _pytest(session: nox.Session, backends: str, *paths: str) -> None:
    env = {"DDPM_TEST_BACKENDS": backends, "PYTHONHASHSEED": "0"}
    session.run("pytest", *(session.posargs or paths), env=env)


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The core on NumPy and array-api-strict, with NumPy alone installed."""
    _install(session, None)
    _pytest(session, "numpy,array_api_strict", "tests/core", "tests/test_app.py",
            "tests/test_data.py", "tests/test_metrics.py", "tests/test_benchmarks.py",
            "tests/test_reliability.py", "tests/test_layout.py", "tests/test_docs_pages.py")


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The core on PyTorch, the PyTorch backend, the data and the command line."""
    _install(session, "torch,eval,tensorboard")  # tensorboard: tests/torch/test_tensorboard.py
    session.install("diffusers~=0.42.0")  # import/export and scheduler checks against diffusers
    _pytest(session, "torch", "tests/core", "tests/torch", "tests/test_data.py", "tests/test_cli.py",
            "tests/test_plot.py", "tests/test_eval.py", "tests/test_benchmarks.py", "tests/test_gpu_check.py",
            "tests/test_state_file.py", "tests/test_progress.py", "tests/test_docs_pages.py")


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """The core on JAX (x64 on), the JAX backend and torch <-> JAX weight conversion."""
    session.install(TORCH)  # conversion parity tests compare against the PyTorch U-Net
    _install(session, "jax,tensorboard")
    _pytest(session, "jax", "tests/core", "tests/jax", "tests/test_eval.py", "tests/test_benchmarks.py",
            "tests/test_progress.py", "tests/test_docs_pages.py")


@nox.session(name="lint")
def lint(session: nox.Session) -> None:
    """ruff over the repository; mypy over the core."""
    session.install("ruff>=0.6", "mypy>=1.10", "numpy", "array-api-compat")
    session.run("ruff", "check", ".")
    session.run("mypy", "ddpm_core")


@nox.session(name="bench")
def bench(session: nox.Session) -> None:
    """Benchmarks (not run by CI): steps, chains and training, side by side with diffusers.

    ``nox -s bench`` runs steps, chain and train; ``nox -s bench -- steps chain`` picks some;
    ``breakdown`` (``benchmarks/train_breakdown.py``: a CPU training step, part by part,
    PyTorch against JAX) and ``profile`` (``benchmarks/step_profile.py``: the same step under
    each framework's profiler, op by op) run when named.
    """
    session.install(TORCH)
    session.install(".[torch,jax]", "diffusers", "pytest>=8")
    # every contender of a row computes the same thing (with diffusers installed, theirs too)
    session.run("pytest", "-q", "tests/test_benchmarks.py")
    scripts = {"steps": "bench_steps", "chain": "bench_chain", "train": "bench_train", "breakdown": "train_breakdown",
               "profile": "step_profile"}
    for name in session.posargs or ["steps", "chain", "train"]:
        if name not in scripts:
            session.error(f"unknown benchmark {name!r}; choose from {', '.join(scripts)}")
        one_thread = {"OMP_NUM_THREADS": "1"} if name in ("breakdown", "profile") else None
        session.run("python", f"benchmarks/{scripts[name]}.py", env=one_thread)


@nox.session(name="ablation")
def ablation(session: nox.Session) -> None:
    """The paper's Table 2 at small scale on the embedded MNIST data (hours on a CPU; not in CI)."""
    session.install(TORCH)
    session.install(".[torch,eval]")
    session.run("python", "benchmarks/ablation.py", *(session.posargs or ["--root", "runs/ablation"]))


@nox.session(name="quality")
def quality(session: nox.Session) -> None:
    """Sample quality per CPU minute: recipes and samplers at the demo's budget (hours; not in CI).

    ``nox -s quality -- --configs baseline,min-snr --seeds 0,1 --backends torch,jax``.
    """
    session.install(TORCH)
    session.install(".[torch,jax,eval]")
    session.run("python", "benchmarks/quality.py", *(session.posargs or ["--root", "runs/quality"]))


@nox.session(name="guidance")
def guidance(session: nox.Session) -> None:
    """Guidance scale against class accuracy, IS, FID and KID (hours; not in CI).

    ``nox -s guidance -- --cond runs/mnist-cond --uncond runs/mnist --classifier runs/clf``.
    """
    session.install(TORCH)
    session.install(".[torch,eval]")
    session.run("python", "benchmarks/guidance.py", *session.posargs)


def _group(name: str) -> list[str]:
    """A ``[dependency-groups]`` list of pyproject.toml (read here: pip < 25.1 has no --group)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: nox itself depends on tomli there
        import tomli as tomllib

    with open("pyproject.toml", "rb") as f:
        return tomllib.load(f)["dependency-groups"][name]


@nox.session(name="docs")
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs + Material + mkdocstrings), built with ``--strict``: a
    broken link, a missing page or an unresolvable reference fails it. ``nox -s docs -- serve``
    serves it at http://127.0.0.1:8000 instead."""
    session.install(*_group("docs"))
    session.install(".")  # the hook that writes the ddpm command's reference imports its parser
    env = {"NO_MKDOCS_2_WARNING": "1"}
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
    else:
        session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env=env)
