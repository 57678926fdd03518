"""The step benchmark compares like with like: every contender of a row computes the same thing."""

from __future__ import annotations

import numpy as np
import pytest
from ddpm_testing import load_benchmark


def _bench():
    return load_benchmark("bench_steps")


def _first(result) -> np.ndarray:
    """x_prev (or x_t) of a contender's result: a tuple, a StepResult, a diffusers output."""
    for attr in ("prev_sample", "x_prev"):
        if hasattr(result, attr):
            result = getattr(result, attr)
            break
    else:
        if isinstance(result, tuple):
            result = result[0]
    return np.asarray(result, dtype=np.float64)


def _check_rows(rows, rtol: float) -> None:
    for name, contenders in rows.items():
        if "randn" in name:
            continue  # draws fresh noise per call: nothing to compare
        reference = _first(contenders["core"]())
        for who, fn in contenders.items():
            np.testing.assert_allclose(_first(fn()), reference, rtol=rtol, atol=rtol,
                                       err_msg=f"{name}: {who} differs from the core")


def test_numpy_floors_match_the_core():
    bench = _bench()
    _check_rows(bench.numpy_rows(bench.dc.Schedule.linear(1000)), rtol=1e-5)


def test_torch_floors_and_diffusers_match_the_core():
    pytest.importorskip("torch")
    bench = _bench()
    rows = bench.torch_rows(bench.dc.Schedule.linear(1000))
    tensor_t = {"ddpm_step tensor t", "ddim_step eta=0 tensor t", "q_sample tensor t"}
    assert tensor_t <= set(rows), "the tensor-t rows (issue 14) are missing"
    try:
        import diffusers  # noqa: F401
    except ImportError:
        pass
    else:
        assert all("diffusers" in rows[name] for name in tensor_t)
    _check_rows(rows, rtol=1e-5)


def test_jax_floors_match_the_core():
    pytest.importorskip("jax")
    bench = _bench()
    _check_rows(bench.jax_rows(bench.dc.Schedule.linear(1000)), rtol=1e-5)


def test_train_breakdown_times_every_part_of_both_backends(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    breakdown = load_benchmark("train_breakdown")
    assert breakdown.main(["--preset", "tiny", "--batch", "2", "--rounds", "1", "--reps", "1"]) == 0
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ")[1:] for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("| ") and not ln.startswith("| part")}
    assert set(rows) == {"network", "network flax", "update", "convs", "convs NCHW", "norm", "norm flax", "copy",
                         "network + update (+ copy)"}
    for name, cells in rows.items():
        if name != "copy":
            assert float(cells[0]) > 0 and float(cells[1]) > 0 and cells[2].endswith("x |"), (name, cells)


def test_train_breakdown_rejects_a_bad_batch():
    breakdown = load_benchmark("train_breakdown")
    with pytest.raises(SystemExit):
        breakdown.main(["--batch", "0"])
