r"""Sampling compiled end to end: the whole reverse chain is one ``jax.lax.scan``.

Each scan step calls the U-Net and then the core's ``reverse_step`` (the sampler's step:
Algorithm 2, DDIM, DPM-Solver++; a multistep sampler's previous x0_hat is carried by the
scan); the core is written against the array API,
so under ``jax.jit`` its schedule tables become compile-time constants and the chain of K
steps is a single XLA program with no per-step Python dispatch.

Randomness
----------
Sample ``j`` (its index in the whole request, not in its batch) owns the key
``k_j = fold_in(fold_in(seed_key(seed), 11), j)``; ``k_j`` is split into ``K + 1`` keys,
the first draws ``x_T`` and key ``s + 1`` the noise ``z`` of chain step ``s``. So a seed gives the
same image whatever the batch size, and the compiled chain and the Python loop
(:meth:`Sampler.run_loop`, a jitted step called K times) see exactly the same noise.

Chains (``chain_schedule``, the same rules as the PyTorch backend)
-------------------------------------------------------------------
``"ddpm"``: the full chain, or ``steps`` evenly spaced steps (respaced, exact);
``"ddim"``: ``steps`` steps (default ``min(50, T)``) with DDIM's stride, ``eta`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_core import reverse_step
from ddpm_core.app.sampling import driver
from ddpm_core.app.sampling.chains import SAMPLERS, chain_schedule, check_eta, progressive_steps
from ddpm_core.app.sampling.driver import to_images
from ddpm_core.app.sampling.protocol import ChainSpec
from ddpm_core.checks import check_choice

__all__ = [
    "SAMPLERS",
    "Chain",
    "Sampler",
    "chain_schedule",
    "progressive_steps",
    "sample_keys",
    "seed_key",
    "to_images",
]

_STREAM_SAMPLE = 11  # sampling keys: fold_in(seed_key(seed), 11), then the sample index


Chain = ChainSpec  # the chain a Sampler runs: schedule (respaced), sampler, eta, prediction, variance, clip


def seed_key(seed: int) -> jax.Array:
    """The PRNG key of an integer seed >= 0, using all 64 bits (``jax.random.key`` alone
    keeps 32 without x64): ``fold_in(key(seed mod 2**32), seed >> 32)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64); got {seed!r}")
    lo, hi = np.uint32(int(seed) & 0xFFFFFFFF), np.uint32(int(seed) >> 32)
    return jax.random.fold_in(jax.random.key(lo), hi)


def sample_keys(seed: int | jax.Array, indices: Any, num_steps: int) -> jax.Array:
    """Per-sample keys ``(B, num_steps + 1)``: row j is ``split(fold_in(k, indices[j]))``.

    ``seed`` is an int or a key; ``indices`` (B,) the samples' global indices. Column 0
    draws x_T, column ``s + 1`` the noise of chain step ``s``.
    """
    base = seed_key(seed) if isinstance(seed, (int, np.integer)) else seed
    base = jax.random.fold_in(base, _STREAM_SAMPLE)
    idx = jnp.asarray(indices, dtype=jnp.uint32)
    return jax.vmap(lambda j: jax.random.split(jax.random.fold_in(base, j), num_steps + 1))(idx)


