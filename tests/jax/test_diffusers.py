"""diffusers folders on the JAX backend.

The renaming itself is checked against diffusers in tests/torch/test_diffusers.py. Here:

- an imported run is read by the JAX backend in an interpreter where PyTorch cannot be
  imported (the conversion is NumPy only), and its weights are exactly the folder's;
- the Flax U-Net in float64 agrees with the PyTorch one to float64 rounding (both compute
  the embedding's frequencies and sines in float64; float32 would be off by ~1e-4);
- where diffusers is installed (not in the jax nox session), the Flax U-Net on an imported
  folder gives diffusers' output within the float32 tolerance of tests/torch/test_diffusers.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402

from ddpm_core.backends.jax import UNet  # noqa: E402
from ddpm_core.interop.convert import save_safetensors, torch_to_flax  # noqa: E402
from ddpm_core.interop.diffusers import (  # noqa: E402
    import_diffusers,
    state_to_diffusers,
    unet_to_diffusers_config,
)
from ddpm_core.interop.diffusers_config import write_scheduler_config  # noqa: E402
from ddpm_core.models import UNetConfig, get_preset, parameter_shapes, unet_config  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
SMALL_256 = UNetConfig(image_size=32, in_channels=3, out_channels=3, ch=16, ch_mult=(1, 1, 2, 2, 4, 4),
                       num_res_blocks=1, attn_resolutions=(2,), num_groups=8)
# google/ddpm-cifar10-32's unet/config.json (as in tests/torch/test_diffusers.py)
CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}


def _random_state(config, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {k: ((1.0 if len(s) == 1 and k.endswith(".weight") else 0.0)
                + (0.1 if len(s) == 1 else 1 / math.sqrt(math.prod(s[1:]))) * rng.standard_normal(s)
                ).astype(dtype) for k, s in parameter_shapes(config).items()}


def _numpy_folder(path, config, state, scheduler):
    """A diffusers-format folder written without diffusers."""
    (path / "unet").mkdir(parents=True)
    (path / "scheduler").mkdir()
    save_safetensors(path / "unet" / "diffusion_pytorch_model.safetensors", state_to_diffusers(state, config))
    (path / "unet" / "config.json").write_text(json.dumps(unet_to_diffusers_config(config)))
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return path


_NO_TORCH = """
import json, sys
sys.modules["torch"] = None  # `import torch` raises ImportError from here on
import numpy as np
from ddpm_core.interop.convert import torch_to_flax
from ddpm_core.interop.diffusers import import_diffusers, schedule_from_run_info
from ddpm_core.backends.jax import checkpoint
from ddpm_core.models import UNetConfig
info = import_diffusers(sys.argv[1], sys.argv[2])
params = checkpoint.load_weights(sys.argv[2] + "/ema.safetensors", UNetConfig.from_dict(info["unet"]))
leaves = {"/".join(str(k.key) for k in p): np.asarray(v) for p, v in
          __import__("jax").tree_util.tree_flatten_with_path(params)[0]}
np.savez(sys.argv[3], abar=schedule_from_run_info(info).alphas_cumprod, **leaves)
print(json.dumps({"info": info, "leaked": sorted(m for m in ("torch", "diffusers") if sys.modules.get(m))}))
"""


def test_jax_reads_an_imported_run_without_pytorch(tmp_path):
    config = unet_config("tiny", prediction="v", variance="learned_range")
    state = _random_state(config)
    entry = {"name": "betas", "num_timesteps": 50, "betas": np.linspace(1e-3, 0.1, 50).tolist(),
             "rescale_zero_terminal_snr": True}
    folder = _numpy_folder(tmp_path / "folder", config, state,
                           write_scheduler_config(entry, prediction="v", variance="learned_range"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(folder), str(tmp_path / "run"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["leaked"] == []
    info = result["info"]
    assert (info["schedule"], info["prediction"], info["variance"]) == (entry, "v", "learned_range")
    out = np.load(tmp_path / "out.npz")
    assert out["abar"][-1] == 0.0  # zero terminal SNR rebuilt from the run.json entry
    expected = jax.tree_util.tree_flatten_with_path(torch_to_flax(state, config))[0]
    for path, leaf in expected:
        np.testing.assert_array_equal(out["/".join(str(k.key) for k in path)], leaf)
    assert len(expected) == len(out.files) - 1


def _jax_forward(config, params, x, t, dtype=jnp.float32):
    return np.asarray(jax.jit(UNet(config=config, dtype=dtype).apply)({"params": params}, x, t))


def test_float64_unets_agree():
    """float64 Flax vs float64 PyTorch on the same random weights, every t range."""
    torch = pytest.importorskip("torch")
    from ddpm_core.backends.torch import UNet as TorchUNet

    config = get_preset("tiny").unet
    state = _random_state(config, dtype=np.float64)
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((3, 1, 8, 8)), np.array([0, 517, 999])
    net = TorchUNet(config).double().eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        theirs = net(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    with jax.enable_x64(True):
        ours = _jax_forward(config, torch_to_flax(state, config), jnp.asarray(x), jnp.asarray(t), jnp.float64)
    assert ours.dtype == np.float64 and np.abs(theirs).max() > 0.1
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1000 * EPS64 * scale)


@pytest.mark.parametrize("config", [
    SMALL_256, pytest.param(CIFAR10_CONFIG, marks=pytest.mark.slow, id="cifar10")], ids=["small256", "cifar10"])
def test_jax_gives_diffusers_output(tmp_path, config):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    cfg = config if isinstance(config, dict) else unet_to_diffusers_config(config)
    model = diffusers.UNet2DModel.from_config(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every weight random, zero-initialised ones too
            noise = torch.randn(p.shape, generator=g)
            p.copy_(0.1 * noise + (1.0 if name.endswith(".weight") else 0.0) if p.ndim == 1
                    else noise / math.sqrt(p[0].numel()))
    model.save_pretrained(tmp_path / "folder" / "unet", safe_serialization=True)
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "folder" / "scheduler")
    info = import_diffusers(tmp_path / "folder", tmp_path / "run")
    from ddpm_core.backends.jax import checkpoint

    unet = UNetConfig.from_dict(info["unet"])
    params = checkpoint.load_weights(tmp_path / "run" / "ema.safetensors", unet)
    s = unet.image_size
    x = np.random.default_rng(1).standard_normal((2, unet.in_channels, s, s)).astype(np.float32)
    t = np.array([0, 999])
    with torch.no_grad():
        theirs = model(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    ours = _jax_forward(unet, params, jnp.asarray(x), jnp.asarray(t))
    assert np.abs(theirs).max() > 0.1
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1000 * EPS32 * scale)
