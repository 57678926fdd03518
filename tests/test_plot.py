"""``ddpm plot``: the loss curve of a run's log.csv as a PNG, and its one-line errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ddpm_core.app import cli
from ddpm_core.app.run.fid_log import FID_LOG_FIELDS, append_fid_row, read_fid_rows
from ddpm_core.app.run.plot import read_loss_curve, read_loss_parts

HEADER = "step,loss,grad_norm,lr,images_per_s,seconds\n"


def _run(tmp_path, rows=((50, 0.9), (100, 0.31), (150, 0.052))):
    run = tmp_path / "run"
    run.mkdir()
    lines = "".join(f"{s},{loss},1.0,0.0002,100.0,0.5\n" for s, loss in rows)
    (run / "log.csv").write_text(HEADER + lines)
    return run


def test_read_loss_curve_returns_the_logged_steps_and_losses(tmp_path):
    steps, losses = read_loss_curve(_run(tmp_path))
    assert steps.tolist() == [50, 100, 150] and steps.dtype == np.int64
    np.testing.assert_array_equal(losses, [0.9, 0.31, 0.052])


def test_plot_writes_the_png_into_the_run_and_prints_one_json_object(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    run = _run(tmp_path)
    assert cli.main(["plot", "--run", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"out": str(run / "loss.png"), "points": 3, "last_step": 150,
                   "last_loss": 0.052, "fid_points": 0, "parts": []}
    with Image.open(run / "loss.png") as png:
        assert png.format == "PNG" and png.size == (640, 400)
    assert sorted(p.name for p in run.iterdir()) == ["log.csv", "loss.png"]  # no temporaries
    other = tmp_path / "curve.png"
    assert cli.main(["plot", "--run", str(run), "--out", str(other)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {other} (3 points")
    assert other.is_file()


def _fid_row(step, fid, steps=None):
    return {"step": step, "sampler": "ddpm", "steps": steps, "n": 500, "reference_n": 5000,
            "fid": fid, "kid": 0.01, "kid_std": 0.001, "floor_fid": 15.1, "floor_kid": 0.0007}


def test_fid_rows_append_once_with_a_header_and_read_back(tmp_path):
    run = _run(tmp_path)
    assert read_fid_rows(run) == []
    append_fid_row(run, _fid_row(100, 80.123456789))
    path = append_fid_row(run, _fid_row(150, 40.5, steps=20))
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(FID_LOG_FIELDS) and len(lines) == 3  # one header
    rows = read_fid_rows(run)
    assert rows[0] == {**_fid_row(100, 80.1235), "steps": None}  # 6 significant digits
    assert rows[1]["steps"] == 20 and rows[1]["step"] == 150 and rows[1]["sampler"] == "ddpm"
    with pytest.raises(KeyError, match="needs fid"):
        append_fid_row(run, {k: v for k, v in _fid_row(1, 1.0).items() if k != "fid"})


def test_plot_draws_the_evaluated_fids_on_a_second_axis(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = _run(tmp_path)
    assert cli.main(["plot", "--run", str(run), "--out", str(tmp_path / "a.png")]) == 0
    append_fid_row(run, _fid_row(100, 80.0))
    append_fid_row(run, _fid_row(150, 40.0))
    append_fid_row(run, _fid_row(150, 30.0, steps=20))
    capsys.readouterr()
    assert cli.main(["plot", "--run", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fid_points"] == 3
    assert (run / "loss.png").read_bytes() != (tmp_path / "a.png").read_bytes()


def _hybrid_run(tmp_path, parts=("0.95,9.7", "0.30,4.1", "0.05,2.0")):
    """A log with the loss parts of ``--loss hybrid`` (the header the trainer writes)."""
    run = tmp_path / "run"
    run.mkdir()
    lines = "".join(f"{s},{loss},1.0,0.0002,100.0,0.5,{p}\n"
                    for (s, loss), p in zip([(50, 0.96), (100, 0.304), (150, 0.052)], parts, strict=True))
    (run / "log.csv").write_text(HEADER.strip() + ",loss_simple,loss_vlb\n" + lines)
    return run


def test_a_run_trained_with_the_bound_gets_its_parts_drawn_in_a_second_panel(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    run = _hybrid_run(tmp_path, parts=("0.95,9.7", ",", "0.05,2.0"))  # a row without parts
    got = read_loss_parts(run)
    np.testing.assert_array_equal(got["loss_vlb"], [9.7, np.nan, 2.0])
    np.testing.assert_array_equal(got["loss_simple"], [0.95, np.nan, 0.05])
    assert cli.main(["plot", "--run", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parts"] == ["loss_simple", "loss_vlb"]
    with Image.open(run / "loss.png") as png:
        assert png.size == (640, 640)  # the bound's panel below the loss
    (tmp_path / "plain").mkdir()
    assert read_loss_parts(_run(tmp_path / "plain")) == {}


def test_a_bad_loss_part_is_a_one_line_error_naming_the_line(tmp_path, capsys):
    run = _hybrid_run(tmp_path, parts=("0.95,9.7", "0.30,many", "0.05,2.0"))
    err = _error(["plot", "--run", str(run)], capsys)
    assert "log.csv: line 3: loss_vlb 'many' is not a number" in err


def test_one_point_plots_too(tmp_path):
    pytest.importorskip("matplotlib")
    assert cli.main(["plot", "--run", str(_run(tmp_path, rows=[(1, 1.2)])), "--json"]) == 0


def _error(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddpm plot: error: ") and err.count("\n") == 1
    return err


def test_bad_input_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    assert "nope: no such run directory" in _error(["plot", "--run", str(tmp_path / "nope")], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty / 'log.csv'}: no such file" in _error(["plot", "--run", str(empty)], capsys)
    (empty / "log.csv").write_text(HEADER)
    assert f"{empty / 'log.csv'}: the log is empty" in _error(["plot", "--run", str(empty)], capsys)
    (empty / "log.csv").write_text("a,b\n1,2\n")
    assert "not a training log (no 'step' column)" in _error(["plot", "--run", str(empty)], capsys)
    (empty / "log.csv").write_text(HEADER + "5,0.5,1,1,1,1\n7,nan?,1,1,1,1\n")
    assert "log.csv: line 3:" in _error(["plot", "--run", str(empty)], capsys)
    run = _run(tmp_path)
    (run / "fid.csv").write_text("step,fid\n1,2\n")
    assert "fid.csv: not an FID log" in _error(["plot", "--run", str(run)], capsys)
    (run / "fid.csv").write_text(",".join(FID_LOG_FIELDS) + "\n" + "x," * 9 + "x\n")
    assert "fid.csv: line 2:" in _error(["plot", "--run", str(run)], capsys)
    (run / "fid.csv").unlink()
    assert "must end in .png" in _error(["plot", "--run", str(run), "--out", "x.jpg"], capsys)
    missing = tmp_path / "no" / "x.png"
    assert "does not exist" in _error(["plot", "--run", str(run), "--out", str(missing)], capsys)


def test_a_missing_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    run = _run(tmp_path)
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)  # every import of it fails
    assert 'pip install "ddpm-core[eval]"' in _error(["plot", "--run", str(run)], capsys)
    assert not (run / "loss.png").exists()


def test_plot_has_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["plot", "--help"])
    assert info.value.code == 0 and "usage: ddpm plot" in capsys.readouterr().out
