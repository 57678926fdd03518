"""The ``ddpm`` argument parser: one ``_add_*`` function per subcommand (the shared value
types and options in ``parser_options``, the ``eval`` subcommands in ``parser_eval``)."""

from __future__ import annotations

import argparse
from typing import Any

from ddpm_core.app.cli.parser_eval import add_eval
from ddpm_core.app.cli.parser_options import (
    add_chain_options,
    add_guidance_options,
    add_json,
    add_no_progress,
    add_run_options,
    add_tensorboard,
    float_in,
    int_at_least,
    lambdas_arg,
    preset_names,
)
from ddpm_core.app.run.options import (
    BACKENDS,
    DEVICES,
    LOSSES,
    PREDICTIONS,
    SCHEDULES,
    TIMESTEP_SAMPLERS,
    VARIANCES,
)

__all__ = ["build_parser", "float_in", "int_at_least"]


# --------------------------------------------------------------------------- subcommands

def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train (or resume) a model",
                       description="Train a DDPM (Algorithm 1) and write a run directory. "
                                   "Unset options take the preset's defaults.")
    p.add_argument("--backend", choices=BACKENDS, help="default: torch if installed, else jax")
    p.add_argument("--preset", required=True, choices=preset_names())
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int_at_least(1), help="total optimizer steps")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its stored options (only --steps, "
                        "the cadence, --sample-n, --device, --quiet, --compile and "
                        "--tensorboard may change)")
    p.add_argument("--seed", type=int_at_least(0), help="default 0")
    p.add_argument("--batch-size", type=int_at_least(1), help="global batch size")
    p.add_argument("--lr", type=float_in(0.0, 1.0))
    p.add_argument("--warmup", type=int_at_least(0), help="linear warm-up steps")
    p.add_argument("--grad-clip", type=float_in(0.0, float("inf")))
    p.add_argument("--ema-decay", type=float_in(0.0, 0.999999999, low_open=False))
    p.add_argument("--dropout", type=float_in(0.0, 0.99, low_open=False))
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips")
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--prediction", choices=PREDICTIONS)
    p.add_argument("--variance", choices=VARIANCES)
    p.add_argument("--timestep-sampler", choices=TIMESTEP_SAMPLERS, help="default uniform")
    p.add_argument("--schedule", choices=SCHEDULES, help="beta schedule (default: the preset's)")
    p.add_argument("--loss-weighting", dest="weighting", choices=("none", "min-snr"),
                   help="per-timestep weights of L_simple: none (the paper's) or min-SNR-gamma "
                        "(Hang et al. 2023) (default: the preset's)")
    p.add_argument("--min-snr-gamma", type=float_in(0.0, float("inf")),
                   help="gamma of --loss-weighting min-snr (default 5)")
    p.add_argument("--ch", type=int_at_least(1), help="U-Net base width (default: the preset's)")
    p.add_argument("--num-res-blocks", type=int_at_least(1),
                   help="residual blocks per U-Net level (default: the preset's)")
    p.add_argument("--data", help="mnist, digits, a folder of images, an .npz or "
                                  "cifar-10-python.tar.gz (default: the preset's)")
    p.add_argument("--init", metavar="RUN", help="start from the weights of another run (trained "
                                                 "or imported) with the same U-Net: fine-tuning")
    p.add_argument("--class-conditional", action="store_true", default=None,
                   help="condition the U-Net on the data's class labels (mnist, digits, "
                        "CIFAR-10, class folders, .npz with labels)")
    p.add_argument("--label-dropout", type=float_in(0.0, 0.999, low_open=False),
                   help="with --class-conditional: probability that a label is replaced by "
                        "the null label, for classifier-free guidance (default 0.1)")
    p.add_argument("--log-every", type=int_at_least(0), help="default 50")
    p.add_argument("--sample-every", type=int_at_least(0),
                   help="write an EMA sample grid every N steps (default 0: only at the end)")
    p.add_argument("--ckpt-every", type=int_at_least(0), help="default 1000")
    p.add_argument("--sample-n", type=int_at_least(1), help="default 64")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile on CUDA")
    p.add_argument("--device", choices=DEVICES, help="default auto")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress on stderr (a bar on a terminal, else a line every 5%%)")
    add_tensorboard(p)


