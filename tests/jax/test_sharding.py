"""Data parallel over 2 CPU devices gives the losses of 1 device at the same global batch.

XLA's host device count must be set before JAX starts, so the comparison runs in a fresh
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("sklearn")

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import jax, numpy as np
    from ddpm_core.app.training import trainer
    from ddpm_core.app.run.options import TrainOptions, resolve_options, with_defaults
    from ddpm_core.backends.jax import sampling as sample, training as tr

    assert len(jax.devices()) == 2, jax.devices()
    opts = with_defaults(TrainOptions(preset="tiny", out="unused", backend="jax", batch_size=8))
    preset, unet, train = resolve_options(opts)
    # A one-level U-Net: the property under test is the sharding, and it compiles fast.
    unet = dataclasses.replace(unet, ch=8, ch_mult=(1,), attn_resolutions=(), num_groups=4)
    data = trainer.load_train_data(opts, preset, unet)
    result = {}
    key = sample.seed_key(opts.seed)
    mesh1 = tr.make_mesh(jax.devices()[:1])
    init = tr.cached_init(unet, np.float32, tr._step_key(train), mesh1)
    state0 = jax.device_get(init(jax.random.fold_in(key, 4)))
    for n in (1, 2):
        mesh = tr.make_mesh(jax.devices()[:n])
        step_fn = tr.cached_train_step(unet, np.float32, tr._step_key(train), mesh)
        repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        state = jax.device_put(state0, repl)
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        losses = []
        for s in range(3):
            batch = trainer.host_batch(data, opts.seed, s, train, None)
            x0, t, w = tr.device_batch(batch, sharding)
            if n == 2:
                assert len(x0.sharding.device_set) == 2
            state, m = step_fn(state, key, np.int32(s), x0, t, w)
            losses.append(float(m["loss"]))
        leaves = [np.asarray(p).ravel() for p in jax.tree.leaves(state.params)]
        result[n] = {"losses": losses, "params": np.concatenate(leaves)[::97].tolist(),
                     "replicated": bool(jax.tree.leaves(state.params)[0]
                                        .sharding.is_fully_replicated)}
    json.dump(result, sys.stdout)
""")


def test_two_devices_match_one_device(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    one, two = res["1"], res["2"]
    assert two["replicated"]
    # Float32: the all-reduce sums the batch in another order; a few ulps of the loss.
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=64 * eps, atol=0)
    np.testing.assert_allclose(two["params"], one["params"], rtol=0, atol=1e4 * eps)
    assert one["losses"][0] != one["losses"][1]  # the steps really differ
