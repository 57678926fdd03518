"""Guided sampling with PyTorch: classifier-free guidance and classifier guidance."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from guided_runs import T, write_test_runs  # noqa: E402

import ddpm_core.reverse as guided_steps  # noqa: E402
from ddpm_core import sample_loop  # noqa: E402
from ddpm_core.app.sampling.chains import chain_schedule  # noqa: E402
from ddpm_core.backends.torch import api, sampling  # noqa: E402
from ddpm_core.backends.torch.classifier import log_prob_grad  # noqa: E402
from ddpm_core.backends.torch.guided import conditional_model, load_classifier  # noqa: E402
from ddpm_core.backends.torch.noise import SampleStreams  # noqa: E402
from ddpm_core.guidance import cfg_output  # noqa: E402

K = 3
TOL = 64 * float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = write_test_runs(tmp_path_factory.mktemp("guided"), K)
    net, schedule, info = api.load_run(root / "cond", device="cpu")
    unet, _, _ = api.load_run(root / "uncond", device="cpu")
    from ddpm_core.app.run.classifier_run import read_classifier_run

    config, clf_info = read_classifier_run(root / "clf")
    clf = load_classifier(root / "clf", config, clf_info, torch.device("cpu"))
    return {"root": root, "net": net, "unet": unet, "schedule": schedule, "clf": clf}


def _noise(shape, steps, seed=0):
    """Explicit x_T and per-step noise (noise_fn(i) -> row i)."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(shape, generator=g)
    table = torch.randn((steps, *shape), generator=g)
    return x_T, lambda i: table[i]


def _final(loop):
    x = None
    for st in loop:
        x = st.x
    return x


def test_guidance_one_is_the_plain_conditional_sampler_exactly(runs):
    """s = 1 through the API == the core's sample_loop on net(x, t, y), bit for bit."""
    net, sched = runs["net"], runs["schedule"]
    y = [2, 0, 1]

    fn, labels = sampling.model_fn(net), torch.tensor(y)
    for sampler, steps in (("ddpm", 6), ("ddim", 5)):
        chain = chain_schedule(sched, sampler, steps)
        streams = SampleStreams(4, 0, 3, (1, 8, 8), chain.num_timesteps, torch.device("cpu"))
        ref = _final(sample_loop(chain, lambda x, t: fn(x, t, labels), streams.x_T, streams, sampler=sampler,
                                 clip=True)).permute(0, 2, 3, 1).numpy()
        got = api.sample(runs["root"] / "cond", n=3, sampler=sampler, steps=steps, seed=4,
                         classes=y, guidance=1.0, device="cpu")
        np.testing.assert_array_equal(got, api.sample(
            runs["root"] / "cond", n=3, sampler=sampler, steps=steps, seed=4, classes=y,
            device="cpu"))
        from ddpm_core.app.run.images import to_uint8

        np.testing.assert_array_equal(got, to_uint8(ref))


def test_cfg_is_one_batched_call_combining_cond_and_null_passes(runs):
    net = runs["net"]
    fn = sampling.model_fn(net)
    calls = []

    def spy(x, t, y):
        calls.append((x.shape[0], y.tolist()))
        return fn(x, t, y)

    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((2, 1, 8, 8)), dtype=torch.float32)
    t, y = torch.tensor([15, 15]), torch.tensor([1, 2])
    cond = fn(x, t, y).double()
    uncond = fn(x, t, torch.full((2,), K)).double()
    for s in (0.0, 1.0, 3.0):
        calls.clear()
        out = cfg_output(spy, x, t, y, K, s)
        assert calls == [(4, [1, 2, K, K])]  # one call: [x, x] with [y, null]
        ref = uncond + s * (cond - uncond)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=TOL * 10)
    calls.clear()
    conditional_model(spy, y, K, 3.0)(x, t)
    assert calls == [(4, [1, 2, K, K])]
    calls.clear()
    conditional_model(spy, y, K, 1.0)(x, t)  # s = 1: the conditional pass alone
    assert calls == [(2, [1, 2])]


@pytest.mark.parametrize("sampler,steps", [("ddpm", 5), ("ddim", 5)])
def test_classifier_scale_zero_is_the_unguided_sampler(runs, sampler, steps):
    net, clf = runs["unet"], runs["clf"]
    sched = chain_schedule(runs["schedule"], sampler, steps)
    x_T, noise = _noise((2, 1, 8, 8), steps)
    fn = sampling.model_fn(net)
    y = torch.tensor([0, 2])
    ref = _final(sample_loop(sched, fn, x_T, noise, sampler=sampler, clip=True))
    got = _final(sample_loop(sched, fn, x_T, noise, sampler=sampler, clip=True, classifier_scale=0.0,
                             classifier_grad=lambda x, t: log_prob_grad(clf, x, t, y)))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=0, atol=TOL)
    # through the API, scale 0 does not call the classifier: the same bits
    kw = dict(n=2, sampler=sampler, steps=steps, seed=1, device="cpu")
    np.testing.assert_array_equal(
        api.sample(runs["root"] / "uncond", **kw),
        api.sample(runs["root"] / "uncond", classes=[0, 2], classifier=runs["root"] / "clf",
                   classifier_scale=0.0, **kw))
    guided = api.sample(runs["root"] / "uncond", classes=[0, 2],
                        classifier=runs["root"] / "clf", classifier_scale=50.0, **kw)
    assert not np.array_equal(guided, api.sample(runs["root"] / "uncond", **kw))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_classifier_sees_original_chain_timesteps_under_respacing(runs, sampler):
    sched = chain_schedule(runs["schedule"], sampler, 4)
    assert sched.num_timesteps == 4 and list(sched.timesteps) != [0, 1, 2, 3]
    seen = []

    def grad_fn(x, t):
        seen.append(t.tolist())
        return torch.zeros_like(x)

    x_T, noise = _noise((2, 1, 8, 8), 4)
    _final(sample_loop(sched, sampling.model_fn(runs["unet"]), x_T, noise, sampler=sampler,
                       classifier_grad=grad_fn, classifier_scale=1.0))
    assert seen == [[int(t)] * 2 for t in sched.timesteps[::-1]]


