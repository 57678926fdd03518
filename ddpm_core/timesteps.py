r"""Which timesteps training visits: uniform (Algorithm 1) or importance sampled.

Importance sampling by the loss's second moment (Nichol & Dhariwal 2021, sec. 3.3):

.. math:: p_t \propto \sqrt{\mathbb E[L_t^2]}, \qquad
          L_{vlb} = \mathbb E_{t \sim p_t}\big[L_t / (T p_t)\big]

The core owns no random number generator: ``sample_timesteps`` maps uniform draws that the
caller makes (any namespace) through the inverse CDF of the weights. The sampler state is an
immutable value; ``update`` returns a new one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ddpm_core._namespace import constant, device_of, index_dtype, namespace
from ddpm_core.checks import check_all

__all__ = ["uniform_weights", "LossSecondMoment", "sample_timesteps"]


def uniform_weights(num_timesteps: int) -> np.ndarray:
    """p_t = 1/T for every step, float64 (T,)."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got num_timesteps={num_timesteps}")
    return np.full(num_timesteps, 1.0 / num_timesteps)


@dataclasses.dataclass(frozen=True)
class LossSecondMoment:
    """Per-step history of the last ``history`` losses; weights once every step has them.

    Attributes
    ----------
    losses : float64 (T, history), the most recent losses of each step (newest last)
    counts : int64 (T,), how many losses each step has seen (capped at ``history``)
    uniform_prob : the probability mass spread uniformly, keeping every p_t > 0
    """

    losses: np.ndarray
    counts: np.ndarray
    uniform_prob: float = 0.001

    @classmethod
    def create(cls, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001) -> LossSecondMoment:
        """An empty state for a T-step chain."""
        if num_timesteps < 1 or history < 1:
            raise ValueError(
                f"num_timesteps and history must be >= 1, got {num_timesteps=}, {history=}"
            )
        if not 0 < uniform_prob <= 1:
            raise ValueError(f"uniform_prob must lie in (0, 1], got {uniform_prob=}")
        return cls(np.zeros((num_timesteps, history)), np.zeros(num_timesteps, np.int64), uniform_prob)

    @property
    def warmed_up(self) -> bool:
        """True once every step has a full history."""
        return bool(np.all(self.counts == self.losses.shape[1]))

    def weights(self) -> np.ndarray:
        """p_t (float64, (T,), sums to 1): uniform until warmed up."""
        T = self.losses.shape[0]
        if not self.warmed_up:
            return uniform_weights(T)
        w = np.sqrt(np.mean(self.losses**2, axis=1))
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / T

    def update(self, t: Any, losses: Any) -> LossSecondMoment:
        """A new state with the per-sample ``losses`` (B,) observed at steps ``t`` (B,)."""
        t_np = np.asarray(t).reshape(-1).astype(np.int64)
        l_np = np.asarray(losses, dtype=np.float64).reshape(-1)
        if t_np.shape != l_np.shape:
            raise ValueError(f"t and losses must have the same length, got {t_np.shape} and {l_np.shape}")
        T, H = self.losses.shape
        if t_np.size and (t_np.min() < 0 or t_np.max() >= T):
            raise ValueError(f"t must lie in [0, {T}), got values in [{t_np.min()}, {t_np.max()}]")
        hist, counts = self.losses.copy(), self.counts.copy()
        for step, value in zip(t_np, l_np, strict=True):
            hist[step, :-1] = hist[step, 1:]
            hist[step, -1] = value
            counts[step] = min(counts[step] + 1, H)
        return dataclasses.replace(self, losses=hist, counts=counts)


def sample_timesteps(weights: Any, u: Any) -> tuple[Any, Any]:
    """Map uniform draws ``u`` (B,) in [0, 1) to steps t ~ weights and importance weights.

    Returns
    -------
    t : (B,) of the namespace's indexing dtype (int64; int32 for JAX without x64)
    importance : (B,) 1 / (T p_t), in ``u``'s dtype: multiply per-sample losses by it to
        keep the objective unbiased.
    """
    xp = namespace(u)
    if not xp.isdtype(u.dtype, "real floating"):
        raise TypeError(f"u must be a real floating-point array of uniform draws, got dtype {u.dtype}")
    check_all((u >= 0.0) & (u < 1.0), "u must lie in [0, 1) (uniform draws)", values=u)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError("weights must be a 1-D array of non-negative probabilities summing to 1")
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    dev = device_of(u)
    cdf_x = constant(cdf, xp, dev, u.dtype)
    t = xp.searchsorted(cdf_x, u, side="right")
    t = xp.clip(xp.astype(t, index_dtype(xp, dev)), 0, w.shape[0] - 1)
    probs = constant(w, xp, dev, u.dtype)
    return t, 1.0 / (w.shape[0] * xp.take(probs, t, axis=0))
