"""``benchmarks/gpu_check.py``: the checkout stages without installing, and ``--smoke`` runs
every part that a CPU can run and reports every field."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STATUSES = {"ok", "failed", "timeout", "skipped"}
VERDICTS = {"pass", "fail", "n/a", "n/a (smoke)"}
# the fields of each part when it finished (MFU is added from the ceiling)
FIELDS = {
    "ceiling": {"flops", "median_s", "n", "reps", "dtype", "flops_per_image", "preset", "ddpm_core", "device"},
    "cuda_tests": {"exit_code", "passed", "failed", "error", "skipped", "failures"},
    "train_torch_eager": {"images_per_s", "windows", "batch", "mfu"},
    "train_torch_compiled": {"images_per_s", "windows", "batch", "mfu"},
    "train_torch_graph": {"images_per_s", "windows", "batch", "mfu", "mode"},
    "train_jax": {"images_per_s", "windows", "batch", "mfu", "jax"},
    "train_diffusers": {"images_per_s", "ours_images_per_s", "params", "ours_params", "batch"},
    "sample_torch_eager": {"seconds", "n", "steps", "step_s", "extrapolated"},
    "sample_torch_graph": {"seconds", "n", "steps", "step_s", "extrapolated"},
    "sample_jax_scan": {"seconds", "n", "steps", "includes_compile", "jax"},
    "sample_torch_compiled": {"seconds", "n", "steps", "step_s", "extrapolated"},
    "variants": {"train_batch", "forward_batch"} | {f"{kind}_{v}" for kind in ("train", "forward") for v in (
        "bf16_gn-nchw", "bf16_gn-channels_last", "float32_gn-nchw", "float32_gn-channels_last",
        "bf16_gn-nchw-cudnn_benchmark", "bf16_gn-channels_last-cudnn_benchmark")},
}


@functools.cache
def _gpu_check():
    """The script as a module, registered in sys.modules (its dataclasses look it up there)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


TORCH_PARTS = ("ceiling,cuda_tests,train_torch_eager,variants,sample_torch_eager,sample_torch_graph,"
               "train_torch_compiled,train_torch_graph,sample_torch_compiled")


def _smoke(tmp_path: Path, only: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPUCHECK_STAGE", "OUT")}
    env |= {"OMP_NUM_THREADS": "1", "OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--only", only], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    return report, proc.stdout


def _check_report(report: dict, stdout: str, ran: set[str]) -> None:
    gc = _gpu_check()
    assert set(report) >= {"schema", "settings", "targets", "budget_s", "cuda", "stage", "parts", "device",
                           "jax", "jax_over_torch", "verdicts", "elapsed_s"}
    assert report["settings"]["smoke"] and report["targets"] == gc.TARGETS
    assert set(report["parts"]) == set(gc.PARTS) == set(FIELDS)
    for name, row in report["parts"].items():
        assert row["status"] in STATUSES, (name, row)
        if name in ran:
            assert row["status"] == "ok", (name, row)
            assert FIELDS[name] <= set(row), (name, sorted(FIELDS[name] - set(row)))
        else:
            assert row["status"] == "skipped" and row["reason"], (name, row)
    assert set(report["verdicts"]) <= set(gc.PARTS) | {"jax_over_torch"}
    assert set(report["verdicts"].values()) <= VERDICTS
    # the checkout was imported from the staged folder, not from an installed copy
    assert report["parts"]["ceiling"]["ddpm_core"].startswith(report["stage"])
    head, _, table = stdout.partition("\n\n")
    assert json.loads(head) == report  # stdout: the JSON object, then the table last
    rows = [ln for ln in table.strip().splitlines() if ln.startswith("| ") and not ln.startswith("| part")]
    assert [r.split(" | ")[0][2:] for r in rows] == [p.title for p in gc.PARTS.values()]


def test_smoke_torch_parts(tmp_path):
    pytest.importorskip("torch")
    report, stdout = _smoke(tmp_path, TORCH_PARTS)
    _check_report(report, stdout, {"ceiling", "cuda_tests", "train_torch_eager", "variants", "sample_torch_eager"})
    parts = report["parts"]
    assert all(v > 0 for k, v in parts["variants"].items() if k.startswith(("train_", "forward_")))
    assert parts["cuda_tests"]["skipped"] >= 1 and parts["cuda_tests"]["failed"] == 0  # no CUDA here
    assert parts["sample_torch_eager"]["seconds"] > 0 and not parts["sample_torch_eager"]["extrapolated"]
    assert 0 < parts["train_torch_eager"]["mfu"] < 1
    assert report["verdicts"]["train_torch_eager"] == "n/a (smoke)"


@pytest.mark.slow
def test_smoke_jax_parts(tmp_path):
    """The JAX parts compile a U-Net for the CPU: tens of seconds, so not with the others."""
    pytest.importorskip("jax")
    pytest.importorskip("torch")  # the ceiling that MFU needs is measured with PyTorch
    report, stdout = _smoke(tmp_path, "ceiling,train_jax,sample_jax_scan")
    _check_report(report, stdout, {"ceiling", "train_jax", "sample_jax_scan"})
    assert report["jax"]["backend"] == "cpu" and not report["parts"]["sample_jax_scan"]["includes_compile"]


def _pyproject(root: Path, mapping: dict[str, str]) -> None:
    pairs = ", ".join(f'"{k}" = "{v}"' for k, v in mapping.items())
    (root / "pyproject.toml").write_text(f"[tool.setuptools]\npackage-dir = {{ {pairs} }}\n", encoding="utf-8")


def _package(folder: Path, **modules: str) -> None:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("", encoding="utf-8")
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text, encoding="utf-8")


