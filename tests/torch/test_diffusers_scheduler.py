"""DiffusersScheduler (ddpm_core.backends.torch.diffusers_scheduler) against diffusers' own schedulers.

Each sampler runs the same chain as its diffusers scheduler with the same settings and seed:
step by step on random model outputs, then a whole pipeline on a tiny UNet2DModel, then
diffusers' published full-loop numbers. Tolerances, with eps = float32's eps, T = 1000
training steps and K inference steps:

- diffusers keeps abar_t as a float32 cumulative product of T factors, each rounded once: its
  relative error is a random walk of T half-ulps, about sqrt(T) / 2 eps. A step combines a few
  such coefficients: 2 sqrt(T) eps per step, relative to max |x|. Ours are float64.
- DDPMScheduler (and DDIM's eta > 0 variance) recomputes the step's beta as
  1 - abar_t / abar_prev in float32: relative error eps / (2 beta) on the terms proportional to
  beta, where t >= 1 (at t = 0, abar_prev = 1 and both sides compute the same number).
- a pipeline of K steps carries each step's error to the end: K times the per-step bound.

Settings that differ by design (not compared): DPMSolverMultistepScheduler's
final_sigmas_type="sigma_min" (diffusers' published DPM-Solver numbers use it; ours steps to
sigma = 0, diffusers' default "zero"); DDIM with set_alpha_to_one=False and thresholding=True
(refused); DDIMScheduler with a "linspace" or non-integer-stride "trailing" spacing (diffusers
steps to t - T // K, not to the next timestep; ours steps to the next kept step).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)

from ddpm_core.backends.torch import DiffusersScheduler  # noqa: E402

# diffusers 0.42's DPM-Solver builds its sigmas with np.array(torch tensor), which NumPy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

EPS32 = float(np.finfo(np.float32).eps)
T = 1000
SHAPE = (2, 3, 8, 8)

# name: (their scheduler, our config, K, step keywords for both)
CASES = {
    "ddpm": (lambda: DDPMScheduler(), {}, 50, {}),
    "ddpm-fixed_large-v": (lambda: DDPMScheduler(variance_type="fixed_large", prediction_type="v_prediction"),
                           {"variance_type": "fixed_large", "prediction_type": "v_prediction"}, 50, {}),
    "ddim-eta0": (lambda: DDIMScheduler(), {"sampler": "ddim"}, 20, {"eta": 0.0}),
    "ddim-eta0.5-config": (lambda: DDIMScheduler(), {"sampler": "ddim", "eta": 0.5}, 20, {}),
    "ddim-eta1-clipped-eps": (lambda: DDIMScheduler(), {"sampler": "ddim"}, 20,
                              {"eta": 1.0, "use_clipped_model_output": True}),
    "ddim-trailing-offset": (lambda: DDIMScheduler(timestep_spacing="trailing", steps_offset=1),
                             {"sampler": "ddim", "timestep_spacing": "trailing", "steps_offset": 1}, 10, {}),
    "dpmpp-2m": (lambda: DPMSolverMultistepScheduler(), {"sampler": "dpmpp-2m", "clip_sample": False}, 20, {}),
    "dpmpp-2m-heun-leading": (
        lambda: DPMSolverMultistepScheduler(solver_type="heun", timestep_spacing="leading", steps_offset=1),
        {"sampler": "dpmpp-2m", "clip_sample": False, "solver_type": "heun", "timestep_spacing": "leading",
         "steps_offset": 1}, 20, {}),
    "dpmpp-2m-sde": (lambda: DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"),
                     {"sampler": "dpmpp-2m-sde", "clip_sample": False}, 20, {}),
}


def _theirs_kw(name, kw):
    """DDIMScheduler takes eta per step; our "-config" case reads it from the config."""
    return {"eta": 0.5} if name == "ddim-eta0.5-config" else kw


def _bound(ours, i, eta):
    """The per-step error bound (module docstring), relative to max |x|, at chain index i."""
    bound = 2 * math.sqrt(T)
    beta_noise = ours.config.sampler == "ddpm" or (ours.config.sampler == "ddim" and eta > 0)
    if beta_noise and ours.chain.timesteps[i] >= 1:
        bound += 1 / (2 * ours.chain.betas[i])
    return bound * EPS32


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- step by step

@pytest.mark.parametrize("name", list(CASES))
def test_every_step_is_diffusers_step(name):
    make, config, K, kw = CASES[name]
    theirs, ours = make(), DiffusersScheduler(**config)
    theirs.set_timesteps(K)
    ours.set_timesteps(K)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    rng = _gen(1)
    x = torch.randn(SHAPE, generator=rng)
    ga, gb = _gen(), _gen()  # the same seed: the same draws where diffusers draws
    for t in theirs.timesteps:
        out = torch.randn(SHAPE, generator=rng)
        a = theirs.step(out, t, x, generator=ga, **_theirs_kw(name, kw))
        b = ours.step(out, t, x, generator=gb, **kw)
        i = ours.chain.num_timesteps - 1 - int((theirs.timesteps == t).nonzero())
        tol = _bound(ours, i, kw.get("eta", config.get("eta", 0.0)))
        # relative to the size of the terms summed: x0_hat's are up to (|x| + |out|) / sqrt(abar_t)
        size = max(x.abs().max().item(), a.prev_sample.abs().max().item())
        pairs = [(a.prev_sample, b.prev_sample, size)]
        if getattr(a, "pred_original_sample", None) is not None:  # DPM-Solver's output has none
            size_x0 = (x.abs().max() + out.abs().max()).item() / math.sqrt(ours.chain.alphas_cumprod[i])
            pairs.append((a.pred_original_sample, b.pred_original_sample, size_x0))
        for want, got, size in pairs:
            assert got.dtype == want.dtype and got.shape == want.shape
            err = (got - want).abs().max().item()
            assert err <= tol * size, f"t={int(t)}: {err}"
        x = a.prev_sample
    assert torch.equal(ga.get_state(), gb.get_state())  # as many draws as diffusers made


# --------------------------------------------------------------------------- whole pipelines

@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


def _images(pipeline, **kw):
    pipeline.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipeline(batch_size=2, generator=_gen(), output_type="np", **kw).images


# DDIMPipeline turns any scheduler into a DDIMScheduler, so ours runs in DDPMPipeline, which
# only calls set_timesteps and step: eta then comes from our config. The DPM-Solvers predict v
# (x0_hat = alpha x - sigma v stays bounded; with eps the untrained network's x0_hat saturates
# every pixel).
PIPELINES = {
    "ddpm": (DDPMPipeline, lambda: DDPMScheduler(), {}, 50, {}),
    "ddim-eta0": (DDIMPipeline, lambda: DDIMScheduler(), {"sampler": "ddim"}, 20, {"eta": 0.0}),
    "ddim-eta0.5": (DDIMPipeline, lambda: DDIMScheduler(), {"sampler": "ddim", "eta": 0.5}, 20, {"eta": 0.5}),
    "dpmpp-2m": (DDPMPipeline, lambda: DPMSolverMultistepScheduler(prediction_type="v_prediction"),
                 {"sampler": "dpmpp-2m", "clip_sample": False, "prediction_type": "v_prediction"}, 20, {}),
    "dpmpp-2m-sde": (DDPMPipeline, lambda: DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++",
                                                                       prediction_type="v_prediction"),
                     {"sampler": "dpmpp-2m-sde", "clip_sample": False, "prediction_type": "v_prediction"}, 20, {}),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_pipeline_makes_diffusers_images(unet, name):
    pipe, make, config, K, kw = PIPELINES[name]
    want = _images(pipe(unet, make()), num_inference_steps=K, **kw)
    ours = DiffusersScheduler(**config)
    got = _images(DDPMPipeline(unet, ours), num_inference_steps=K)
    assert 0.5 < np.mean((want > 0) & (want < 1))  # most pixels unclamped: the comparison means something
    ours.set_timesteps(K)
    tol = K * max(_bound(ours, i, config.get("eta", 0.0)) for i in range(K))  # images are x / 2 + 1 / 2
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


# --------------------------------------------------------------------------- published numbers

def _dummy_sample(flip=False):
    """diffusers' scheduler tests' deterministic sample (B, C, H, W) = (4, 3, 8, 8): 0..n-1 / n
    laid out as (C, H, W, B); flipped, their deterministic noise."""
    n = 4 * 3 * 8 * 8
    values = torch.arange(n).flip(-1) if flip else torch.arange(n)
    return (values.reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


def _dummy_model(sample, t):
    """Their dummy model: model_output = sample * t / (t + 1)."""
    if isinstance(t, torch.Tensor):
        t = t.reshape(-1, 1, 1, 1).to(sample.dtype)
    return sample * t / (t + 1)


def _loop(scheduler, timesteps, sample, generator=None, **kw):
    for t in timesteps:
        sample = scheduler.step(_dummy_model(sample, t), t, sample, generator=generator, **kw).prev_sample
    return sample


def _check(sample, total, mean, sum_tol=1e-2):
    """diffusers' tolerances: 1e-2 on the sum of |x|, 1e-3 on its mean."""
    assert abs(sample.abs().sum().item() - total) < sum_tol
    assert abs(sample.abs().mean().item() - mean) < 1e-3


