"""The state-file format both backends write (``ddpm_core.app.run.state_file``), without a framework."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddpm_core.app.run import state_file as sf


def _tensors(arrays=None):
    return sf.state_tensors(model={"w": np.arange(4.0, dtype=np.float32)},
                            ema={"w": np.ones(4, np.float32)},
                            opt={"0/step": np.array(3.0, np.float32)},
                            rng={"key": np.array([0, 7], np.uint32)}, arrays=arrays)


def test_names_header_and_round_trip(tmp_path):
    tensors = _tensors({"tsampler/losses": np.arange(6.0).reshape(3, 2)})
    assert sorted(tensors) == ["ema/w", "model/w", "opt/0/step", "rng/key", "tsampler/losses"]
    header = sf.state_header(5, {"seed": 1}, param_groups=[{"lr": 0.1}], key_impl="threefry2x32")
    assert list(header) == ["format", "step", "param_groups", "scalars", "key_impl"]
    assert list(sf.state_header(5)) == ["format", "step", "scalars"]
    path = sf.write_state(sf.state_path(tmp_path, "numpy"), tensors, header)
    assert path.name == "state-numpy.safetensors"
    raw = path.read_bytes()
    meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    assert json.loads(meta[sf.STATE_KEY]) == header
    assert not list(tmp_path.glob(".*tmp*"))
    got = sf.read_state(tmp_path, "numpy", "NumPy")
    assert got.path == path and got.step == 5 and got.scalars == {"seed": 1}
    assert got.header == header
    assert sorted(got.extra) == ["tsampler/losses"]
    assert got.part("opt/")["0/step"].shape == ()  # a 0-d array stays 0-d
    for k, v in tensors.items():
        assert got.tensors[k].dtype == v.dtype
        np.testing.assert_array_equal(got.tensors[k], v)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="state-x.safetensors: no checkpoint"):
        sf.read_state(tmp_path, "x", "X")
    with pytest.raises(ValueError, match="must not start with"):
        _tensors({"rng/other": np.zeros(1)})
    path = sf.state_path(tmp_path, "x")
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="state-x.safetensors: not a ddpm-core X state file"):
        sf.read_state(tmp_path, "x", "X")
    sf.write_state(path, _tensors(), {**sf.state_header(1), "format": 2})
    with pytest.raises(ValueError, match=r"state format 2 is not supported \(this version reads format 1\)"):
        sf.read_state(tmp_path, "x", "X")
