"""Model presets and the framework-neutral U-Net structure (no framework needed)."""

import dataclasses
import json
import subprocess
import sys

import pytest

from ddpm_core.models import (
    Preset,
    TrainConfig,
    count_parameters,
    get_preset,
    list_presets,
    output_channels,
    parameter_shapes,
    timestep_frequencies,
    unet_plan,
    with_head,
)

# Exact counts of the canonical layout (the official TF code: 35,746,307 for CIFAR10).
EXPECTED_COUNTS = {
    "cifar10": 35_746_307,
    "celebahq256": 113_673_219,
    "lsun256": 113_673_219,
    "mnist": 686_769,
    "digits": 701_345,
    "tiny": 176_849,
}


def test_list_presets_names():
    assert list_presets() == ["cifar10", "celebahq256", "lsun256", "mnist", "digits", "tiny"]


@pytest.mark.parametrize("name", list_presets())
def test_parameter_counts(name):
    assert count_parameters(get_preset(name).unet) == EXPECTED_COUNTS[name]


def test_cifar10_matches_the_paper():
    p = get_preset("cifar10")
    assert abs(count_parameters(p.unet) - 35.7e6) / 35.7e6 < 0.005
    u, tr = p.unet, p.train
    assert (u.ch, u.ch_mult, u.num_res_blocks, u.attn_resolutions, u.dropout) == (128, (1, 2, 2, 2), 2, (16,), 0.1)
    assert (tr.lr, tr.warmup_steps, tr.batch_size, tr.grad_clip, tr.ema_decay) == (2e-4, 5000, 128, 1.0, 0.9999)
    assert tr.random_flip and tr.num_timesteps == 1000
    assert (tr.schedule, tr.beta_start, tr.beta_end) == ("linear", 1e-4, 0.02)


@pytest.mark.parametrize("name", ["celebahq256", "lsun256"])
def test_256_presets_match_the_paper(name):
    p = get_preset(name)
    assert p.image_size == 256 and p.unet.ch_mult == (1, 1, 2, 2, 4, 4)
    assert abs(count_parameters(p.unet) - 114e6) / 114e6 < 0.01
    assert p.train.lr == 2e-5 and p.train.batch_size == 64


@pytest.mark.parametrize("name", ["mnist", "digits", "tiny"])
def test_digit_presets_never_flip(name):
    p = get_preset(name)
    assert not p.train.random_flip
    assert p.channels == 1


def test_mnist_resolutions_are_integers():
    u = get_preset("mnist").unet
    assert u.image_size == 28 and u.resolutions == (28, 14, 7)
    assert set(u.attn_resolutions) <= set(u.resolutions)


@pytest.mark.parametrize("name", list_presets())
def test_preset_json_round_trip(name):
    p = get_preset(name)
    d = json.loads(json.dumps(p.to_dict()))
    assert Preset.from_dict(d) == p
    assert d["image_size"] == p.image_size and d["channels"] == p.channels


def test_from_dict_rejects_unknown_and_inconsistent_keys():
    d = get_preset("tiny").to_dict()
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        Preset.from_dict({**d, "unet": {**d["unet"], "widht": 3}})
    with pytest.raises(ValueError, match="image_size"):
        Preset.from_dict({**d, "image_size": 9})


def test_get_preset_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10.*tiny"):
        get_preset("cifar100")


def test_presets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("cifar10").unet.ch = 64  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variance", "expected"), [("fixed_small", 3), ("fixed_large", 3), ("learned", 6), ("learned_range", 6)]
)
def test_output_channels(variance, expected):
    assert output_channels(3, variance=variance) == expected
    assert with_head(get_preset("cifar10").unet, variance=variance).out_channels == expected


def test_output_channels_rejects_bad_arguments():
    with pytest.raises(ValueError, match="variance"):
        output_channels(3, variance="large")
    with pytest.raises(ValueError, match="prediction"):
        output_channels(3, prediction="noise")
    with pytest.raises(ValueError, match="channels"):
        output_channels(0)


def _tiny(**kw):
    return dataclasses.replace(get_preset("tiny").unet, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"image_size": 9}, "divisible"),
        ({"attn_resolutions": (3,)}, "attn_resolutions"),
        ({"num_groups": 5}, "num_groups"),
        ({"dropout": 1.0}, "dropout"),
        ({"ch_mult": ()}, "ch_mult"),
        ({"ch_mult": (1, 0)}, "ch_mult"),
        ({"ch": 0}, "ch"),
        ({"num_res_blocks": 1.5}, "num_res_blocks"),
    ],
)
def test_bad_unet_config(kw, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"warmup_steps": -1}, "warmup"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"schedule": "cosin"}, "schedule"),
        ({"beta_start": 0.1, "beta_end": 0.01}, "beta_start"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_train_config(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_plan_skip_channels_match_the_official_code():
    plan = unet_plan(get_preset("cifar10").unet)
    assert [len(level.blocks) for level in plan.down] == [2, 2, 2, 2]
    assert [len(level.blocks) for level in plan.up] == [3, 3, 3, 3]
    assert plan.mid_ch == 256
    assert plan.up[3].blocks[0].in_ch == 512  # 256 from the middle + 256 skip
    assert plan.up[0].blocks[2].in_ch == 256  # 128 + conv_in's 128
    assert [level.resample for level in plan.down] == [True, True, True, False]
    assert all(b.attn == (level.resolution == 16) for level in plan.up for b in level.blocks)


def test_parameter_shapes_without_conv_resampling_drop_resampler_weights():
    with_conv = parameter_shapes(_tiny())
    without = parameter_shapes(_tiny(resamp_with_conv=False))
    dropped = set(with_conv) - set(without)
    assert dropped == {
        "down.0.downsample.conv.weight",
        "down.0.downsample.conv.bias",
        "up.1.upsample.conv.weight",
        "up.1.upsample.conv.bias",
    }


def test_timestep_frequencies():
    w = timestep_frequencies(128)
    assert w.dtype.name == "float32" and w.shape == (64,)
    assert w[0] == 1.0 and abs(w[-1] - 1e-4) < 1e-10


def test_models_import_no_framework(tmp_path):
    code = (
        "import sys, ddpm_core.models, ddpm_core.interop.convert; "
        "bad = [m for m in ('torch', 'jax', 'flax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
