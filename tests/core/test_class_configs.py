"""Class-conditional U-Net configs and the classifier's config (NumPy only): JSON, counts,
the canonical layout of the label embedding and of the classifier."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from ddpm_core.models import (
    ClassifierConfig,
    Preset,
    UNetConfig,
    classifier_config,
    count_parameters,
    get_preset,
    parameter_shapes,
)


def test_num_classes_defaults_to_0_and_round_trips_through_json():
    tiny = get_preset("tiny")
    assert tiny.unet.num_classes == 0
    conditional = dataclasses.replace(tiny, unet=dataclasses.replace(tiny.unet, num_classes=10))
    d = json.loads(json.dumps(conditional.to_dict()))
    assert d["unet"]["num_classes"] == 10
    assert Preset.from_dict(d) == conditional


def test_a_run_json_unet_without_num_classes_reads_as_unconditional():
    old = get_preset("mnist").unet.to_dict()
    del old["num_classes"]  # what every run.json written before conditional models holds
    assert UNetConfig.from_dict(old) == get_preset("mnist").unet


def test_label_embedding_shapes_and_count():
    config = dataclasses.replace(get_preset("mnist").unet, num_classes=10)
    shapes = parameter_shapes(config)
    assert shapes["label_emb.weight"] == (11, 4 * config.ch)  # row 10 is the null label
    names = list(shapes)
    assert names.index("label_emb.weight") == names.index("temb.dense.1.bias") + 1
    assert count_parameters(config) == count_parameters(get_preset("mnist").unet) + 11 * 64
    assert parameter_shapes(get_preset("mnist").unet) == {
        k: v for k, v in shapes.items() if k != "label_emb.weight"}


@pytest.mark.parametrize("name", ["tiny", "mnist", "cifar10"])
def test_classifier_is_the_unets_encoder_with_a_pooling_head(name):
    unet = get_preset(name).unet
    config = classifier_config(name, 10)
    shapes, full = parameter_shapes(config), parameter_shapes(unet)
    head = {"norm_out.weight", "norm_out.bias", "head.weight", "head.bias"}
    encoder = [k for k in shapes if k not in head]
    assert all(shapes[k] == full[k] for k in encoder)  # same names, same shapes
    assert encoder == [k for k in full if not k.startswith(("up.", "norm_out", "conv_out"))]
    mid_ch = unet.ch * unet.ch_mult[-1]
    assert shapes["head.weight"] == (10, mid_ch) and shapes["norm_out.weight"] == (mid_ch,)
    assert any(k.startswith("down.") and ".attn." in k for k in encoder) == bool(unet.attn_resolutions)
    assert count_parameters(config) == sum(math.prod(v) for v in shapes.values())


def test_classifier_config_of_a_conditional_learned_variance_unet_is_neutral():
    unet = dataclasses.replace(get_preset("tiny").unet, num_classes=5, out_channels=2)
    config = classifier_config(unet, 5)
    assert config.unet.num_classes == 0 and config.unet.out_channels == 1
    assert config == classifier_config("tiny", 5)
    assert ClassifierConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_classifier_config_errors():
    unet = get_preset("tiny").unet
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        classifier_config("tiny", 1)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        ClassifierConfig(unet, True)
    with pytest.raises(ValueError, match="unconditional"):
        ClassifierConfig(dataclasses.replace(unet, num_classes=3), 3)
    with pytest.raises(TypeError, match="unet must be a UNetConfig"):
        ClassifierConfig(unet.to_dict(), 3)
    with pytest.raises(TypeError, match="preset_or_config"):
        classifier_config(3, 3)
    with pytest.raises(ValueError, match="unknown ClassifierConfig keys"):
        ClassifierConfig.from_dict({"unet": unet.to_dict(), "num_classes": 3, "classes": 3})
