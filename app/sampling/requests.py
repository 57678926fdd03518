"""Class labels of a guided sampling request, and the checks that a request fits its run.

A request names its classes as ``classes``: an int (every sample of that class), a list
of ints (one per sample), or ``"all"`` (``n`` samples of each class, class by class: a
grid with one row per class). :func:`sample_labels` turns that into one label per sample;
:func:`guidance_settings` refuses what a run cannot do (labels for an unconditional model
without a classifier, a conditional model without labels, guidance settings without the
thing they guide) with one-line messages naming the argument and what is allowed.
:func:`interpolation_guidance` does the same for an interpolation, whose mixtures are
decoded in one chain with one label (or the null label of a run trained with label
dropout).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ddpm_core.app.run.resume import stored_option

__all__ = ["Guidance", "guidance_settings", "guided_request", "interpolation_guidance",
           "parse_classes", "sample_labels"]


class Guidance(NamedTuple):
    """The guidance of one request, resolved against its run (defaults filled in)."""

    labels: np.ndarray | None  # int64 (N,), None for an unguided unconditional request
    scale: float  # classifier-free guidance scale s (1.0: the plain conditional model)
    rescale: float  # phi of Lin et al. (0.0: off)
    classifier_scale: float  # 0.0 when there is no classifier


def parse_classes(text: str) -> int | list[int] | str:
    """The ``--class`` value: ``all``, one integer, or integers separated by commas."""
    text = text.strip()
    if text == "all":
        return "all"
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--class must be 'all', an integer or integers separated by commas "
                         f"(e.g. 7 or 1,4,7); got {text!r}") from None
    return values if "," in text else values[0]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def sample_labels(classes: Any, n: int, num_classes: int) -> np.ndarray:
    """One label per sample, int64 (N,).

    Parameters
    ----------
    classes : int, sequence of int (length ``n``) or ``"all"``
        ``"all"`` gives ``n`` samples of class 0, then ``n`` of class 1, ... (N = n K).
    n : int >= 1
    num_classes : int >= 1
        K; labels must lie in [0, K).
    """
    if isinstance(classes, str):
        if classes != "all":
            raise ValueError(f"classes must be an integer, a list of integers or 'all'; "
                             f"got {classes!r}")
        return np.repeat(np.arange(num_classes, dtype=np.int64), n)
    if _is_int(classes):
        values = [int(classes)] * n
    elif isinstance(classes, (Sequence, np.ndarray)) and all(_is_int(c) for c in classes):
        values = [int(c) for c in classes]
        if len(values) != n:
            raise ValueError(f"classes must hold one label per sample (n={n}); got "
                             f"{len(values)} labels")
    else:
        raise ValueError(f"classes must be an integer, a list of integers or 'all'; "
                         f"got {classes!r}")
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"classes must lie in [0, {num_classes}) ({num_classes} classes); "
                         f"got {bad[0]}")
    return np.asarray(values, dtype=np.int64)


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number; got {name}={value!r}")
    return float(value)


def guidance_settings(num_classes: int, classes: Any, n: int, *, guidance: float | None = None,
                      guidance_rescale: float | None = None,
                      classifier_classes: int | None = None,
                      classifier_scale: float | None = None) -> Guidance:
    """Check a request against its run and fill in the defaults.

    Parameters
    ----------
    num_classes : int
        The model's K (``run.json`` ``unet.num_classes``; 0 for an unconditional model).
    classes, n : see :func:`sample_labels`
    guidance : float, optional
        Classifier-free guidance scale s (conditional models only; default 1.0).
    guidance_rescale : float in [0, 1], optional
        Lin et al.'s phi (conditional models only; default 0.0).
    classifier_classes : int, optional
        The guiding classifier's K, when there is a classifier.
    classifier_scale : float, optional
        Only with a classifier (default 1.0).
    """
    has_clf = classifier_classes is not None
    if classifier_scale is not None and not has_clf:
        raise ValueError(f"classifier_scale={classifier_scale!r} needs a classifier")
    if not num_classes:
        for name, value in (("guidance", guidance), ("guidance_rescale", guidance_rescale)):
            if value is not None:
                raise ValueError(f"{name} needs a class-conditional model, but this run is "
                                 "unconditional (unet.num_classes = 0); guide it with a "
                                 "classifier instead")
        if classes is not None and not has_clf:
            raise ValueError(f"this run is unconditional (unet.num_classes = 0) and takes no "
                             f"classes (got {classes!r}); give a classifier to guide it")
    if classes is None and (num_classes or has_clf):
        what = (f"this run is class-conditional ({num_classes} classes)" if num_classes
                else "classifier guidance")
        raise ValueError(f"{what} needs classes (--class): an integer, a list of one "
                         "integer per sample, or 'all'")
    scale = 1.0 if guidance is None else _finite("guidance", guidance)
    rescale = 0.0 if guidance_rescale is None else _finite("guidance_rescale", guidance_rescale)
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance_rescale must lie in [0, 1]; got {rescale}")
    clf_scale = 0.0 if not has_clf else (
        1.0 if classifier_scale is None else _finite("classifier_scale", classifier_scale))
    k = num_classes or classifier_classes or 0
    labels = None if classes is None else sample_labels(classes, n, k)
    return Guidance(labels, scale, rescale, clf_scale)


def guided_request(run_info: dict[str, Any], n: int, classes: Any = None, *,
                   guidance: float | None = None, guidance_rescale: float | None = None,
                   classifier: Any = None, classifier_scale: float | None = None
                   ) -> tuple[Guidance, Any, dict[str, Any] | None]:
    """A request's :class:`Guidance` and its classifier run, checked against the model run.

    Returns ``(guidance, classifier_config, classifier_info)``; the last two are None
    without a classifier. A classifier run that is missing, or whose image size, channel
    count, chain length or classes do not fit the model, is a one-line error naming it.
    """
    from ddpm_core.app.run.classifier_run import check_classifier_fits, read_classifier_run
    from ddpm_core.app.run.rundir import RunPaths
    from ddpm_core.models import UNetConfig

    num_classes = int(run_info["unet"].get("num_classes", 0) or 0)
    config = info = None
    if classifier is not None:
        config, info = read_classifier_run(classifier)
        check_classifier_fits(config, info, UNetConfig.from_dict(run_info["unet"]),
                              run_info["schedule"], num_classes,
                              path=RunPaths.of(classifier).run_json)
    g = guidance_settings(num_classes, classes, n, guidance=guidance,
                          guidance_rescale=guidance_rescale,
                          classifier_classes=None if config is None else config.num_classes,
                          classifier_scale=classifier_scale)
    return g, config, info


def interpolation_guidance(run_info: dict[str, Any], classes: Any = None, *,
                           guidance: float | None = None,
                           guidance_rescale: float | None = None) -> Guidance:
    """The one label that decodes every mixture of an interpolation, checked against its run.

    Both sources are mixed into one chain, so the request takes one class: ``classes`` an
    int in [0, K) (``labels`` int64 (1,)). A class-conditional run without ``classes``
    decodes with the null label K (``labels = [K]``, the unconditional model) only if it
    was trained with label dropout > 0 (run.json ``options.label_dropout``); an
    unconditional run takes no classes and no guidance (``labels`` None). There is no
    classifier guidance here (``classifier_scale`` is 0).
    """
    num_classes = int(run_info["unet"].get("num_classes", 0) or 0)
    if not num_classes and classes is not None:
        raise ValueError(f"this run is unconditional (unet.num_classes = 0) and takes no "
                         f"classes (got {classes!r}); interpolation has no classifier guidance")
    if classes is not None and not _is_int(classes):
        raise ValueError(f"interpolation decodes both images in one chain and takes one class "
                         f"(--class K, an integer in [0, {num_classes})); got {classes!r}")
    if num_classes and classes is None:
        return _null_label(run_info, num_classes, guidance, guidance_rescale)
    return guidance_settings(num_classes, classes, 1, guidance=guidance,
                             guidance_rescale=guidance_rescale)


def _null_label(run_info: dict[str, Any], num_classes: int, guidance: float | None,
                guidance_rescale: float | None) -> Guidance:
    """The null label K of a run trained with label dropout (the unconditional model)."""
    dropout = stored_option(run_info, "label_dropout")
    if not dropout:
        raise ValueError(f"this run is class-conditional ({num_classes} classes) and its "
                         f"run.json records label_dropout={dropout!r}, so it has no "
                         f"unconditional (null-label) model to decode with: give classes "
                         f"(--class K, an integer in [0, {num_classes}))")
    for name, value in (("guidance", guidance), ("guidance_rescale", guidance_rescale)):
        if value is not None:
            raise ValueError(f"{name}={value!r} needs classes (--class K, an integer in "
                             f"[0, {num_classes})); without them the null label decodes")
    return Guidance(np.array([num_classes], dtype=np.int64), 1.0, 0.0, 0.0)
