"""diffusers folders <-> run directories (ddpm_core.interop.diffusers), checked against diffusers.

Every weight of the diffusers models is randomised (the zero-initialised output convolutions
too), otherwise the outputs would be zero and the comparisons vacuous.

Tolerances: two float32 implementations of the same deep network agree to float32 rounding
of a few dozen layers, plus one difference: diffusers computes the embedding frequencies in
float32 arithmetic (1 ulp off ours on 41 of 64 for cifar10), so the sines' arguments t * w
differ by up to t * ulp(w) < 1000 eps32 at t = 999. Outputs are compared with
``1000 * eps32 * max(1, |output|)`` (measured: 2.4e-6 of the output's scale, ~20 eps32). In
float64 at t = 0 the embedding is exact in both (sin 0, cos 0) and the outputs agree to
``1000 * eps64`` (measured ~20 eps64): the renaming and reshaping are exact.
"""

from __future__ import annotations

import dataclasses
import doctest
import inspect
import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import ddpm_core.interop.diffusers_unet as unet_mapping  # noqa: E402
from ddpm_core import sample  # noqa: E402
from ddpm_core.backends.torch import UNet  # noqa: E402
from ddpm_core.backends.torch.sampling import model_fn  # noqa: E402
from ddpm_core.interop.convert import load_safetensors, save_safetensors  # noqa: E402
from ddpm_core.interop.diffusers import (  # noqa: E402
    SIDECAR,
    UNET_DEFAULTS,
    diffusers_names,
    export_diffusers,
    import_diffusers,
    schedule_from_run_info,
    state_from_diffusers,
    state_to_diffusers,
    unet_from_diffusers_config,
    unet_to_diffusers_config,
)
from ddpm_core.interop.diffusers_config import write_scheduler_config  # noqa: E402
from ddpm_core.models import UNetConfig, get_preset, parameter_shapes, unet_config  # noqa: E402
from ddpm_core.runs import read_run_json, schedule_dict, write_run_json  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
# google/ddpm-cifar10-32's unet/config.json, with the fields diffusers 0.0.4 wrote (no dropout).
CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu",
    "attention_head_dim": None, "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
# The 256x256 presets' shape (six levels 1,1,2,2,4,4, attention on the fifth) at 32x32.
SMALL_256 = UNetConfig(image_size=32, in_channels=3, out_channels=3, ch=16, ch_mult=(1, 1, 2, 2, 4, 4),
                       num_res_blocks=1, attn_resolutions=(2,), num_groups=8)


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1:  # norm weights around 1, biases around 0
                p.copy_(0.1 * noise + (1.0 if name.endswith(".weight") else 0.0))
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
    return model.eval()


def _random_state(config, seed=0):
    rng = np.random.default_rng(seed)
    return {k: ((1.0 if len(s) == 1 and k.endswith(".weight") else 0.0)
                + (0.1 if len(s) == 1 else 1 / math.sqrt(math.prod(s[1:]))) * rng.standard_normal(s)
                ).astype(np.float32) for k, s in parameter_shapes(config).items()}


def _save_folder(path, unet_model, scheduler_config):
    unet_model.save_pretrained(path / "unet", safe_serialization=True)
    diffusers.DDPMScheduler.from_config(scheduler_config).save_pretrained(path / "scheduler")
    return path


def _diffusers_folder(path, config, scheduler_config, seed=0):
    cfg = config if isinstance(config, dict) else unet_to_diffusers_config(config)
    model = _randomize(diffusers.UNet2DModel.from_config(cfg), seed)
    return _save_folder(path, model, scheduler_config), model


def _write_run(path, config, *, prediction="eps", variance="fixed_small", seed=0, **extra):
    """A run directory with random weights (model == EMA), as `ddpm train` lays it out."""
    preset = get_preset("tiny")
    state = _random_state(config, seed)
    for name in ("model.safetensors", "ema.safetensors"):
        save_safetensors(path / name, state)
    train = dataclasses.replace(preset.train, prediction=prediction, variance=variance)
    write_run_json(path, backend="torch", preset="tiny", unet=config, train=train,
                   schedule=schedule_dict(train), prediction=prediction, variance=variance,
                   data="digits", step=7, seed=3, timestep_sampler="uniform", **extra)
    return path


