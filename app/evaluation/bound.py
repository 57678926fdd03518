"""The bound of eq. (5) in bits/dim (``ddpm eval bpd``) and the paper's Figure 5.

:func:`bpd` runs the core's :func:`ddpm_core.bits_per_dim` with a backend's network (the
sampling protocol's float32 model); everything else here is NumPy only.

Noise: the term L_{t-1} of image j uses ``default_rng([seed, j, t])`` (0-based t), so the
bound of an image does not depend on the batch size or the backend, and both backends see
the same x_t.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.atomic import atomic_write_bytes
from ddpm_core.app.run.progress import Progress
from ddpm_core.app.run.splits import heldout_images
from ddpm_core.checks import check_int

__all__ = ["BPD_KEYS", "batch_noise_fn", "bpd", "public", "rate_distortion", "summarize_bpd",
           "write_rate_distortion"]

BPD_KEYS = ("bpd", "prior", "terms", "decoder", "n")
PIXEL_SCALE = 127.5  # [-1, 1] -> [0, 255]: RMSE in pixel units is 127.5 * RMSE


def batch_noise_fn(seed: int, start: int, shape: tuple[int, ...],
                   convert: Callable[[np.ndarray], Any]) -> Callable[[int], Any]:
    """``noise_fn(i)`` for images ``start .. start + shape[0] - 1``: float32 N(0, 1) of
    ``shape`` (B, C, H, W), row j from ``default_rng([seed, start + j, i])``, passed
    through ``convert`` (to the backend's array type)."""
    per_image = tuple(shape[1:])

    def noise_fn(i: int) -> Any:
        rows = [np.random.default_rng([seed, start + j, int(i)]).standard_normal(per_image,
                                                                                   np.float32)
                for j in range(shape[0])]
        return convert(np.stack(rows))

    return noise_fn


def bpd(backend: Any, run_dir: str | os.PathLike, *, n: int, batch_size: int | None = None, seed: int = 0,
        use_ema: bool = True, device: str = "auto", clip: bool = False, progress: bool = False) -> dict[str, Any]:
    """The bound of eq. (5) in bits/dim on the first ``n`` held-out images of a run.

    Every one of the T terms is the core's :func:`ddpm_core.bits_per_dim` (T network calls
    per batch), with the backend's float32 network (``backend``: a
    ``ddpm_core.app.sampling.protocol.SampleBackend``; no mixed precision, the bound needs
    full precision) and the noise of :func:`batch_noise_fn`, so both backends give the same
    numbers on the same weights.

    Parameters
    ----------
    run_dir : path of a run directory (either backend's)
    n : int, >= 1, at most the held-out split's size
    batch_size : int, >= 1, optional (default ``n``)
    seed : int, >= 0, seeds the noise of every term
    use_ema : bool, the EMA weights (default) or the raw ones
    clip : bool, clip x0_hat to [-1, 1] before the posterior mean (the model is then the
        clipped one; still a valid bound) and in the distortion; default False
    progress : bool, show the terms done (network calls, T per batch) on stderr

    Returns
    -------
    dict, see :func:`summarize_bpd` (``bpd = prior + terms + decoder``; ``terms_per_t``
    (T,), ``rmse_per_t`` (T,), ``bpd_per_image`` (n,)).
    """
    from ddpm_core import bits_per_dim
    from ddpm_core.app.sampling.driver import load_run
    from ddpm_core.data import to_model_range

    n = check_int("n", n, 1)
    bs = n if batch_size is None else check_int("batch_size", batch_size, 1)
    network, schedule, info = load_run(backend, run_dir, use_ema=use_ema, device=device)
    fn = backend.float32_model(network)
    x_all = to_model_range(heldout_images(info, n)).transpose(0, 3, 1, 2)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    bar = Progress(schedule.num_timesteps * -(-n // bs), "bits/dim terms", unit="term", enabled=progress)
    if progress:
        fn = _ticking(fn, bar)
    for start in range(0, n, bs):
        x0 = backend.asarray(network, np.ascontiguousarray(x_all[start:start + bs]))
        noise = batch_noise_fn(seed, start, tuple(x0.shape), lambda a: backend.asarray(network, a))
        with backend.inference():
            r = bits_per_dim(schedule, fn, x0, noise, prediction=info["prediction"],
                             variance=info["variance"], clip=True if clip else None)
        for k, a in enumerate((r.total, r.prior, r.terms, r.mse)):
            parts[k].append(np.asarray(backend.numpy(a), np.float64))
    bar.close()
    total, prior = np.concatenate(parts[0]), np.concatenate(parts[1])
    terms, mse = np.concatenate(parts[2], axis=1), np.concatenate(parts[3], axis=1)
    return summarize_bpd(total, prior, terms, mse)


def _ticking(fn: Any, bar: Progress) -> Any:
    """``fn`` (the network) counting its calls on ``bar``: one call per term of the bound."""
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        bar.update()
        return out
    return call


def summarize_bpd(total: np.ndarray, prior: np.ndarray, terms: np.ndarray,
                  mse: np.ndarray) -> dict[str, Any]:
    """The bound's decomposition averaged over images, from per-image arrays.

    Parameters
    ----------
    total, prior : (N,) bits/dim per image (eq. 5 and L_T)
    terms, mse : (T, N) L_{t-1} per 0-based index t (``terms[0]`` is the decoder L_0) and
        the mean squared error of x0_hat on the [-1, 1] scale

    Returns
    -------
    dict
        ``bpd`` (mean total), ``prior`` (L_T), ``terms`` (sum of L_{t-1} over t >= 2, the
        KL terms), ``decoder`` (L_0), ``n``; so ``bpd = prior + terms + decoder``. Also
        ``terms_per_t`` (T,) (mean L_{t-1}, decoder at index 0), ``rmse_per_t`` (T,) (RMSE
        of x0_hat on [0, 255]) and ``bpd_per_image`` (N,).
    """
    terms = np.asarray(terms, np.float64)
    per_t = terms.mean(axis=1)
    return {
        "bpd": float(np.mean(total)),
        "prior": float(np.mean(prior)),
        "terms": float(per_t[1:].sum()),
        "decoder": float(per_t[0]),
        "n": int(terms.shape[1]),
        "terms_per_t": per_t,
        "rmse_per_t": PIXEL_SCALE * np.sqrt(np.asarray(mse, np.float64).mean(axis=1)),
        "bpd_per_image": np.asarray(total, np.float64),
    }


def public(result: Mapping[str, Any], keys: tuple[str, ...] = BPD_KEYS) -> dict[str, Any]:
    """The JSON-able scalars of a result dict (``keys`` first, then other scalars)."""
    out = {k: result[k] for k in keys}
    out.update({k: v for k, v in result.items()
                if k not in out and isinstance(v, (int, float, str, bool))})
    return out


def rate_distortion(result: Mapping[str, Any]) -> np.ndarray:
    """Rate and distortion against t (Figure 5) from a ``bpd`` result.

    The rate at 0-based index t is the bits/dim received when the chain is at t: the prior
    L_T plus every term from index T - 1 down to t, so it grows as t decreases and equals
    the bound at t = 0. Distortion is the RMSE of x0_hat from x_t on the [0, 255] scale.

    Returns
    -------
    ndarray, float64, shape (T, 3): columns t (0-based), rate, distortion.
    """
    per_t = np.asarray(result["terms_per_t"], np.float64)
    rate = result["prior"] + np.cumsum(per_t[::-1])[::-1]
    t = np.arange(per_t.shape[0], dtype=np.float64)
    return np.stack([t, rate, np.asarray(result["rmse_per_t"], np.float64)], axis=1)


def write_rate_distortion(prefix: str | os.PathLike, table: np.ndarray) -> tuple[Path, Path]:
    """Write ``PREFIX.csv`` (t, rate, distortion) and ``PREFIX.png`` (two panels against
    t, as in Figure 5), atomically; returns both paths. Needs matplotlib for the PNG."""
    prefix = Path(prefix)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["t", "rate_bpd", "distortion_rmse"])
    for t, rate, dist in table:
        writer.writerow([int(t), f"{rate:.9g}", f"{dist:.9g}"])
    csv_path = prefix.with_name(prefix.name + ".csv")
    png_path = prefix.with_name(prefix.name + ".png")
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    atomic_write_bytes(png_path, _plot_png(table))
    return csv_path, png_path


def _plot_png(table: np.ndarray) -> bytes:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib ships with the eval extra
        raise ValueError('the rate-distortion plot needs matplotlib: pip install '
                         '"ddpm-core[eval]"') from e
    fig = Figure(figsize=(9, 3.2))
    t = table[:, 0] + 1  # the paper's 1-based t
    panels = ((table[:, 2], "Distortion (RMSE [0, 255])"), (table[:, 1], "Rate (bits/dim)"))
    for k, (y, label) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.plot(t, y)
        ax.set_xlabel("t (1-based; sampling runs left to right)", fontsize=8)
        ax.set_ylabel(label)
        ax.invert_xaxis()
    ax = fig.add_subplot(1, 3, 3)
    ax.plot(table[:, 1], table[:, 2])
    ax.set_xlabel("Rate (bits/dim)")
    ax.set_ylabel("Distortion (RMSE [0, 255])")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()