def _normal(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """One standard normal draw of ``shape`` per key: (B,) keys -> (B, *shape) float32."""
    return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def _one_step(sampler: Sampler, params: Any, x: jax.Array, x0_prev: jax.Array, start: int, i: jax.Array,
              t_model: jax.Array, noise: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Model call + the core's ``reverse_step`` at step ``i`` (respaced index): ``(x_prev, x0_hat)``.

    ``x0_prev`` is the previous step's x0_hat (a multistep sampler's state; unused at the
    chain's first step ``start``). With labels ``y`` the model is called as
    ``model(params, x, t, y)``; with a classifier the step is classifier-guided (the
    classifier sees the original-chain ``t_model``).
    """
    c, B = sampler.chain, x.shape[0]
    tm = jnp.broadcast_to(t_model, (B,))
    out = (sampler.model(params, x, tm) if y is None else sampler.model(params, x, tm, y)).astype(jnp.float32)
    grad = None if sampler.classifier is None else sampler.classifier(params, x, tm, y)
    step = reverse_step(c.schedule, out, x, jnp.broadcast_to(i, (B,)), noise, **c.step_kwargs(), grad=grad,
                        classifier_scale=sampler.classifier_scale, x0_prev=x0_prev, start=start)
    return step.x_prev, step.x0_hat


class Sampler:
    """A compiled sampler for one network, chain and shape.

    Parameters
    ----------
    model : callable ``(params, x (B, C, H, W), t (B,) int) -> output (B, C or 2C, H, W)``
        Usually ``lambda p, x, t: unet.apply({"params": p}, x, t)``; for runs with labels
        ``(params, x, t, y (B,) int) -> output`` (``ddpm_core.backends.jax.guided``).
    chain : Chain (``ddpm_core.app.sampling.protocol.ChainSpec``)
        Schedule (already respaced with :func:`chain_schedule`) and step settings.
    shape : (C, H, W)
        One image's shape.
    classifier : ``(params, x, t_model, y) -> grad log p(y | x, t_model)``, or None
        (``ddpm_core.backends.jax.guided.classifier_grad``), guiding with
        ``classifier_scale``.

    Notes
    -----
    The jitted programs are built once per instance and reused for every call with the
    same batch size (the training loop keeps one instance for its sample grids).
    """

    def __init__(self, model: Callable[[Any, Any, Any], Any], chain: Chain,
                 shape: Sequence[int], *, classifier: Callable[..., Any] | None = None,
                 classifier_scale: float = 0.0) -> None:
        check_choice("sampler", chain.sampler, SAMPLERS)
        check_eta(chain.eta)
        self.model, self.chain, self.shape = model, chain, tuple(int(s) for s in shape)
        self.classifier, self.classifier_scale = classifier, float(classifier_scale)
        self.num_steps = chain.schedule.num_timesteps
        self._scan = jax.jit(self._chain, static_argnames=("num_frames", "start", "progress"))
        self._on_step: Callable[[], None] | None = None  # the running chain's host callback
        self._step = jax.jit(self._loop_step, static_argnames=("start",))

    # ------------------------------------------------------------------ tables

    def _indices(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Respaced indices start..0 and the model's (original-chain) timesteps."""
        idx = np.arange(start, -1, -1, dtype=np.int32)
        return idx, self.chain.schedule.timesteps[idx].astype(np.int32)

    def _loop_step(self, params: Any, x: jax.Array, x0: jax.Array, keys: jax.Array, s: jax.Array,
                   i: jax.Array, t_model: jax.Array, y: jax.Array | None, start: int) -> tuple[jax.Array, jax.Array]:
        """One step of :meth:`run_loop`: noise of column ``s`` of ``keys``, model, update."""
        noise = _normal(jax.lax.dynamic_index_in_dim(keys, s, 1, keepdims=False), self.shape)
        return _one_step(self, params, x, x0, start, i, t_model, noise, y)

    # ------------------------------------------------------------------ compiled chain

    def _chain(self, params: Any, x: jax.Array, keys: jax.Array, idx: jax.Array,
               t_model: jax.Array, slots: jax.Array, y: jax.Array | None, num_frames: int, start: int,
               progress: bool = False) -> tuple[jax.Array, jax.Array]:
        """``lax.scan`` over the steps; keys (S, B), idx/t_model/slots (S,), labels y (B,).
        The carry holds x, the previous step's x0_hat (a multistep sampler's state) and the
        kept frames. ``progress`` adds a host callback per step (``run``'s ``on_step``)."""
        frames = jnp.zeros((max(num_frames, 1), *x.shape), jnp.float32)

        def body(carry: tuple[jax.Array, jax.Array, jax.Array], xs: Any) -> tuple[Any, None]:
            x, x0_prev, frames = carry
            k, i, tm, slot = xs
            x_prev, x0 = _one_step(self, params, x, x0_prev, start, i, tm, _normal(k, self.shape), y)
            if num_frames:
                at = jnp.maximum(slot, 0)
                kept = jnp.where(slot >= 0, x0, frames[at])
                frames = jax.lax.dynamic_update_index_in_dim(frames, kept, at, 0)
            if progress:
                jax.debug.callback(self._tick, i)
            return (x_prev, x0, frames), None

        (x, _, frames), _ = jax.lax.scan(body, (x, jnp.zeros_like(x), frames), (keys, idx, t_model, slots))
        return x, frames

    def run(self, params: Any, x_init: jax.Array, step_keys: jax.Array, *,
            start: int | None = None, frame_steps: Sequence[int] = (),
            labels: Any = None, on_step: Callable[[], None] | None = None) -> tuple[jax.Array, jax.Array]:
        """Run the chain from ``x_init`` at respaced step ``start`` (default K - 1) to x_0;
        ``on_step`` is called on the host as each step finishes (a ``jax.debug.callback``
        inside the scan, compiled in only when it is given).

        Parameters
        ----------
        x_init : float32 (B, C, H, W)
        step_keys : keys (B, S) with S >= start + 1; column s is the noise of step s
        frame_steps : respaced step indices whose x0_hat to keep, in the order kept
        labels : int (B,) class labels given to the model (and the classifier), or None

        Returns
        -------
        x_0 : float32 (B, C, H, W), frames : float32 (len(frame_steps) or 1, B, C, H, W)
        """
        start = self.num_steps - 1 if start is None else int(start)
        idx, t_model = self._indices(start)
        slots = np.full(idx.shape, -1, np.int32)
        for n, s in enumerate(frame_steps):
            slots[start - int(s)] = n
        keys = jnp.swapaxes(step_keys[:, : idx.size], 0, 1)
        self._on_step = on_step
        out = self._scan(params, x_init, keys, idx, t_model, slots, _labels(labels),
                         num_frames=len(frame_steps), start=start, progress=on_step is not None)
        if on_step is not None:
            jax.effects_barrier()  # every step's callback has run before the bar moves on
        return out

    def _tick(self, i: Any) -> None:
        if self._on_step is not None:
            self._on_step()

    def run_loop(self, params: Any, x_init: jax.Array, step_keys: jax.Array, *,
                 start: int | None = None, labels: Any = None) -> jax.Array:
        """The same chain as :meth:`run` as a Python loop calling a jitted step."""
        start = self.num_steps - 1 if start is None else int(start)
        idx, t_model = self._indices(start)
        x, x0 = x_init, jnp.zeros_like(x_init)
        for s in range(idx.size):
            x, x0 = self._step(params, x, x0, step_keys, np.int32(s), idx[s], t_model[s], _labels(labels),
                               start=start)
        return x

    # ------------------------------------------------------------------ images

    def generate(self, params: Any, *, n: int, seed: int = 0, batch_size: int | None = None,
                 frame_steps: Sequence[int] = (), loop: bool = False, labels: Any = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples, float32 NCHW in [-1, 1], and the kept x0_hat frames (F, n, ...).

        The sampling driver's batches (``ddpm_core.app.sampling.driver.draw_chain``),
        padded to ``batch_size`` (one compilation); sample j always uses the keys of global
        index j. ``labels``: int (n,), sample j's class, or None. ``loop=True`` runs
        :meth:`run_loop` (no frames).
        """
        from ddpm_core.backends.jax.chain import BACKEND, JaxChain

        return driver.draw_chain(BACKEND, JaxChain(self, params, loop), n=n, seed=seed, batch_size=batch_size,
                                 labels=labels, frame_steps=frame_steps)

    def interpolate(self, params: Any, x0_a: np.ndarray, x0_b: np.ndarray, *,
                    lambdas: Sequence[float], t: int, seed: int = 0,
                    label: int | None = None) -> np.ndarray:
        """Encode two images to step ``t``, mix, decode (the paper's Figure 8).

        ``x_t = (1 - lam) q(x_t | x0_a) + lam q(x_t | x0_b)`` with the same encoding noise
        and the same reverse-chain noise for every ``lam``; float32 (L, C, H, W).
        ``x0_a``, ``x0_b``: float32 (C, H, W); ``label``: the class every mixture is
        decoded with (a model that takes labels), or None.
        """
        from ddpm_core.backends.jax.chain import BACKEND, JaxChain

        L = len(lambdas)
        labels = None if label is None else np.full((L,), label, np.int64)
        return driver.interpolate_images(BACKEND, JaxChain(self, params), x0_a, x0_b, lambdas=lambdas, t=t,
                                         seed=seed, labels=labels)


def _labels(labels: Any) -> jax.Array | None:
    """Labels as an int32 device array (a traced argument: one compilation for all)."""
    return None if labels is None else jnp.asarray(np.asarray(labels), jnp.int32)