@pytest.mark.parametrize(("config", "total", "mean"), [
    ({}, 258.9606, 0.3372),  # test_scheduler_ddpm.py test_full_loop_no_noise
    ({"prediction_type": "v_prediction"}, 202.0296, 0.2631),  # test_full_loop_with_v_prediction
])
def test_ddpm_full_loop_gives_diffusers_published_numbers(config, total, mean):
    s = DiffusersScheduler(clip_sample=True, **config)
    _check(_loop(s, s.timesteps, _dummy_sample(), torch.manual_seed(0)), total, mean)


def test_ddpm_full_loop_with_noise_gives_diffusers_published_numbers():
    s = DiffusersScheduler()
    timesteps = s.timesteps[T - 2:]  # [1, 0]
    x = s.add_noise(_dummy_sample(), _dummy_sample(flip=True), timesteps[:1])
    # The step at t = 1 is diffusers' float32 beta_1 = 1 - abar_1 / abar_0 (relative error
    # eps / (2 beta_1) = 5e-4) times x0_hat: their sum carries it. The chain written out in float64
    # (same draws) gives 387.9673, ours 387.9672, theirs 387.9466.
    sum_tol = 1e-2 + EPS32 / (2 * s.schedule.betas[1]) * 387.9466
    _check(_loop(s, timesteps, x, torch.manual_seed(0)), 387.9466, 0.5051, sum_tol)


