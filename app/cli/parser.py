"""The ``ddpm`` argument parser: value types, options shared by several subcommands, and
one ``_add_*`` function per subcommand."""

from __future__ import annotations

import argparse
from typing import Any

from ddpm_core.app.run.options import (
    BACKENDS,
    DEVICES,
    LOSSES,
    PREDICTIONS,
    SCHEDULES,
    TIMESTEP_SAMPLERS,
    VARIANCES,
)
from ddpm_core.respacing import SPACINGS
from ddpm_core.samplers import DDIM_EPS, DEFAULT_DDIM_EPS, SAMPLERS

__all__ = ["build_parser", "float_in", "int_at_least"]



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


def _lambdas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in [0, 1]; got {text!r}")
    return values


def _classes_arg(text: str) -> Any:
    """An argparse type: the ``--class`` value (see ``ddpm_core.app.sampling.requests.parse_classes``)."""
    from ddpm_core.app.sampling.requests import parse_classes

    try:
        return parse_classes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--class ")) from None


def _presets() -> list[str]:
    from ddpm_core.models import list_presets

    return list_presets()


# --------------------------------------------------------------------------- shared options

def _add_run_options(p: argparse.ArgumentParser, *, backend: bool = True) -> None:
    """--run, --backend, --seed, --no-ema, --device, --no-progress: every subcommand that reads a run."""
    p.add_argument("--run", required=True, help="run directory written by `ddpm train`")
    if backend:
        p.add_argument("--backend", choices=BACKENDS, help="default: the run's backend")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--device", choices=DEVICES, default="auto")
    _add_no_progress(p, "progress")


def _add_no_progress(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help=f"no {what} on stderr (a bar on a terminal, else a plain line every "
                        "few percent)")


def _add_chain_options(p: argparse.ArgumentParser, *, eta: bool) -> None:
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


