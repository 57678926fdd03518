"""What depends only on ``(seed, step)``: stream seeds, data order, flips, timesteps and
the label dropout of class-conditional runs.

Data order, flips, timesteps, dropped labels and noise depend only on ``(seed, step)`` (:func:`step_seed`,
:func:`batch_indices`), so a resumed run continues exactly and ``N`` ranks each take a
fixed slice of the same global batch.
"""

from __future__ import annotations

import functools

import numpy as np

from ddpm_core.checks import check_int

__all__ = ["STREAM_DROPOUT", "STREAM_INIT", "STREAM_LABELS", "STREAM_NOISE", "STREAM_T",
           "batch_indices", "flip_mask", "label_drop_mask", "step_seed", "timestep_draws"]

# The independent random streams of a training step (``step_seed(seed, step, stream)``).
STREAM_T, STREAM_NOISE, STREAM_DROPOUT, STREAM_INIT = 1, 2, 3, 4
# The host stream of the label dropout (``default_rng([seed, step, STREAM_LABELS])``).
STREAM_LABELS = 0x1ABE1


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed that depends only on ``(seed, step, stream)``.

    Backends seed their generator for step ``step`` with this, so the randomness of a
    step does not depend on how many steps ran before it in this process.
    """
    check_int("seed", seed, 0)
    check_int("step", step, 0)
    check_int("stream", stream, 0)
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1))


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int, *,
                  rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Dataset indices of this rank's share of the global batch of ``step``.

    The data are visited epoch by epoch, each epoch in the order of a permutation seeded by
    ``(seed, epoch)``; step ``s`` takes global positions ``s*B .. s*B + B - 1`` of that
    endless sequence (``B = batch_size``, the global batch). Rank ``r`` of ``world_size``
    takes the contiguous block ``r*B/W .. (r+1)*B/W - 1`` of it, so the union over ranks is
    the single-process batch in the same order (the DistributedSampler split, but exact for
    any step).

    Returns
    -------
    ndarray of int64, shape (batch_size // world_size,)
    """
    check_int("num_examples", num_examples, 1)
    check_int("batch_size", batch_size, 1)
    check_int("world_size", world_size, 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got {rank!r}")
    if batch_size % world_size:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by world_size "
                         f"({world_size})")
    per = batch_size // world_size
    pos = step * batch_size + rank * per + np.arange(per, dtype=np.int64)
    epochs, offsets = np.divmod(pos, num_examples)
    out = np.empty(per, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = _permutation(seed, int(epoch), num_examples)
        sel = epochs == epoch
        out[sel] = perm[offsets[sel]]
    return out


@functools.lru_cache(maxsize=2)  # an epoch's steps share it (a batch can straddle two)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    perm = np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)
    perm.flags.writeable = False
    return perm


def flip_mask(seed: int, step: int, batch_size: int, *, rank: int = 0,
              world_size: int = 1) -> np.ndarray:
    """Boolean (batch_size // world_size,) mask of the images flipped left-right at ``step``.

    Drawn for the whole global batch from ``(seed, step)`` and sliced like
    :func:`batch_indices`.
    """
    per = batch_size // world_size
    rng = np.random.default_rng([int(seed), int(step), 0xF11B])
    return rng.random(batch_size)[rank * per:(rank + 1) * per] < 0.5


def timestep_draws(seed: int, step: int, batch_size: int) -> np.ndarray:
    """The global batch's uniform draws u in [0, 1), float64 (batch_size,), of ``step``.

    ``ddpm_core.sample_timesteps`` maps them to timesteps; rank r takes the same slice as
    :func:`batch_indices` gives it.
    """
    return np.random.default_rng([int(seed), int(step), STREAM_T]).random(batch_size)


def label_drop_mask(seed: int, step: int, batch_size: int, p: float, *, rank: int = 0,
                    world_size: int = 1) -> np.ndarray:
    """Boolean (batch_size // world_size,) mask of the labels replaced by the null label.

    Each label of the global batch of ``step`` is dropped with probability ``p``
    (classifier-free guidance training, Ho & Salimans 2022), from uniform draws of
    ``default_rng([seed, step, STREAM_LABELS])``; sliced like :func:`batch_indices`.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"label dropout p must be in [0, 1); got {p!r}")
    per = batch_size // world_size
    rng = np.random.default_rng([int(seed), int(step), STREAM_LABELS])
    return rng.random(batch_size)[rank * per:(rank + 1) * per] < p