@pytest.mark.parametrize(("config", "start", "total", "mean"), [
    ({}, 0, 172.0067, 0.223967),  # test_scheduler_ddim.py test_full_loop_no_noise
    ({"prediction_type": "v_prediction"}, 0, 52.5302, 0.0684),  # test_full_loop_with_v_prediction
    ({"beta_start": 0.01, "set_alpha_to_one": True}, 0, 149.8295, 0.1951),  # ..._with_set_alpha_to_one
    ({}, 8, 354.5418, 0.4616),  # test_full_loop_with_noise (from the 9th of 10 steps)
])
def test_ddim_full_loop_gives_diffusers_published_numbers(config, start, total, mean):
    s = DiffusersScheduler(sampler="ddim", **config)
    s.set_timesteps(10)
    x = _dummy_sample()
    if start:
        x = s.add_noise(x, _dummy_sample(flip=True), s.timesteps[start:start + 1])
    _check(_loop(s, s.timesteps[start:], x), total, mean)


def test_dpm_solver_dummy_loop_is_diffusers_with_final_sigma_zero():
    """diffusers' published DPM-Solver numbers (0.3301, v: 0.2251) use final_sigmas_type="sigma_min":
    a different last step by design. With diffusers' default "zero" the loops agree."""
    theirs = DPMSolverMultistepScheduler(lower_order_final=False, final_sigmas_type="zero")
    ours = DiffusersScheduler(sampler="dpmpp-2m", clip_sample=False)
    for s in (theirs, ours):
        s.set_timesteps(10)
    a = _loop(theirs, theirs.timesteps, _dummy_sample())
    b = _loop(ours, ours.timesteps, _dummy_sample())
    torch.testing.assert_close(b, a, rtol=0, atol=10 * 2 * math.sqrt(T) * EPS32 * a.abs().max().item())


