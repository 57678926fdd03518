"""What several ``ddpm`` subcommands share: argument value types (``int_at_least``,
``float_in``, lists of classes and lambdas) and the options added to more than one
subcommand (run, chain, guidance, progress, ``--json``, ``--tensorboard``)."""

from __future__ import annotations

import argparse
from typing import Any

from ddpm_core.app.run.options import (
    BACKENDS,
    DEVICES,
)
from ddpm_core.respacing import SPACINGS
from ddpm_core.samplers import DDIM_EPS, DEFAULT_DDIM_EPS, SAMPLERS

__all__ = ["add_chain_options", "add_guidance_options", "add_json", "add_no_progress",
           "add_run_options", "add_tensorboard", "classes_arg", "float_in", "int_at_least",
           "lambdas_arg", "preset_names"]


# --------------------------------------------------------------------------- value types

def int_at_least(low: int) -> Any:
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def float_in(low: float, high: float, *, low_open: bool = True) -> Any:
    """An argparse type: a number in (low, high] (or [low, high])."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = (value > low if low_open else value >= low) and value <= high
        if not ok:
            lo = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be a number in {lo}{low}, {high}]; "
                                             f"got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def lambdas_arg(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in [0, 1]; got {text!r}")
    return values


def classes_arg(text: str) -> Any:
    """An argparse type: the ``--class`` value (see ``ddpm_core.app.sampling.requests.parse_classes``)."""
    from ddpm_core.app.sampling.requests import parse_classes

    try:
        return parse_classes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--class ")) from None


def preset_names() -> list[str]:
    from ddpm_core.models import list_presets

    return list_presets()


# --------------------------------------------------------------------------- shared options

def add_run_options(p: argparse.ArgumentParser, *, backend: bool = True) -> None:
    """--run, --backend, --seed, --no-ema, --device, --no-progress: every subcommand that reads a run."""
    p.add_argument("--run", required=True, help="run directory written by `ddpm train`")
    if backend:
        p.add_argument("--backend", choices=BACKENDS, help="default: the run's backend")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--device", choices=DEVICES, default="auto")
    add_no_progress(p, "progress")


def add_no_progress(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help=f"no {what} on stderr (a bar on a terminal, else a plain line every "
                        "few percent)")


def add_chain_options(p: argparse.ArgumentParser, *, eta: bool) -> None:
    """--sampler, --steps (and --eta): the chain a sampling subcommand runs."""
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    p.add_argument("--steps", type=int_at_least(1),
                   help="sampling steps, the network calls (ddpm: respaced chain; ddim: default 50)")
    p.add_argument("--spacing", choices=SPACINGS,
                   help="which steps a shorter chain keeps (default: the sampler's own; see docs)")
    p.add_argument("--ddim-eps", choices=DDIM_EPS,
                   help=f"DDIM's eps once x0_hat is clipped (default {DEFAULT_DDIM_EPS})")
    if eta:
        p.add_argument("--eta", type=float_in(0.0, 1.0, low_open=False), default=0.0)


def add_guidance_options(p: argparse.ArgumentParser, *, interpolation: bool = False) -> None:
    """--class, --guidance, --guidance-rescale, --classifier, --classifier-scale: the
    guidance of ``sample`` and ``progressive`` (``ddpm_core.app.sampling.requests.guided_request``).

    ``interpolation``: one class that decodes every mixture
    (``ddpm_core.app.sampling.requests.interpolation_guidance``); ``--classifier`` is kept, hidden,
    so that the command can refuse it with a message.
    """
    g = p.add_argument_group("guidance")
    if interpolation:
        g.add_argument("--class", dest="classes", type=classes_arg, metavar="K",
                       help="class that decodes every mixture (class-conditional runs; "
                            "default: the null label of a run trained with label dropout)")
    else:
        g.add_argument("--class", dest="classes", type=classes_arg, metavar="K|K1,K2,...|all",
                       help="class of every sample, one class per sample (then --n defaults "
                            "to their count), or 'all': a grid with one row of --n per class")
    g.add_argument("--guidance", type=float, metavar="S",
                   help="classifier-free guidance scale of a class-conditional run (default 1: "
                        "the conditional model; 0: unconditional; Ho & Salimans' w = S - 1)")
    g.add_argument("--guidance-rescale", type=float_in(0.0, 1.0, low_open=False), metavar="PHI",
                   help="rescale the guided prediction's std (Lin et al. 2024; default 0: off)")
    if interpolation:
        g.add_argument("--classifier", help=argparse.SUPPRESS)
        return
    g.add_argument("--classifier", metavar="CLF_RUN",
                   help="classifier run (ddpm train-classifier) that guides sampling")
    g.add_argument("--classifier-scale", type=float, metavar="S",
                   help="classifier guidance scale (default 1; 0: unguided)")


def add_json(p: argparse.ArgumentParser, fields: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print one JSON object ({fields})")


def add_tensorboard(p: argparse.ArgumentParser) -> None:
    """--tensorboard / --no-tensorboard of ``train`` and ``train-classifier``."""
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="write TensorBoard event files under OUT/tensorboard (needs "
                        'pip install "ddpm-core[tensorboard]"; default: off, or the '
                        "resumed run's choice)")
