"""The named models: a :class:`Preset` is a U-Net config, training defaults and a default
dataset (the configs are in :mod:`ddpm_core.models.configs`), a frozen value read by both
backends (PyTorch and JAX), so the two build the *same* network from it. Nothing here
imports a framework.

The paper's presets (Ho et al. 2020, Appendix B and the official code):

=========== ===== ============ ===== ===== ======= ====== ===== ===========
preset      size  ch_mult      ch    attn  dropout lr     batch parameters
=========== ===== ============ ===== ===== ======= ====== ===== ===========
cifar10     32    1,2,2,2      128   16    0.1     2e-4   128   35,746,307
celebahq256 256   1,1,2,2,4,4  128   16    0.0     2e-5   64    113,673,219
lsun256     256   1,1,2,2,4,4  128   16    0.0     2e-5   64    113,673,219
=========== ===== ============ ===== ===== ======= ====== ===== ===========

plus small presets that train on a CPU (``mnist``, ``digits``) and a ``tiny`` one for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ddpm_core.models.configs import TrainConfig, UNetConfig, with_head

__all__ = ["Preset", "get_preset", "list_presets", "unet_config"]


def unet_config(preset_or_config: Preset | UNetConfig | str, *, prediction: str = "eps",
                variance: str = "fixed_small") -> UNetConfig:
    """The U-Net config of a preset, a preset name or a config, with the head for the
    parameterisation (what both backends' ``build_unet`` build).

    Examples
    --------
    >>> unet_config("tiny", variance="learned_range").out_channels
    2
    """
    if isinstance(preset_or_config, str):
        preset_or_config = get_preset(preset_or_config)
    config = preset_or_config.unet if isinstance(preset_or_config, Preset) else preset_or_config
    if not isinstance(config, UNetConfig):
        raise TypeError(f"preset_or_config must be a Preset, UNetConfig or preset name, "
                        f"got {type(preset_or_config).__name__}")
    return with_head(config, prediction=prediction, variance=variance)


@dataclass(frozen=True)
class Preset:
    """A named model: U-Net shape, training defaults and default dataset.

    ``image_size`` and ``channels`` are read from ``unet``.
    """

    name: str
    unet: UNetConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    data: str = ""

    @property
    def image_size(self) -> int:
        """The side of the square images the preset's U-Net takes, in pixels."""
        return self.unet.image_size

    @property
    def channels(self) -> int:
        """The images' channels (1 for MNIST, 3 for CIFAR-10)."""
        return self.unet.in_channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: ``{"name", "data", "image_size", "channels", "unet", "train"}``."""
        return {"name": self.name, "data": self.data, "image_size": self.image_size,
                "channels": self.channels, "unet": self.unet.to_dict(),
                "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preset:
        """Inverse of :meth:`to_dict` (``image_size``/``channels`` are checked)."""
        unet = UNetConfig.from_dict(d["unet"])
        for key, value in (("image_size", unet.image_size), ("channels", unet.in_channels)):
            if key in d and d[key] != value:
                raise ValueError(f"{key}={d[key]!r} disagrees with the unet config ({value})")
        return cls(name=d["name"], unet=unet, train=TrainConfig.from_dict(d.get("train", {})),
                   data=d.get("data", ""))


def _paper_256(name: str, data: str, num_steps: int) -> Preset:
    unet = UNetConfig(image_size=256, in_channels=3, out_channels=3, ch=128,
                      ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,),
                      dropout=0.0)
    train = TrainConfig(lr=2e-5, batch_size=64, num_steps=num_steps)
    return Preset(name, unet, train, data)


_PRESETS: dict[str, Preset] = {
    # Paper, CIFAR10: 35.7M parameters, 800k steps, FID 3.17.
    "cifar10": Preset(
        "cifar10",
        UNetConfig(image_size=32, in_channels=3, out_channels=3, ch=128,
                   ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                   dropout=0.1),
        TrainConfig(),
        "cifar10"),
    # Paper, CelebA-HQ 256: 0.5M steps; LSUN 256 (church: 1.2M steps).
    "celebahq256": _paper_256("celebahq256", "celebahq256", 500_000),
    "lsun256": _paper_256("lsun256", "lsun256", 1_200_000),
    # Small enough to train on a 2-core CPU in minutes (~0.3 s per step of 64): 28 -> 14 -> 7.
    # EMA 0.995 (a 200-step window) because a CPU run is only a few thousand steps long;
    # lr 2e-3 because at 2,000 steps it beat 1e-3 on every paired seed, on both backends
    # (benchmarks/quality.py; README, "Sample quality per CPU minute").
    "mnist": Preset(
        "mnist",
        UNetConfig(image_size=28, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2, 4),
                   num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, num_groups=8),
        TrainConfig(lr=2e-3, warmup_steps=100, batch_size=64, ema_decay=0.995,
                    random_flip=False, num_steps=2000, variance="fixed_small"),
        "mnist"),
    # scikit-learn's 8x8 digits: 8 -> 4. mnist's recipe.
    "digits": Preset(
        "digits",
        UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2),
                   num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, num_groups=8),
        TrainConfig(lr=2e-3, warmup_steps=100, batch_size=128, ema_decay=0.995,
                    random_flip=False, num_steps=3000, variance="fixed_small"),
        "digits"),
    # For tests: every kind of block (shortcut, attention, both resamplers), 177k params.
    "tiny": Preset(
        "tiny",
        UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2),
                   num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, num_groups=8),
        TrainConfig(lr=1e-3, warmup_steps=10, batch_size=16, ema_decay=0.9,
                    random_flip=False, num_steps=100, variance="fixed_small"),
        "digits"),
}


def list_presets() -> list[str]:
    """Names of the built-in presets.

    Examples
    --------
    >>> list_presets()
    ['cifar10', 'celebahq256', 'lsun256', 'mnist', 'digits', 'tiny']
    """
    return list(_PRESETS)


def get_preset(name: str) -> Preset:
    """The built-in preset called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :func:`list_presets`.

    Examples
    --------
    >>> get_preset("cifar10").unet.ch_mult
    (1, 2, 2, 2)
    """
    try:
        return _PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset name={name!r}; valid names: {list_presets()}") \
            from None