def _add_guidance_options(p: argparse.ArgumentParser, *, interpolation: bool = False) -> None:
    """--class, --guidance, --guidance-rescale, --classifier, --classifier-scale: the
    guidance of ``sample`` and ``progressive`` (``ddpm_core.app.sampling.requests.guided_request``).

    ``interpolation``: one class that decodes every mixture
    (``ddpm_core.app.sampling.requests.interpolation_guidance``); ``--classifier`` is kept, hidden,
    so that the command can refuse it with a message.
    """
    g = p.add_argument_group("guidance")
    if interpolation:
        g.add_argument("--class", dest="classes", type=_classes_arg, metavar="K",
                       help="class that decodes every mixture (class-conditional runs; "
                            "default: the null label of a run trained with label dropout)")
    else:
        g.add_argument("--class", dest="classes", type=_classes_arg, metavar="K|K1,K2,...|all",
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


def _add_json(p: argparse.ArgumentParser, fields: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print one JSON object ({fields})")


def _add_tensorboard(p: argparse.ArgumentParser) -> None:
    """--tensorboard / --no-tensorboard of ``train`` and ``train-classifier``."""
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="write TensorBoard event files under OUT/tensorboard (needs "
                        'pip install "ddpm-core[tensorboard]"; default: off, or the '
                        "resumed run's choice)")


# --------------------------------------------------------------------------- subcommands

def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train (or resume) a model",
                       description="Train a DDPM (Algorithm 1) and write a run directory. "
                                   "Unset options take the preset's defaults.")
    p.add_argument("--backend", choices=BACKENDS, help="default: torch if installed, else jax")
    p.add_argument("--preset", required=True, choices=_presets())
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
    _add_tensorboard(p)


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
    p.add_argument("--preset", choices=_presets(),
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
    _add_tensorboard(p)


def _add_sample(sub: Any) -> None:
    p = sub.add_parser("sample", help="sample images from a run",
                       description="Sample with ancestral DDPM (Algorithm 2) or DDIM; writes "
                                   "a PNG grid and an .npz of uint8 samples.")
    _add_run_options(p)
    _add_chain_options(p, eta=True)
    p.add_argument("--out", default="samples.png",
                   help="PNG grid (an .npz of the images, and labels if any, is written beside it)")
    p.add_argument("--n", type=int_at_least(1),
                   help="samples (default 64); per class with --class all (default 8)")
    p.add_argument("--batch-size", type=int_at_least(1))
    p.add_argument("--compile", action="store_true", help="compile the model call on CUDA")
    _add_guidance_options(p)


def _add_progressive(sub: Any) -> None:
    p = sub.add_parser("progressive", help="x0 predictions along the chain (Figure 6)",
                       description="Rows: samples; columns: x0_hat at evenly spaced steps. "
                                   "The guidance options are those of `ddpm sample` (a "
                                   "class-conditional run needs --class); the last column "
                                   "is the sample it draws with the same options and seed.")
    _add_run_options(p)
    _add_chain_options(p, eta=False)
    p.add_argument("--out", default="progressive.png",
                   help="PNG grid (an .npz is written beside it)")
    p.add_argument("--n", type=int_at_least(1),
                   help="chains (default 8); per class with --class all (default 8)")
    p.add_argument("--frames", type=int_at_least(1), default=10)
    _add_guidance_options(p)


def _add_interpolate(sub: Any) -> None:
    p = sub.add_parser("interpolate", help="interpolate held-out images through x_t (Figure 8)",
                       description="Each row: source a, decoded mixes (1-l) x_t^a + l x_t^b, "
                                   "source b. A class-conditional run decodes with --class K, "
                                   "or with the null label if it was trained with label "
                                   "dropout.")
    _add_run_options(p)
    p.add_argument("--pair", type=int_at_least(0), nargs=2, action="append",
                   metavar=("I", "J"), help="held-out image indices (repeatable; default 0 1)")
    p.add_argument("--t", type=int_at_least(0), default=500, help="0-based step to encode to")
    p.add_argument("--lambdas", type=_lambdas, default=[i / 8 for i in range(9)],
                   help="comma-separated mixing weights in [0, 1]")
    p.add_argument("--out", default="interpolate.png")
    _add_guidance_options(p, interpolation=True)


def _add_plot(sub: Any) -> None:
    p = sub.add_parser("plot", help="the loss curve of a run as a PNG",
                       description="Plots log.csv's loss against the step for "
                                   "those who do not run TensorBoard. Needs matplotlib: "
                                   'pip install "ddpm-core[eval]".')
    p.add_argument("--run", required=True, help="run directory written by `ddpm train` or "
                                                "`ddpm train-classifier`")
    p.add_argument("--out", help="PNG to write (default: RUN/loss.png)")
    _add_json(p, "out, points, last_step, last_loss")


def _add_presets(sub: Any) -> None:
    p = sub.add_parser("presets", help="list presets and parameter counts",
                       description="Every preset with its parameter count for each "
                                   "installed backend.")
    p.add_argument("--json", action="store_true", help="print {preset: {backend: count}}")


def _add_eval_common(p: argparse.ArgumentParser, n_default: int) -> None:
    _add_run_options(p)
    p.add_argument("--n", type=int_at_least(1), default=n_default,
                   help=f"number of images (default {n_default})")
    p.add_argument("--batch-size", type=int_at_least(1))


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a run: bits/dim, rate-distortion, FID/KID",
                       description="Evaluation as in the paper (Ho et al. 2020): the true "
                                   "variational bound, its rate-distortion curve (Figure 5) "
                                   "and FID/KID against the training split.")
    esub = p.add_subparsers(dest="eval_command", required=True, metavar="EVAL_COMMAND")
    b = esub.add_parser("bpd", help="the variational bound in bits/dim (every term)",
                        description="The bound of eq. (5) on the first N held-out images, "
                                    "all T terms evaluated exactly, printed as L_T, the sum "
                                    "of L_{t-1} for t >= 2, L_0 and the total.")
    _add_eval_common(b, 100)
    b.add_argument("--clip", action=argparse.BooleanOptionalAction, default=False,
                   help="clip x0_hat to [-1, 1] in the model's mean (default: no)")
    _add_json(b, "bpd, prior, terms, decoder, n")
    r = esub.add_parser("rate-distortion", help="rate and distortion against t (Figure 5)",
                        description="Writes PREFIX.csv (t, rate in bits/dim, RMSE of x0_hat "
                                    "on [0, 255]) and PREFIX.png.")
    _add_eval_common(r, 100)
    r.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True,
                   help="clip x0_hat to [-1, 1] (default: yes; unclipped estimates at "
                        "large t are far outside the pixel range)")
    r.add_argument("--out", default="rate-distortion", help="output prefix")
    _add_eval_fid(esub)
    _add_eval_shared_latent(esub)
    _add_eval_classify(esub)


