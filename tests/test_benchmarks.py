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


def _tables(text: str) -> dict[str, dict[str, list[str]]]:
    """{backend: {category: cells}} of step_profile's Markdown tables."""
    out: dict[str, dict[str, list[str]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].endswith(": category"):
            current = out.setdefault(cells[0].split(":")[0], {})
        elif line.startswith("| ") and cells[1] != "---":
            current[cells[0]] = cells[1:]
    return out


def test_step_profile_attributes_the_step_to_convolutions_and_the_rest(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    profile = load_benchmark("step_profile")
    assert profile.main(["--preset", "tiny", "--batch", "2", "--steps", "1"]) == 0
    tables = _tables(capsys.readouterr().out)
    jax_rows, torch_rows = tables["jax"], tables["torch"]
    for kind in ("forward", "input gradient", "weight gradient"):  # every conv: 3 ops
        cells = jax_rows[f"convolution, {kind}"]
        assert float(cells[0]) > 0 and int(cells[2]) >= 10, (kind, cells)
    assert {"convolution, forward", "convolution, input + weight gradients"} <= set(torch_rows)
    for rows in (jax_rows, torch_rows):
        parts = sum(float(c[0]) for k, c in rows.items() if k != "total")
        assert parts == pytest.approx(float(rows["total"][0]), abs=0.1 * len(rows))


def test_step_profile_reads_a_weight_gradient_from_its_window():
    profile = load_benchmark("step_profile")
    hlo = """HloModule m

%fused_computation.1 (param_0: f32[16,28,28,64], param_1: f32[28,28,64,32]) -> f32[16,3,3,32] {
  %param_0 = f32[16,28,28,64]{3,2,1,0} parameter(0)
  ROOT %convolution.2 = f32[16,3,3,32]{3,2,1,0} convolution(%param_0, %param_1), window={size=28x28 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}

%fused_computation.2 (param_0: f32[64,28,28,16], param_1: f32[3,3,16,32]) -> f32[64,28,28,32] {
  ROOT %convolution.3 = f32[64,28,28,32]{3,2,1,0} convolution(%param_0, %param_1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(f)/transpose(jvp(UNet))/conv"}
}

ENTRY %main {
  %ynn_fusion.1 = f32[16,3,3,32]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.1, backend_config={}
  %ynn_fusion.2 = f32[64,28,28,32]{3,2,1,0} fusion(%c, %d), kind=kCustom, calls=%fused_computation.2, metadata={op_name="jit(f)/transpose(jvp(UNet))/conv"}
  %convolution.9 = f32[64,28,28,32]{3,2,1,0} convolution(%e, %f), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(f)/jvp(UNet)/conv"}
  ROOT %t.1 = f32[28,28,64,16]{3,2,1,0} transpose(%g), dimensions={1,2,3,0}
}
"""  # noqa: E501 - HLO text as XLA prints it
    assert profile.hlo_categories(hlo) == {
        "param_0": "elementwise fusions (norm, SiLU, adds, copies)",
        "convolution.2": "convolution, weight gradient",
        "convolution.3": "convolution, input gradient",
        "ynn_fusion.1": "convolution, weight gradient",
        "ynn_fusion.2": "convolution, input gradient",
        "convolution.9": "convolution, forward",
        "t.1": "layout transposes"}
