"""Framework-neutral part of ``ddpm eval classify``: class accuracy, the confusion matrix
and the Inception Score of samples from a classifier's probabilities.

The classifier (the built-in evaluation classifier of ``mnist``/``digits`` or a TorchScript
network the user brings) runs in ``ddpm_core.backends.torch.eval_classifier``; everything
here is NumPy only. With the built-in classifier the score is the MNIST analogue of the
Inception Score (Salimans et al. 2016) computed with a small MNIST classifier, not with the
ImageNet Inception network: it compares only with scores from the same classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ddpm_core.metrics import inception_score

__all__ = ["CLASSIFY_KEYS", "IS_NOTE", "classify_report", "confusion_matrix", "format_report"]

CLASSIFY_KEYS = ("eval_accuracy", "accuracy", "confusion", "inception_score",
                 "inception_score_std", "splits", "n", "classifier")
IS_NOTE = ("the MNIST analogue of the Inception Score, computed with a small MNIST "
           "classifier, not the ImageNet Inception network")
SHUFFLE_SEED = 0


def confusion_matrix(intended: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, int64 (K, K): entry (i, j) is the number of samples meant as class i that
    the classifier calls class j (rows intended, columns predicted)."""
    intended = np.asarray(intended, np.int64)
    predicted = np.asarray(predicted, np.int64)
    if intended.shape != predicted.shape or intended.ndim != 1:
        raise ValueError(f"intended and predicted must be two (N,) arrays of the same length; "
                         f"got shapes {intended.shape} and {predicted.shape}")
    for name, a in (("intended", intended), ("predicted", predicted)):
        if a.size and not (0 <= a.min() and a.max() < num_classes):
            raise ValueError(f"{name} classes must lie in [0, {num_classes}); got "
                             f"{int(a.min())}..{int(a.max())}")
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (intended, predicted), 1)
    return out


def classify_report(probs: Any, intended: np.ndarray | None = None, *,
                    num_classes: int | None = None, splits: int = 10,
                    shuffle: bool = True) -> dict[str, Any]:
    """Accuracy, confusion and Inception Score of N samples.

    Parameters
    ----------
    probs : array_like, (N, K)
        The classifier's p(y | x) for each sample (rows sum to 1).
    intended : int array (N,) in [0, num_classes), optional
        The class each sample was drawn for.
    num_classes : int, optional
        The classes of the request (the run's, or the guiding classifier's). Accuracy and
        confusion are reported only when ``intended`` is given and the classifier has
        exactly ``num_classes`` classes (the same label space); otherwise they are None.
    splits : int >= 1
        Inception Score splits; ``min(splits, N)`` are used.
    shuffle : bool
        Score the samples in the order ``default_rng(0).permutation(N)``: samples drawn
        class by class (``--class all``) would otherwise put one class in each split and
        give a score near 1.

    Returns
    -------
    dict with ``accuracy`` (float or None), ``confusion`` (int64 (K, K) or None),
    ``predicted`` (int64 (N,)), ``inception_score``, ``inception_score_std``, ``splits``
    and ``n``.
    """
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"probs must be (N, K) with N >= 1; got shape {p.shape}")
    n, k = p.shape
    predicted = p.argmax(axis=1)
    accuracy = confusion = None
    if intended is not None:
        intended = np.asarray(intended, np.int64)
        if intended.shape != (n,):
            raise ValueError(f"intended must hold one class per sample (N = {n}); got shape "
                             f"{intended.shape}")
        if num_classes == k:
            confusion = confusion_matrix(intended, predicted, k)
            accuracy = float(np.mean(predicted == intended))
    used = min(int(splits), n)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(n) if shuffle else np.arange(n)
    score, std = inception_score(p[order], splits=used)
    return {"accuracy": accuracy, "confusion": confusion, "predicted": predicted,
            "inception_score": score, "inception_score_std": std, "splits": used, "n": n}


def format_report(r: dict[str, Any]) -> list[str]:
    """The report as text lines: classifier, accuracies, confusion table, score."""
    lines = [f"{r['n']} samples graded by the {r['classifier']}"]
    if r.get("eval_accuracy") is not None:
        lines.append(f"  classifier's held-out accuracy   {100 * r['eval_accuracy']:.2f}%")
    if r["accuracy"] is not None:
        lines.append(f"  intended class accuracy          {100 * r['accuracy']:.2f}%")
    elif r.get("accuracy_note"):
        lines.append(f"  intended class accuracy          - ({r['accuracy_note']})")
    lines.append(f"  Inception Score                  {r['inception_score']:.4f} +- "
                 f"{r['inception_score_std']:.4f} ({r['splits']} splits)")
    if r.get("builtin"):
        lines.append(f"  note: {IS_NOTE}")
    if r["confusion"] is not None:
        conf = np.asarray(r["confusion"])
        width = max(4, len(str(int(conf.max()))) + 1)
        lines.append("  confusion (rows: intended class, columns: predicted class):")
        lines.append("      " + "".join(f"{j:>{width}}" for j in range(conf.shape[1])))
        lines += [f"  {i:>3} " + "".join(f"{v:>{width}}" for v in row)
                  for i, row in enumerate(conf)]
    return lines