# --------------------------------------------------------------------------- configs

def test_save_pretrained_and_from_pretrained_round_trip(tmp_path):
    s = DiffusersScheduler(sampler="dpmpp-2m-sde", beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                           clip_sample=False, solver_type="heun", timestep_spacing="trailing")
    s.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "DiffusersScheduler" and saved["sampler"] == "dpmpp-2m-sde"
    back = DiffusersScheduler.from_pretrained(tmp_path)
    assert {k: v for k, v in back.config.items() if not k.startswith("_")} == \
        {k: v for k, v in s.config.items() if not k.startswith("_")}
    x, out = torch.randn(SHAPE, generator=_gen(1)), torch.randn(SHAPE, generator=_gen(2))
    for sch in (s, back):
        sch.set_timesteps(7)
    a = s.step(out, s.timesteps[0], x, generator=_gen()).prev_sample
    b = back.step(out, back.timesteps[0], x, generator=_gen()).prev_sample
    assert torch.equal(a, b)


def test_from_config_of_a_ddpm_scheduler():
    theirs = DDPMScheduler(beta_schedule="scaled_linear", beta_start=1e-3, beta_end=0.03, variance_type="fixed_large",
                           clip_sample_range=2.0, prediction_type="v_prediction", dynamic_thresholding_ratio=0.9)
    ours = DiffusersScheduler.from_config(theirs.config)
    assert ours.config.sampler == "ddpm"
    assert ours._step_kw == {"prediction": "v", "variance": "fixed_large", "clip": 2.0, "solver_type": "midpoint"}
    np.testing.assert_allclose(ours.schedule.alphas_cumprod, theirs.alphas_cumprod.double().numpy(),
                               rtol=0, atol=math.sqrt(T) / 2 * EPS32)
    for s in (theirs, ours):
        s.set_timesteps(25)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    # google/ddpm-cifar10-32's scheduler_config.json, as published: the unknown tensor_format is ignored
    cifar = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02, "beta_schedule": "linear",
             "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None,
             "variance_type": "fixed_large", "tensor_format": "pt"}
    assert DiffusersScheduler.from_config(cifar)._step_kw["variance"] == "fixed_large"
    given = DiffusersScheduler.from_config({"trained_betas": np.linspace(1e-3, 0.05, 200).tolist(),
                                            "num_train_timesteps": 200})
    np.testing.assert_allclose(given.schedule.betas, np.linspace(1e-3, 0.05, 200), rtol=1e-15)


def test_from_config_of_a_ddim_scheduler():
    theirs = DDIMScheduler(steps_offset=1, clip_sample=False, beta_schedule="squaredcos_cap_v2")
    ours = DiffusersScheduler.from_config(theirs.config, sampler="ddim", eta=0.3)
    assert (ours.config.sampler, ours.config.eta, ours._step_kw["clip"]) == ("ddim", 0.3, None)
    for s in (theirs, ours):
        s.set_timesteps(5)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist() == [801, 601, 401, 201, 1]
    with pytest.raises(ValueError, match="set_alpha_to_one=False cannot be represented"):
        DiffusersScheduler.from_config(DDIMScheduler(set_alpha_to_one=False).config, sampler="ddim")


