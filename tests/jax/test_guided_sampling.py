"""Guided sampling with JAX: one compiled scan, the same chain as PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402
from guided_runs import write_test_runs  # noqa: E402

from ddpm_core import sample_loop  # noqa: E402
from ddpm_core.app.run.classifier_run import read_classifier_run  # noqa: E402
from ddpm_core.app.sampling.requests import Guidance  # noqa: E402
from ddpm_core.backends.jax import api  # noqa: E402
from ddpm_core.backends.jax.guided import load_classifier  # noqa: E402
from ddpm_core.backends.jax.sampling import sample_keys  # noqa: E402

K = 3
SHAPE = (1, 8, 8)
TOL = 64 * float(np.finfo(np.float32).eps)
draw = jax.vmap(lambda k: jax.random.normal(k, SHAPE, jnp.float32))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = write_test_runs(tmp_path_factory.mktemp("guided"), K)
    return root


def _jax_chain(root, run, sampler, steps, g, with_clf=True):
    from ddpm_core.app.sampling.driver import chain_spec
    from ddpm_core.app.sampling.protocol import GuideSpec
    from ddpm_core.backends.jax.chain import BACKEND

    network, schedule, info = api.load_run(root / run, device="cpu")
    clf = None
    if with_clf:
        config, clf_info = read_classifier_run(root / "clf")
        clf = load_classifier(root / "clf", config, clf_info)
    guide = GuideSpec(network.module.config.num_classes, g.scale, g.rescale, clf, g.classifier_scale)
    chain = BACKEND.chain(network, chain_spec(schedule, info, sampler, steps), guide, compile=False)
    return chain.sampler, chain.params, network.module, network.params


def _torch_chain(root, run, sampler, steps, g, x_T, keys):
    """The PyTorch backend's guided chain on the same weights and the JAX chain's noise."""
    torch = pytest.importorskip("torch")
    from ddpm_core.app.sampling.chains import chain_schedule
    from ddpm_core.app.sampling.protocol import ChainSpec
    from ddpm_core.backends.torch import api as torch_api
    from ddpm_core.backends.torch.chain import TorchChain
    from ddpm_core.backends.torch.guided import load_classifier as torch_clf
    from ddpm_core.backends.torch.guided import make_guide

    net, schedule, info = torch_api.load_run(root / run, device="cpu")
    config, clf_info = read_classifier_run(root / "clf")
    clf = torch_clf(root / "clf", config, clf_info, torch.device("cpu"))
    sched = chain_schedule(schedule, sampler, steps)
    guide = make_guide(net, g.labels, scale=g.scale, rescale=g.rescale, classifier=clf,
                       classifier_scale=g.classifier_scale)
    chain = TorchChain(net, ChainSpec(sched, sampler, 0.0, "eps", "fixed_small", True), guide.spec)
    n = sched.num_timesteps
    noise = {i: torch.from_numpy(np.array(draw(keys[:, n - i]))) for i in range(1, n)}
    x, _ = chain.run(torch.from_numpy(np.array(x_T)), noise.get, guide.labels, start=None, frame_steps=())
    return x.numpy()


@pytest.mark.parametrize("run,sampler,g", [
    ("cond", "ddpm", Guidance(np.array([2, 0, 1]), 3.0, 0.5, 2.0)),
    ("uncond", "ddim", Guidance(np.array([1, 1, 0]), 1.0, 0.0, 3.0)),
    ("cond", "dpmpp-2m", Guidance(np.array([2, 0, 1]), 3.0, 0.5, 2.0)),
    ("uncond", "dpmpp-2m-sde", Guidance(np.array([1, 1, 0]), 1.0, 0.0, 3.0)),
])
def test_torch_and_jax_sample_the_same_guided_chain(runs, run, sampler, g):
    """Same weights, same noise: the guided chains agree to float32 tolerance."""
    s, params, _, _ = _jax_chain(runs, run, sampler, 5, g)
    keys = sample_keys(3, np.arange(3), s.num_steps)
    x_T = draw(keys[:, 0])
    x, _ = s.run(params, x_T, keys[:, 1:], labels=g.labels)
    ref = _torch_chain(runs, run, sampler, 5, g, x_T, keys)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=0, atol=1e-4)
    assert np.abs(np.asarray(x)).max() > 0.1


def test_guidance_one_is_the_plain_conditional_sampler(runs):
    """s = 1 in the compiled scan == the core's loop on net(x, t, y) with the same keys."""
    y = np.array([0, 2])
    s, params, net, unet_params = _jax_chain(runs, "cond", "ddpm", 5, Guidance(y, 1.0, 0.0, 0.0),
                                             with_clf=False)
    keys = sample_keys(1, np.arange(2), s.num_steps)
    x_T = draw(keys[:, 0])
    model = jax.jit(lambda x, t: net.apply({"params": unet_params}, x, t.astype(jnp.int32),
                                           jnp.asarray(y)))
    n = s.num_steps
    ref = None
    for st in sample_loop(s.chain.schedule, model, x_T, lambda i: draw(keys[:, n - i]),
                          sampler="ddpm", clip=True):
        ref = st.x
    x, _ = s.run(params, x_T, keys[:, 1:], labels=y)
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=0, atol=TOL)


