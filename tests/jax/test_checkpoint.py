"""JAX checkpoints: safetensors only, exact round trip, canonical weight exports."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
optax = pytest.importorskip("optax")

from ddpm_core.backends.jax import checkpoint as ckpt  # noqa: E402
from ddpm_core.backends.jax.training import make_optimizer  # noqa: E402
from ddpm_core.backends.jax.unet import build_unet, param_shapes  # noqa: E402
from ddpm_core.interop.convert import load_safetensors  # noqa: E402
from ddpm_core.models import get_preset, parameter_shapes  # noqa: E402


def _random_tree(template, seed):
    rng = np.random.default_rng(seed)

    def leaf(x):
        if np.issubdtype(x.dtype, np.integer):
            return np.asarray(rng.integers(0, 1000), dtype=x.dtype).reshape(x.shape)
        return rng.standard_normal(x.shape).astype(x.dtype)

    return jax.tree.map(leaf, template)


@pytest.fixture(scope="module")
def setup():
    preset = get_preset("tiny")
    shapes = param_shapes(build_unet(preset))
    tx = make_optimizer(preset.train)
    opt_shapes = jax.eval_shape(tx.init, shapes)
    params, ema = _random_tree(shapes, 0), _random_tree(shapes, 1)
    opt_state = _random_tree(opt_shapes, 2)
    return preset.unet, shapes, opt_shapes, params, ema, opt_state


def test_round_trip_is_exact(setup, tmp_path):
    config, shapes, opt_shapes, params, ema, opt_state = setup
    key = jax.random.key(123)
    ckpt.save_state(tmp_path, config=config, params=params, ema=ema, opt_state=opt_state,
                    key=key, step=17, scalars={"seed": 5},
                    arrays={"tsampler/losses": np.arange(6.0).reshape(3, 2)})
    got = ckpt.load_state(tmp_path, params=shapes, ema=shapes, opt_state=opt_shapes)
    assert got["step"] == 17 and got["scalars"] == {"seed": 5}
    np.testing.assert_array_equal(got["key"], np.asarray(jax.random.key_data(key)))
    np.testing.assert_array_equal(got["arrays"]["tsampler/losses"], np.arange(6.0).reshape(3, 2))
    for name, ref in (("params", params), ("ema", ema), ("opt_state", opt_state)):
        a, b = jax.tree.leaves(got[name]), jax.tree.leaves(ref)
        assert jax.tree.structure(got[name]) == jax.tree.structure(ref)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)


def test_exports_are_canonical_torch_layout(setup, tmp_path):
    config, shapes, opt_shapes, params, ema, opt_state = setup
    ckpt.save_state(tmp_path, config=config, params=params, ema=ema, opt_state=opt_state,
                    key=jax.random.key(0), step=3)
    state = load_safetensors(tmp_path / "ema.safetensors")
    canonical = parameter_shapes(config)
    assert list(state) == list(canonical) or set(state) == set(canonical)
    assert all(state[k].shape == canonical[k] for k in canonical)
    back = ckpt.load_weights(tmp_path / "ema.safetensors", config)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(ema), strict=True):
        np.testing.assert_array_equal(x, y)


def test_state_file_is_safetensors_with_json_metadata(setup, tmp_path):
    config, shapes, opt_shapes, params, ema, opt_state = setup
    path = ckpt.save_state(tmp_path, config=config, params=params, ema=ema,
                           opt_state=opt_state, key=jax.random.key(0), step=9,
                           export_weights=False)
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"][ckpt.STATE_KEY])
    assert meta["format"] == ckpt.STATE_FORMAT and meta["step"] == 9
    assert not (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob(".*tmp*"))  # nothing left behind by the atomic write


def test_mismatch_and_garbage_fail_with_the_file_name(setup, tmp_path):
    config, shapes, opt_shapes, params, ema, opt_state = setup
    with pytest.raises(FileNotFoundError, match="state-jax.safetensors"):
        ckpt.load_state(tmp_path, params=shapes, ema=shapes, opt_state=opt_shapes)
    ckpt.save_state(tmp_path, config=config, params=params, ema=ema, opt_state=opt_state,
                    key=jax.random.key(0), step=1, export_weights=False)
    other = param_shapes(build_unet(get_preset("digits")))
    with pytest.raises(ValueError, match="state-jax.safetensors.*expected"):
        ckpt.load_state(tmp_path, params=other, ema=other, opt_state=opt_shapes)
    ckpt.state_path(tmp_path).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="state-jax.safetensors"):
        ckpt.load_state(tmp_path, params=shapes, ema=shapes, opt_state=opt_shapes)
    with pytest.raises(ValueError, match="must not start with"):
        ckpt.save_state(tmp_path, config=config, params=params, ema=ema, opt_state=opt_state,
                        key=jax.random.key(0), step=1, arrays={"model/x": np.zeros(1)})


def test_torch_run_samples_with_jax(tmp_path):
    """A run directory whose weights were written by the PyTorch backend samples with JAX."""
    torch = pytest.importorskip("torch")
    from ddpm_core.app.run.rundir import schedule_dict, write_run_json
    from ddpm_core.backends.jax import api
    from ddpm_core.backends.torch.checkpoint import save_weights
    from ddpm_core.backends.torch.unet import UNet

    preset = get_preset("tiny")
    torch.manual_seed(0)
    net = UNet(preset.unet)
    save_weights(tmp_path / "ema.safetensors", net.state_dict())
    train = dataclasses.replace(preset.train, num_timesteps=20)  # run.json's sections agree
    write_run_json(tmp_path, backend="torch", preset="tiny", unet=preset.unet, train=train,
                   schedule=schedule_dict(train),
                   prediction="eps", variance="fixed_small", data="digits", step=0)
    images = api.sample(tmp_path, n=2, sampler="ddim", steps=4, seed=0)
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.uint8