def _add_train_classifier(sub: Any) -> None:
    p = sub.add_parser("train-classifier", help="train (or resume) a noise-aware classifier",
                       description="Train the classifier of Dhariwal & Nichol 2021 (the "
                                   "U-Net's encoder and a pooling head) on q_sample(x0, t, eps) "
                                   "at uniform t with cross-entropy, for classifier guidance. "
                                   "Same run-directory machinery as `ddpm train`.")
    p.add_argument("--data", required=True, help="labeled data: mnist, digits, a folder of "
                                                 "class folders, an .npz with labels or "
                                                 "cifar-10-python.tar.gz")
    p.add_argument("--out", required=True, help="classifier run directory")
    p.add_argument("--preset", choices=preset_names(),
                   help="U-Net whose encoder the classifier uses, and its diffusion schedule "
                        "(default: the preset named like --data)")
    p.add_argument("--backend", choices=BACKENDS, help="default: torch if installed, else jax")
    p.add_argument("--steps", type=int_at_least(1), help="total optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int_at_least(0), help="default 0")
    p.add_argument("--batch-size", type=int_at_least(1), help="global batch size")
    p.add_argument("--lr", type=float_in(0.0, 1.0))
    p.add_argument("--warmup", type=int_at_least(0), help="linear warm-up steps")
    p.add_argument("--grad-clip", type=float_in(0.0, float("inf")))
    p.add_argument("--log-every", type=int_at_least(0), help="default 50")
    p.add_argument("--ckpt-every", type=int_at_least(0), help="default 1000")
    p.add_argument("--device", choices=DEVICES, help="default auto")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress on stderr (a bar on a terminal, else a line every 5%%)")
    add_tensorboard(p)


def _add_sample(sub: Any) -> None:
    p = sub.add_parser("sample", help="sample images from a run",
                       description="Sample with ancestral DDPM (Algorithm 2) or DDIM; writes "
                                   "a PNG grid and an .npz of uint8 samples.")
    add_run_options(p)
    add_chain_options(p, eta=True)
    p.add_argument("--out", default="samples.png",
                   help="PNG grid (an .npz of the images, and labels if any, is written beside it)")
    p.add_argument("--n", type=int_at_least(1),
                   help="samples (default 64); per class with --class all (default 8)")
    p.add_argument("--batch-size", type=int_at_least(1))
    p.add_argument("--compile", action="store_true", help="compile the model call on CUDA")
    add_guidance_options(p)


def _add_progressive(sub: Any) -> None:
    p = sub.add_parser("progressive", help="x0 predictions along the chain (Figure 6)",
                       description="Rows: samples; columns: x0_hat at evenly spaced steps. "
                                   "The guidance options are those of `ddpm sample` (a "
                                   "class-conditional run needs --class); the last column "
                                   "is the sample it draws with the same options and seed.")
    add_run_options(p)
    add_chain_options(p, eta=False)
    p.add_argument("--out", default="progressive.png",
                   help="PNG grid (an .npz is written beside it)")
    p.add_argument("--n", type=int_at_least(1),
                   help="chains (default 8); per class with --class all (default 8)")
    p.add_argument("--frames", type=int_at_least(1), default=10)
    add_guidance_options(p)


def _add_interpolate(sub: Any) -> None:
    p = sub.add_parser("interpolate", help="interpolate held-out images through x_t (Figure 8)",
                       description="Each row: source a, decoded mixes (1-l) x_t^a + l x_t^b, "
                                   "source b. A class-conditional run decodes with --class K, "
                                   "or with the null label if it was trained with label "
                                   "dropout.")
    add_run_options(p)
    p.add_argument("--pair", type=int_at_least(0), nargs=2, action="append",
                   metavar=("I", "J"), help="held-out image indices (repeatable; default 0 1)")
    p.add_argument("--t", type=int_at_least(0), default=500, help="0-based step to encode to")
    p.add_argument("--lambdas", type=lambdas_arg, default=[i / 8 for i in range(9)],
                   help="comma-separated mixing weights in [0, 1]")
    p.add_argument("--out", default="interpolate.png")
    add_guidance_options(p, interpolation=True)


def _add_plot(sub: Any) -> None:
    p = sub.add_parser("plot", help="the loss curve of a run as a PNG",
                       description="Plots log.csv's loss against the step for "
                                   "those who do not run TensorBoard (with its parts for a "
                                   "run trained with the bound, and the FIDs of `ddpm eval "
                                   "fid` on a second axis). Needs matplotlib: "
                                   'pip install "ddpm-core[eval]".')
    p.add_argument("--run", required=True, help="run directory written by `ddpm train` or "
                                                "`ddpm train-classifier`")
    p.add_argument("--out", help="PNG to write (default: RUN/loss.png)")
    add_json(p, "out, points, last_step, last_loss, fid_points, parts")


def _add_presets(sub: Any) -> None:
    p = sub.add_parser("presets", help="list presets and parameter counts",
                       description="Every preset with its parameter count for each "
                                   "installed backend.")
    p.add_argument("--json", action="store_true", help="print {preset: {backend: count}}")


def _add_import(sub: Any) -> None:
    p = sub.add_parser("import", help="a run directory from another library's model folder",
                       description="Import a model folder as a run directory that every other "
                                   "subcommand reads, with either backend.")
    fsub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    d = fsub.add_parser("diffusers", help="a diffusers DDPM folder (unet/, scheduler/)",
                        description="Reads unet/config.json, unet/diffusion_pytorch_model."
                                    "safetensors and scheduler/scheduler_config.json (e.g. the "
                                    "paper's google/ddpm-cifar10-32 downloaded elsewhere); "
                                    "checks every field the weight mapping depends on.")
    d.add_argument("path", help="the diffusers folder")
    d.add_argument("--out", required=True, help="run directory to write (new or empty)")
    d.add_argument("--preset", help="preset name to record (default: the preset whose U-Net "
                                    "matches, else 'custom')")
    d.add_argument("--data", help="dataset the run refers to (default: the preset's)")
    add_no_progress(d, "the stages of the import")


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="a run directory as another library's model folder",
                       description="Export a run directory for another library.")
    fsub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    d = fsub.add_parser("diffusers", help="a folder DDPMPipeline.from_pretrained loads",
                        description="Writes model_index.json, unet/ (config and safetensors "
                                    "weights) and scheduler/ (a DDPMScheduler config with the "
                                    "run's schedule, prediction, variance and clipping).")
    d.add_argument("--run", required=True, help="run directory written by `ddpm train` or "
                                                "`ddpm import`")
    d.add_argument("--out", required=True, help="folder to write (new or empty)")
    d.add_argument("--no-ema", action="store_true", help="export the raw weights")
    add_no_progress(d, "the stages of the export")


def build_parser() -> argparse.ArgumentParser:
    """The ``ddpm`` argument parser."""
    parser = argparse.ArgumentParser(prog="ddpm", description="Denoising Diffusion "
                                     "Probabilistic Models (Ho et al. 2020).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_train_classifier, _add_sample, _add_progressive, _add_interpolate, _add_plot,
                _add_presets, add_eval, _add_import, _add_export):
        add(sub)
    return parser
