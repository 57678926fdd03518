"""The ``ddpm eval`` subcommands' arguments: bpd, rate-distortion, fid, shared-latent and
classify (``add_eval``)."""

from __future__ import annotations

import argparse
from typing import Any

from ddpm_core.app.cli.parser_options import (
    add_chain_options,
    add_json,
    add_run_options,
    classes_arg,
    float_in,
    int_at_least,
)

__all__ = ["add_eval"]


def _add_eval_common(p: argparse.ArgumentParser, n_default: int) -> None:
    add_run_options(p)
    p.add_argument("--n", type=int_at_least(1), default=n_default,
                   help=f"number of images (default {n_default})")
    p.add_argument("--batch-size", type=int_at_least(1))


def add_eval(sub: Any) -> None:
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
    add_json(b, "bpd, prior, terms, decoder, n")
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
    add_chain_options(c, eta=True)
    c.add_argument("--class", dest="classes", type=classes_arg, metavar="K|K1,K2,...|all",
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
    add_json(c, "eval_accuracy, accuracy, confusion, inception_score, "
                 "inception_score_std, n, classifier")


def _add_eval_fid(esub: Any) -> None:
    f = esub.add_parser("fid", help="FID and KID of samples against the training split",
                        description="Samples N images with the (EMA) model; FID and KID "
                                    "against the training split, and the held-out floor "
                                    "(N held-out images against the training split). Needs "
                                    'pip install "ddpm-core[eval]".')
    _add_eval_common(f, 500)
    add_chain_options(f, eta=True)
    f.add_argument("--reference-n", type=int_at_least(2),
                   help="use the first N training images as the reference (default: all)")
    f.add_argument("--kid-subsets", type=int_at_least(1), default=100)
    f.add_argument("--kid-subset-size", type=int_at_least(2), default=1000)
    f.add_argument("--cache-dir", help="reference feature cache (default: <run>/fid-cache)")
    add_json(f, "fid, kid, kid_std, floor_fid, floor_kid, n")


def _add_eval_shared_latent(esub: Any) -> None:
    s = esub.add_parser("shared-latent", help="samples sharing one latent x_t (Figure 7)",
                        description="Encodes held-out image --index to each --t, then decodes "
                                    "it --k times with different noise. Rows: t; columns: "
                                    "source, x_t, the k samples. PyTorch backend.")
    add_run_options(s, backend=False)
    s.add_argument("--index", type=int_at_least(0), default=0, help="held-out image")
    s.add_argument("--t", type=int_at_least(0), nargs="+", default=[250, 500, 750],
                   help="0-based steps to encode to")
    s.add_argument("--k", type=int_at_least(1), default=6, help="samples per latent")
    s.add_argument("--out", default="shared-latent.png")