def test_errors(runs):
    with pytest.raises(ValueError, match="class-conditional .3 classes. needs classes"):
        api.sample(runs / "cond", n=2, device="cpu")
    with pytest.raises(ValueError, match="guidance_rescale needs a class-conditional model"):
        api.sample(runs / "uncond", n=2, guidance_rescale=0.5, device="cpu")
    with pytest.raises(ValueError, match="classifier guidance needs classes"):
        api.sample(runs / "uncond", n=2, classifier=runs / "clf", device="cpu")
    with pytest.raises(ValueError, match="labels must have shape"):
        s, params, _, _ = _jax_chain(runs, "cond", "ddim", 2, Guidance(np.zeros(2, int), 1, 0, 0),
                                     with_clf=False)
        s.generate(params, n=3, labels=np.zeros(2, int))


@pytest.fixture(scope="module")
def dropout_run(runs):
    """A conditional run whose run.json records label dropout 0.1 (the null label decodes)."""
    import json

    from guided_runs import write_model_run

    write_model_run(runs / "dropout", num_classes=K, seed=3)
    info = json.loads((runs / "dropout" / "run.json").read_text())
    (runs / "dropout" / "run.json").write_text(json.dumps({**info, "options": {
        "label_dropout": 0.1}}))
    return runs / "dropout"


def test_progressive_with_labels_ends_with_the_sample(runs):
    """Figure 6 of a guided request: the chains of `sample` with the same arguments."""
    kw = dict(classes="all", guidance=3.0, guidance_rescale=0.5, classifier=runs / "clf",
              classifier_scale=2.0, steps=5, seed=4, device="cpu")
    frames = api.progressive(runs / "cond", n=1, frames=3, **kw)
    images = api.sample(runs / "cond", n=1, **kw)
    assert frames.shape == (3, K, 8, 8, 1) and frames.dtype == np.uint8
    # x0_hat of step 0 and x_0 agree to TOL in float32 (test_sampling.py's
    # test_progressive_frames_end_at_the_sample); the uint8 rounding may differ by one
    assert np.abs(frames[-1].astype(int) - images).max() <= 1
    assert np.abs(frames[0].astype(int) - frames[-1]).max() > 0


def _plain_interpolation(root, run, label, lambdas):
    """Sampler.interpolate of a model that closes over the label (no label plumbing)."""
    from ddpm_core.app.run.splits import interpolation_sources
    from ddpm_core.backends.jax.sampling import Chain, Sampler
    from ddpm_core.data import to_model_range

    (net, params), schedule, info = api.load_run(root / run, device="cpu")
    model = lambda p, x, t: net.apply({"params": p}, x, t,  # noqa: E731
                                      jnp.full((x.shape[0],), label, jnp.int32))
    s = Sampler(model, Chain(schedule), SHAPE)
    src = to_model_range(interpolation_sources(info, (0, 1))).transpose(0, 3, 1, 2)
    return s.interpolate(params, src[0], src[1], lambdas=lambdas, t=6, seed=0)


def test_interpolate_with_the_null_label_and_with_a_class(runs, dropout_run, tmp_path):
    pytest.importorskip("sklearn")
    from ddpm_core.app.cli import main
    from ddpm_core.backends.jax.sampling import to_images

    lambdas = [0.0, 0.5, 1.0]
    got = api.interpolate(dropout_run, t=6, lambdas=lambdas, device="cpu")  # label K
    ref = to_images(_plain_interpolation(runs, "dropout", K, lambdas))
    assert got.shape == (3, 8, 8, 1)
    assert np.abs(got.astype(int) - ref).max() <= 1  # float32 agreement to TOL
    out = tmp_path / "i.png"
    assert main(["interpolate", "--backend", "jax", "--run", str(runs / "cond"), "--device",
                 "cpu", "--t", "6", "--lambdas", "0,1", "--class", "1", "--guidance", "2",
                 "--out", str(out)]) == 0
    npz = np.load(out.with_suffix(".npz"))
    assert npz["interpolations"].shape == (1, 2, 8, 8, 1) and int(npz["label"]) == 1


def test_figure_errors(runs, dropout_run, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"class-conditional .3 classes. needs classes \(--class\)"):
        api.progressive(runs / "cond", n=2, frames=2, device="cpu")
    with pytest.raises(ValueError, match="records label_dropout=None"):
        api.interpolate(runs / "cond", t=5, lambdas=[0, 1], device="cpu")
    with pytest.raises(ValueError, match=r"guidance=2.0 needs classes \(--class K"):
        api.interpolate(dropout_run, t=5, lambdas=[0, 1], guidance=2.0, device="cpu")
    from ddpm_core.app.cli import main

    rc = main(["progressive", "--backend", "jax", "--run", str(runs / "cond"), "--device", "cpu",
               "--out", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs classes (--class)" in err and err.count("\n") == 1