def test_stage_follows_the_package_dir_mapping(tmp_path):
    """Top-level folders mapped into one package, nested and overriding, import from the stage."""
    gc = _gpu_check()
    root = tmp_path / "repo"
    _package(root / "pkg", core="X = 'core'")
    _package(root / "pkg" / "app", old="X = 'shadowed'")  # replaced by the mapping below
    _package(root / "backends", b="X = 'backends'")
    _package(root / "backends" / "torch", t="X = 'torch'")
    _package(root / "app", a="X = 'app'")
    _pyproject(root, {"pkg": "pkg", "pkg.backends": "backends", "pkg.app": "app"})
    stage = tmp_path / "stage"
    gc.stage_packages(gc.package_dirs(root), stage)
    code = ("import pkg.core, pkg.backends.b, pkg.backends.torch.t, pkg.app.a, importlib.util; "
            "print(pkg.core.X, pkg.backends.b.X, pkg.backends.torch.t.X, pkg.app.a.X, "
            "importlib.util.find_spec('pkg.app.old') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(stage)},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["core", "backends", "torch", "app", "True"]
    assert (stage / "pkg" / "backends" / "b.py").resolve() == root / "backends" / "b.py"


def test_package_dir_errors_name_the_mapping(tmp_path):
    gc = _gpu_check()
    (tmp_path / "app").mkdir()  # no __init__.py
    _pyproject(tmp_path, {"pkg.app": "app"})
    with pytest.raises(ValueError, match=r"package-dir maps 'pkg.app' to 'app', which is not a package folder"):
        gc.package_dirs(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no \\[tool.setuptools\\] package-dir mapping"):
        gc.package_dirs(tmp_path)


def test_pure_wheels_unpack_and_others_are_left_out(tmp_path, capsys):
    gc = _gpu_check()
    folder = tmp_path / "whl"
    folder.mkdir()
    for name in ("demo_pkg-1.0-py3-none-any.whl", "native-1.0-cp312-cp312-linux_x86_64.whl"):
        with zipfile.ZipFile(folder / name, "w") as z:
            z.writestr(f"{name.split('-')[0]}/__init__.py", "VALUE = 7\n")
    assert gc.unpack_wheels(folder, tmp_path / "site") == ["demo_pkg-1.0-py3-none-any.whl"]
    assert (tmp_path / "site" / "demo_pkg" / "__init__.py").read_text() == "VALUE = 7\n"
    assert not (tmp_path / "site" / "native").exists()
    assert "native-1.0-cp312-cp312-linux_x86_64.whl is not a pure-Python wheel" in capsys.readouterr().err