def _our_net(run_dir, dtype=torch.float32):
    info = read_run_json(run_dir)
    net = UNet(UNetConfig.from_dict(info["unet"]))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in load_safetensors(run_dir / "ema.safetensors").items()})
    return net.to(dtype).eval()


def _assert_same_output(ours, theirs, eps):
    scale = max(1.0, float(theirs.abs().max()))
    assert float(theirs.abs().max()) > 0.1  # not vacuous
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=1000 * eps * scale)


def _inputs(config, t, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    x = torch.randn(len(t), config.in_channels, s, s, generator=g, dtype=torch.float64)
    return x.to(dtype), torch.tensor(t)


# --------------------------------------------------------------------------- configs and names

def test_defaults_are_diffusers_defaults():
    params = inspect.signature(diffusers.UNet2DModel.__init__).parameters
    theirs = {k: list(p.default) if isinstance(p.default, tuple) else p.default
              for k, p in params.items() if k != "self"}
    assert theirs == UNET_DEFAULTS


@pytest.mark.parametrize("config", [
    get_preset("tiny").unet, get_preset("cifar10").unet, get_preset("celebahq256").unet,
    unet_config("mnist", variance="learned_range"), SMALL_256,
], ids=["tiny", "cifar10", "celebahq256", "mnist-learned", "small256"])
def test_names_and_shapes_match_diffusers(config):
    cfg = unet_to_diffusers_config(config)
    assert unet_from_diffusers_config(json.loads(json.dumps(cfg))) == config
    with torch.device("meta"):
        theirs = {k: tuple(v.shape) for k, v in diffusers.UNet2DModel.from_config(cfg).state_dict().items()}
    names = diffusers_names(config)
    assert sorted(names.values()) == sorted(theirs)
    fake = {d: np.zeros(theirs[d], np.float32) for d in names.values()}
    ours = state_from_diffusers(fake, config)
    assert {k: v.shape for k, v in ours.items()} == parameter_shapes(config)
    assert {k: v.shape for k, v in state_to_diffusers(ours, config).items()} == theirs


def test_docstring_examples_run():
    result = doctest.testmod(unet_mapping, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- import

@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """A random UNet2DModel with google/ddpm-cifar10-32's config, saved by diffusers and imported."""
    root = tmp_path_factory.mktemp("cifar10")
    folder, model = _diffusers_folder(root / "folder", CIFAR10_CONFIG, {"variance_type": "fixed_large"})
    info = import_diffusers(folder, root / "run")
    return model, root / "run", info


def test_cifar10_import_gives_diffusers_output(cifar10):
    model, run, info = cifar10
    x, t = _inputs(get_preset("cifar10").unet, [0, 999])
    with torch.no_grad():
        _assert_same_output(_our_net(run)(x, t), model(x, t).sample, EPS32)


def test_cifar10_import_writes_a_cifar10_run(cifar10):
    _, run, info = cifar10
    assert read_run_json(run) == info
    assert (info["preset"], info["data"], info["backend"], info["step"]) == ("cifar10", "cifar10", "torch", 0)
    assert info["schedule"] == schedule_dict(get_preset("cifar10").train)
    assert (info["prediction"], info["variance"], info["clip"]) == ("eps", "fixed_large", 1.0)
    assert info["train"]["variance"] == "fixed_large" and info["train"]["lr"] == 2e-4
    # diffusers' config has no dropout (0.0): the same network as the preset at inference
    assert info["unet"] == {**get_preset("cifar10").unet.to_dict(), "dropout": 0.0}
    model, ema = (load_safetensors(run / f) for f in ("model.safetensors", "ema.safetensors"))
    assert sorted(model) == sorted(parameter_shapes(get_preset("cifar10").unet))
    assert all(np.array_equal(model[k], ema[k]) and model[k].dtype == np.float32 for k in model)


def test_small_256_import_in_float32_and_float64(tmp_path):
    folder, model = _diffusers_folder(tmp_path / "folder", SMALL_256, {"beta_schedule": "linear"})
    info = import_diffusers(folder, tmp_path / "run")
    assert info["preset"] == "custom" and info["data"] == ""
    x, t = _inputs(SMALL_256, [999, 0])
    with torch.no_grad():
        _assert_same_output(_our_net(tmp_path / "run")(x, t), model(x, t).sample, EPS32)
        x64, t0 = _inputs(SMALL_256, [0, 0], torch.float64)
        _assert_same_output(_our_net(tmp_path / "run", torch.float64)(x64, t0), model.double()(x64, t0).sample, EPS64)


def test_old_attention_names_are_read(tmp_path):
    folder, _ = _diffusers_folder(tmp_path / "folder", get_preset("tiny").unet, {})
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    modern = load_safetensors(weights)
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def rename(k):
        for new, legacy in old.items():
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{legacy}.")
        return k

    legacy = {rename(k): v for k, v in modern.items()}
    assert any(".query." in k for k in legacy) and any(".proj_attn." in k for k in legacy)
    weights.unlink()
    save_safetensors(weights, legacy)
    import_diffusers(folder, tmp_path / "run")
    ours = load_safetensors(tmp_path / "run" / "ema.safetensors")
    expected = state_from_diffusers(modern, get_preset("tiny").unet)
    assert all(np.array_equal(ours[k], expected[k]) for k in expected)


# --------------------------------------------------------------------------- export

@pytest.mark.parametrize(("prediction", "variance", "clip"), [
    ("eps", "fixed_large", 1.0), ("eps", "fixed_small", None), ("eps", "learned_range", 1.0),
    ("v", "fixed_small", 2.0), ("x0", "fixed_large", 1.0),
])
def test_export_then_ddpm_pipeline_gives_our_samples(tmp_path, prediction, variance, clip):
    config = unet_config("tiny", prediction=prediction, variance=variance)
    run = _write_run(tmp_path / "run", config, prediction=prediction, variance=variance, clip=clip)
    pipe = diffusers.DDPMPipeline.from_pretrained(export_diffusers(run, tmp_path / "out"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10,
                  output_type="np").images
    chain = schedule_from_run_info(read_run_json(run)).respace(10, timestep_spacing="leading")
    assert chain.timesteps.tolist() == list(range(0, 1000, 100))  # diffusers' "leading" steps
    g = torch.Generator().manual_seed(0)  # the same draws in the same order as the pipeline's
    shape = (2, 1, 8, 8)
    x_T = torch.randn(shape, generator=g)
    x = sample(chain, model_fn(_our_net(run)), x_T, lambda i: torch.randn(shape, generator=g),
               prediction=prediction, variance=variance, clip=clip)
    ours = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert ours.std() > 0.05  # not vacuous
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1000 * EPS32)  # measured <= 4.2e-6


def test_exported_unet_loads_alone(tmp_path):
    run = _write_run(tmp_path / "run", get_preset("tiny").unet)
    out = export_diffusers(run, tmp_path / "out")
    model = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    x, t = _inputs(get_preset("tiny").unet, [0, 500])
    with torch.no_grad():
        _assert_same_output(_our_net(run)(x, t), model(x, t).sample, EPS32)
    scheduler = diffusers.DDPMScheduler.from_pretrained(out / "scheduler")
    assert scheduler.config.variance_type == "fixed_small" and scheduler.config.clip_sample is True


# --------------------------------------------------------------------------- round trips

def test_import_of_export_is_the_identity(tmp_path):
    config = unet_config("tiny", variance="learned_range")
    run = _write_run(tmp_path / "run", config, variance="learned_range")
    import_diffusers(export_diffusers(run, tmp_path / "out"), tmp_path / "back")
    back, info = (json.loads((d / "run.json").read_text()) for d in (tmp_path / "back", run))
    # the import records its own files' hashes; everything else is the exported run.json
    assert sorted(back.pop("files")) == ["ema.safetensors", "model.safetensors"]
    info.pop("files", None)
    assert back == info
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_safetensors(run / name), load_safetensors(tmp_path / "back" / name)
        assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_import_and_export_show_their_stages_unless_no_progress(tmp_path, capsys):
    from ddpm_core.app import cli

    run = _write_run(tmp_path / "run", unet_config("tiny"))
    assert cli.main(["export", "diffusers", "--run", str(run), "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one plain line per stage
    assert [ln.split("|")[0].split()[1:3] for ln in lines] == [["33%", "1/3"], ["67%", "2/3"],
                                                             ["100%", "3/3"]]
    assert lines[0].startswith("export:") and "done=configs" in lines[-1] and "\r" not in lines[-1]
    assert cli.main(["import", "diffusers", str(tmp_path / "out"), "--out", str(tmp_path / "back")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 5 and "import: 100% 5/5" in err and "done=run.json" in err
    argv = ["export", "diffusers", "--run", str(run), "--out", str(tmp_path / "quiet"), "--no-progress"]
    assert cli.main(argv) == 0 and capsys.readouterr().err == ""


def test_export_of_import_is_the_identity(tmp_path):
    scheduler = write_scheduler_config({"name": "betas", "num_timesteps": 50,
                                        "betas": np.linspace(1e-3, 0.1, 50).tolist(),
                                        "rescale_zero_terminal_snr": True}, prediction="v", clip=None)
    folder, _ = _diffusers_folder(tmp_path / "folder", SMALL_256, scheduler)
    import_diffusers(folder, tmp_path / "run")
    out = export_diffusers(tmp_path / "run", tmp_path / "out")
    for sub in ("unet/config.json", "scheduler/scheduler_config.json"):
        theirs, ours = (json.loads((d / sub).read_text()) for d in (folder, out))
        drop = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
        assert drop(ours) == drop(theirs), sub
    a, b = (load_safetensors(d / "unet" / "diffusion_pytorch_model.safetensors") for d in (folder, out))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_edited_folder_is_imported_from_its_configs(tmp_path):
    run = _write_run(tmp_path / "run", get_preset("tiny").unet)
    out = export_diffusers(run, tmp_path / "out")
    path = out / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "clip_sample": False}))
    info = import_diffusers(out, tmp_path / "back")
    assert info["clip"] is None and info["step"] == 0 and "seed" not in info  # ddpm_run.json ignored
    assert (out / SIDECAR).is_file()


def test_imported_zero_snr_schedule_is_rebuilt(tmp_path):
    betas = np.linspace(1e-3, 0.1, 50).tolist()
    scheduler = {"trained_betas": betas, "num_train_timesteps": 50, "rescale_betas_zero_snr": True,
                 "prediction_type": "v_prediction"}
    folder, _ = _diffusers_folder(tmp_path / "folder", get_preset("tiny").unet, scheduler)
    info = import_diffusers(folder, tmp_path / "run")
    assert info["schedule"] == {"name": "betas", "num_timesteps": 50, "betas": betas,
                                "rescale_zero_terminal_snr": True}
    schedule = schedule_from_run_info(read_run_json(tmp_path / "run"))
    theirs = diffusers.DDPMScheduler.from_config(scheduler)
    np.testing.assert_allclose(theirs.alphas_cumprod.double().numpy(), schedule.alphas_cumprod,
                               rtol=0, atol=math.sqrt(50) / 2 * EPS32)
    assert info["train"]["num_timesteps"] == 50 and info["train"]["prediction"] == "v"


# --------------------------------------------------------------------------- errors

def _config(**changes):
    return {**unet_to_diffusers_config(get_preset("tiny").unet), **changes}


@pytest.mark.parametrize(("changes", "match"), [
    ({"freq_shift": 0}, "freq_shift=0"),
    ({"flip_sin_to_cos": True}, "flip_sin_to_cos=True"),
    ({"downsample_padding": 1}, "downsample_padding=1"),
    ({"center_input_sample": True}, "center_input_sample=True"),
    ({"time_embedding_type": "fourier"}, "time_embedding_type='fourier'"),
    ({"act_fn": "gelu"}, "act_fn='gelu'"),
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift='scale_shift'"),
    ({"mid_block_scale_factor": 2}, "mid_block_scale_factor=2"),
    ({"mid_block_type": None}, "mid_block_type=None"),
    ({"downsample_type": "resnet"}, "downsample_type='resnet'"),
    ({"upsample_type": "resnet"}, "upsample_type='resnet'"),
    ({"add_attention": False}, "add_attention=False"),
    ({"class_embed_type": "timestep"}, "class_embed_type='timestep'"),
    ({"num_class_embeds": 10}, "num_class_embeds=10"),
    ({"attention_head_dim": 8}, "attention_head_dim=8"),
    ({"attn_norm_num_groups": 4}, "attn_norm_num_groups=4"),
    ({"time_embedding_dim": 32}, "time_embedding_dim=32"),
    ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}, "down_block_types"),
    ({"up_block_types": ["UpBlock2D", "AttnUpBlock2D"]}, "up_block_types"),
    ({"down_block_types": ["DownBlock2D"]}, "down_block_types"),
    ({"block_out_channels": [16, 24]}, "block_out_channels"),
    ({"sample_size": [8, 16]}, "sample_size"),
    ({"layers_per_block": 0}, "layers_per_block=0"),
    ({"_class_name": "UNet2DConditionModel"}, "_class_name='UNet2DConditionModel'"),
    ({"cross_attention_dim": 768}, "cross_attention_dim"),
    ({"norm_num_groups": 5}, "num_groups must divide"),
])
def test_unsupported_unet_fields_are_named(changes, match):
    with pytest.raises(ValueError, match=match):
        unet_from_diffusers_config(_config(**changes))


def test_absent_fields_take_diffusers_defaults():
    config = {k: v for k, v in _config().items() if k != "freq_shift"}
    with pytest.raises(ValueError, match="freq_shift=0 .*default"):
        unet_from_diffusers_config(config)
    assert unet_from_diffusers_config(_config(attention_head_dim=32)).ch == 16  # one head of 32


@pytest.mark.parametrize(("config", "info", "match"), [
    (dataclasses.replace(get_preset("tiny").unet, ch_mult=(2, 2)), {}, "ch_mult"),
    (dataclasses.replace(get_preset("tiny").unet, resamp_with_conv=False), {}, "resamp_with_conv"),
    (unet_config("tiny", prediction="mean"), {"prediction": "mean"}, "prediction='mean'"),
    (unet_config("tiny", variance="learned"), {"variance": "learned"}, "variance='learned'"),
    (dataclasses.replace(get_preset("tiny").unet, num_classes=10),
     {"classes": {"num_classes": 10, "names": [str(k) for k in range(10)]}}, "num_classes=10: a class-conditional"),
])
def test_unexportable_runs_are_named(tmp_path, config, info, match):
    run = _write_run(tmp_path / "run", config, **info)
    with pytest.raises(ValueError, match=match):
        export_diffusers(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        import_diffusers(tmp_path / "nowhere", tmp_path / "run")
    folder, _ = _diffusers_folder(tmp_path / "folder", get_preset("tiny").unet, {})
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model.bin: a pickled.*safe_serialization=True"):
        import_diffusers(folder, tmp_path / "run")
    (folder / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors: missing"):
        import_diffusers(folder, tmp_path / "run")
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="scheduler_config.json: missing"):
        import_diffusers(folder, tmp_path / "run")
    (folder / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not readable JSON"):
        import_diffusers(folder, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_contents_name_the_file_and_field(tmp_path):
    folder, _ = _diffusers_folder(tmp_path / "folder", get_preset("tiny").unet, {"variance_type": "learned_range"})
    with pytest.raises(ValueError, match="config.json: out_channels=1 does not fit variance_type='learned_range'"):
        import_diffusers(folder, tmp_path / "run")
    _save_folder(tmp_path / "f2", _randomize(diffusers.UNet2DModel.from_config(_config())),
                 {"thresholding": True})
    with pytest.raises(ValueError, match="scheduler_config.json: .*thresholding=True"):
        import_diffusers(tmp_path / "f2", tmp_path / "run")
    weights = tmp_path / "f2" / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_safetensors(weights)
    del state["conv_in.bias"]
    weights.unlink()
    save_safetensors(weights, state)
    (tmp_path / "f2" / "scheduler" / "scheduler_config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"safetensors: weights do not match .*missing=\['conv_in.bias'\]"):
        import_diffusers(tmp_path / "f2", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_never_overwrites(tmp_path):
    run = _write_run(tmp_path / "run", get_preset("tiny").unet)
    out = export_diffusers(run, tmp_path / "out")
    with pytest.raises(FileExistsError, match="out: already exists"):
        export_diffusers(run, out)
    with pytest.raises(FileExistsError, match="run: already exists"):
        import_diffusers(out, run)
    with pytest.raises(ValueError, match=r"preset='mnist' does not match .*'image_size'"):
        import_diffusers(out, tmp_path / "other", preset="mnist")
    os.remove(out / SIDECAR)
    info = import_diffusers(out, tmp_path / "again", preset="tiny", data="mnist")
    assert (info["preset"], info["data"]) == ("tiny", "mnist")