@pytest.mark.parametrize(("kw", "message"), [
    ({"beta_schedule": "laplace"}, r"beta_schedule='laplace' cannot be represented: allowed values are \["),
    ({"thresholding": True}, "thresholding=True cannot be represented"),
    ({"variance_type": "learned"}, "variance_type='learned' cannot be represented"),
    ({"prediction_type": "flow"}, r"prediction_type='flow' cannot be represented: allowed values are \["),
    ({"timestep_spacing": "karras"}, r"timestep_spacing='karras' cannot be represented: allowed values are \["),
    ({"sampler": "euler"}, "sampler must be one of 'ddpm', 'ddim', 'dpmpp-2m', 'dpmpp-2m-sde'; got sampler='euler'"),
    ({"solver_type": "rk4"}, "solver_type must be one of 'midpoint', 'heun'; got solver_type='rk4'"),
    ({"eta": 0.5}, r"eta=0.5 applies only to sampler='ddim'; got sampler='ddpm' \(allowed: eta=0\)"),
    ({"sampler": "ddim", "eta": 2.0}, r"eta must be in \[0, 1\]; got 2.0"),
    ({"set_alpha_to_one": False}, "set_alpha_to_one=False cannot be represented: .* allowed: True"),
])
def test_unsupported_values_are_one_line_errors(kw, message):
    with pytest.raises(ValueError, match=message) as err:
        DiffusersScheduler(**kw)
    assert "\n" not in str(err.value)


def test_bad_steps_and_timesteps_are_named():
    s = DiffusersScheduler(sampler="ddim")
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 1000\]; got 0"):
        s.set_timesteps(0)
    s.set_timesteps(10)
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="timestep=5 is not one of this scheduler's timesteps"):
        s.step(x, 5, x)


# --------------------------------------------------------------------------- the rest of the interface

def test_the_interface_pipelines_read():
    s = DiffusersScheduler(sampler="dpmpp-2m")
    assert (s.order, s.init_noise_sigma, len(s)) == (1, 1.0, T)
    assert s.timesteps.tolist() == list(range(T - 1, -1, -1))  # the full chain before set_timesteps
    s.set_timesteps(4, device="cpu")
    assert s.timesteps.dtype == torch.int64 and s.timesteps.tolist() == [999, 749, 500, 250]  # DPM's linspace
    x = torch.randn(SHAPE, generator=_gen())
    assert s.scale_model_input(x, s.timesteps[0]) is x
    prev, x0 = s.step(x, s.timesteps[0], x, return_dict=False)
    assert prev.shape == x0.shape == x.shape


def test_set_timesteps_resets_the_multistep_state():
    s = DiffusersScheduler(sampler="dpmpp-2m", clip_sample=False)
    x, runs = _dummy_sample(), []
    for _ in range(2):
        s.set_timesteps(6)
        runs.append(_loop(s, s.timesteps[:3], x))
    assert torch.equal(runs[0], runs[1])
    s.set_timesteps(6)
    assert s._x0_prev is None


def test_add_noise_is_diffusers_add_noise():
    theirs, ours = DDPMScheduler(), DiffusersScheduler()
    x0, noise = torch.randn(SHAPE, generator=_gen(1)), torch.randn(SHAPE, generator=_gen(2))
    for t in (torch.tensor([0, 999]), torch.tensor([500]), 10):
        want = theirs.add_noise(x0, noise, torch.as_tensor(t).reshape(-1))
        torch.testing.assert_close(ours.add_noise(x0, noise, t), want, rtol=0,
                                   atol=math.sqrt(T) * EPS32 * want.abs().max().item())


def test_importing_the_backend_does_not_import_diffusers(tmp_path):
    code = "import sys, ddpm_core.backends.torch; assert 'diffusers' not in sys.modules, 'diffusers imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)  # not the checkout's ddpm_core/


def test_without_diffusers_the_error_names_the_extra(monkeypatch):
    import ddpm_core.backends.torch as backend

    for name in [m for m in sys.modules if m == "diffusers" or m.startswith("diffusers.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "ddpm_core.backends.torch.diffusers_scheduler")
    with pytest.raises(ImportError, match=r'pip install "ddpm-core\[diffusers\]"') as err:
        backend.DiffusersScheduler  # noqa: B018
    assert "\n" not in str(err.value)