def _add_eval_classify(esub: Any) -> None:
    c = esub.add_parser("classify", help="class accuracy and Inception Score of samples",
                        description="Samples the run (a class-conditional run: --n per "
                                    "class, all classes by default) and grades the samples "
                                    "with an evaluation classifier independent of any "
                                    "guiding one: its held-out accuracy, the accuracy of "
                                    "the intended classes, the confusion matrix and the "
                                    "Inception Score. The built-in classifier (mnist, "
                                    "digits; trained on first use and cached) gives the "
                                    "MNIST analogue of the Inception Score, not the "
                                    "ImageNet one; --is-network brings another network.")
    _add_eval_common(c, 100)
    _add_chain_options(c, eta=True)
    c.add_argument("--class", dest="classes", type=_classes_arg, metavar="K|K1,K2,...|all",
                   help="intended classes (default for a class-conditional run: all, --n "
                        "per class; a list gives one sample per entry); an unconditional "
                        "run takes them only with --classifier")
    c.add_argument("--guidance", type=float, metavar="S", help="classifier-free guidance scale")
    c.add_argument("--guidance-rescale", type=float_in(0.0, 1.0, low_open=False), metavar="PHI",
                   help="rescale the guided prediction's std (Lin et al. 2024; default 0: off)")
    c.add_argument("--classifier", metavar="CLF_RUN", help="classifier run that guides sampling")
    c.add_argument("--classifier-scale", type=float, metavar="S",
                   help="classifier guidance scale (default 1)")
    c.add_argument("--cache-dir", help="where the evaluation classifier is cached (default: "
                                       "<run>/fid-cache)")
    c.add_argument("--is-network", metavar="PATH",
                   help="a TorchScript network (torch.jit.save) mapping float32 (N, C, H, W) "
                        "images in [-1, 1] to logits (N, K), used instead of the built-in "
                        "classifier (e.g. for CIFAR-10)")
    _add_json(c, "eval_accuracy, accuracy, confusion, inception_score, "
                 "inception_score_std, n, classifier")


def _add_eval_fid(esub: Any) -> None:
    f = esub.add_parser("fid", help="FID and KID of samples against the training split",
                        description="Samples N images with the (EMA) model; FID and KID "
                                    "against the training split, and the held-out floor "
                                    "(N held-out images against the training split). Needs "
                                    'pip install "ddpm-core[eval]".')
    _add_eval_common(f, 500)
    _add_chain_options(f, eta=True)
    f.add_argument("--reference-n", type=int_at_least(2),
                   help="use the first N training images as the reference (default: all)")
    f.add_argument("--kid-subsets", type=int_at_least(1), default=100)
    f.add_argument("--kid-subset-size", type=int_at_least(2), default=1000)
    f.add_argument("--cache-dir", help="reference feature cache (default: <run>/fid-cache)")
    _add_json(f, "fid, kid, kid_std, floor_fid, floor_kid, n")


def _add_eval_shared_latent(esub: Any) -> None:
    s = esub.add_parser("shared-latent", help="samples sharing one latent x_t (Figure 7)",
                        description="Encodes held-out image --index to each --t, then decodes "
                                    "it --k times with different noise. Rows: t; columns: "
                                    "source, x_t, the k samples. PyTorch backend.")
    _add_run_options(s, backend=False)
    s.add_argument("--index", type=int_at_least(0), default=0, help="held-out image")
    s.add_argument("--t", type=int_at_least(0), nargs="+", default=[250, 500, 750],
                   help="0-based steps to encode to")
    s.add_argument("--k", type=int_at_least(1), default=6, help="samples per latent")
    s.add_argument("--out", default="shared-latent.png")


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
    _add_no_progress(d, "the stages of the import")


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
    _add_no_progress(d, "the stages of the export")


def build_parser() -> argparse.ArgumentParser:
    """The ``ddpm`` argument parser."""
    parser = argparse.ArgumentParser(prog="ddpm", description="Denoising Diffusion "
                                     "Probabilistic Models (Ho et al. 2020).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_train_classifier, _add_sample, _add_progressive, _add_interpolate, _add_plot,
                _add_presets, _add_eval, _add_import, _add_export):
        add(sub)
    return parser