def test_ddim_guidance_moves_eps_by_exactly_the_scaled_gradient(runs, monkeypatch):
    sched = chain_schedule(runs["schedule"], "ddim", 5)
    seen = {}
    real = guided_steps._ddim_back

    def spy(schedule, eps, x, i, noise, **kw):
        seen.update(eps=eps, i=i, kw=kw)
        return real(schedule, eps, x, i, noise, **kw)

    monkeypatch.setattr(guided_steps, "_ddim_back", spy)
    rng = np.random.default_rng(1)
    x, out, grad = (torch.as_tensor(rng.standard_normal((2, 1, 8, 8)), dtype=torch.float32)
                    for _ in range(3))
    i, s = 3, 2.5
    guided_steps.classifier_guided_step(sched, out, x, i, None, grad, scale=s, sampler="ddim",
                                        clip=True)
    root = np.sqrt(1.0 - sched.alphas_cumprod[i])  # float64 table, the respaced chain's abar
    ref = out.double().numpy() - root * s * grad.double().numpy()
    np.testing.assert_allclose(seen["eps"].numpy(), ref, rtol=0, atol=TOL)
    assert seen["i"] == i and seen["kw"]["prediction"] == "eps" and seen["kw"]["clip"] is True


def test_ancestral_guidance_moves_the_mean_by_variance_times_gradient(runs, monkeypatch):
    from ddpm_core import p_mean_variance

    sched = chain_schedule(runs["schedule"], "ddpm", 6)
    seen = {}
    real = guided_steps.ddpm_step

    def spy(schedule, mean, x, i, noise, **kw):
        seen.update(mean=mean, kw=kw)
        return real(schedule, mean, x, i, noise, **kw)

    monkeypatch.setattr(guided_steps, "ddpm_step", spy)
    rng = np.random.default_rng(2)
    x, out, grad, z = (torch.as_tensor(rng.standard_normal((2, 1, 8, 8)), dtype=torch.float32)
                       for _ in range(4))
    i, s = 4, 3.0
    step = guided_steps.classifier_guided_step(sched, out, x, i, z, grad, scale=s, clip=True)
    pmv = p_mean_variance(sched, out.double().numpy(), x.double().numpy(), i, clip=True)
    ref = pmv.mean + s * pmv.variance * grad.double().numpy()
    np.testing.assert_allclose(seen["mean"].numpy(), ref, rtol=0, atol=TOL)
    std = sched.posterior_std[i]  # the unguided step's sigma and noise
    np.testing.assert_allclose(step.x_prev.numpy(), ref + std * z.double().numpy(), rtol=0,
                               atol=TOL)


def test_batched_guided_chain_equals_each_sample_alone(runs):
    """Labels and classifier gradients stay with their sample inside a batch."""
    net, clf = runs["net"], runs["clf"]
    sched = chain_schedule(runs["schedule"], "ddpm", 5)
    x_T, noise = _noise((3, 1, 8, 8), 5, seed=3)
    y = torch.tensor([2, 0, 1])
    fn = sampling.model_fn(net)

    def run(rows):
        labels = y[rows]
        return _final(sample_loop(
            sched, conditional_model(fn, labels, K, 2.0), x_T[rows],
            lambda i: noise(i)[rows], classifier_grad=lambda x, t: log_prob_grad(clf, x, t, labels),
            classifier_scale=4.0, clip=True))

    whole = run(slice(0, 3))
    alone = torch.cat([run(slice(j, j + 1)) for j in range(3)])
    np.testing.assert_allclose(whole.numpy(), alone.numpy(), rtol=0, atol=10 * TOL)


def test_class_grid_and_label_errors(runs):
    root = runs["root"]
    grid = api.sample(root / "cond", n=2, sampler="ddim", steps=3, classes="all", guidance=2.0,
                      guidance_rescale=0.7, device="cpu")
    assert grid.shape == (2 * K, 8, 8, 1)
    with pytest.raises(ValueError, match="class-conditional .3 classes. needs classes"):
        api.sample(root / "cond", n=2, steps=3, sampler="ddim", device="cpu")
    with pytest.raises(ValueError, match="unconditional .* takes no classes"):
        api.sample(root / "uncond", n=2, steps=3, sampler="ddim", classes=1, device="cpu")
    with pytest.raises(ValueError, match="guidance needs a class-conditional model"):
        api.sample(root / "uncond", n=2, steps=3, sampler="ddim", guidance=2.0, device="cpu")
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 3\)"):
        api.sample(root / "cond", n=2, steps=3, sampler="ddim", classes=3, device="cpu")
    with pytest.raises(FileNotFoundError, match="no run.json"):
        api.sample(root / "cond", n=2, steps=3, sampler="ddim", classes=1,
                   classifier=root / "nowhere", device="cpu")
    assert T == runs["schedule"].num_timesteps
