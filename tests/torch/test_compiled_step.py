"""The compiled training step trains the eager step's weights.

With ``compile`` the PyTorch trainer runs two compiled graphs per step: the model's forward
and backward, and the update (gradient clipping, fused Adam, the EMA as one
``torch._foreach_lerp_``), whose learning rate is a device tensor so that the warm-up does
not recompile it. On CUDA the backend is inductor; here ``aot_eager`` traces the same graphs
on the CPU (no code generation, so the weights must agree to float32 rounding of a
re-ordered graph), and the counters prove that each graph compiles once for the run.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.backends.torch import api, checkpoint  # noqa: E402
from ddpm_core.backends.torch.training import TorchTrainer  # noqa: E402

STEPS = 4


def _train(tmp_path, name: str, compile: bool) -> dict[str, torch.Tensor]:
    out = tmp_path / name
    api.train(TrainOptions(preset="tiny", out=str(out), steps=STEPS, log_every=2, ckpt_every=0,
                           progress=False, sample_n=4, compile=compile, warmup=3, grad_clip=1.0,
                           dropout=0.0))
    return {**checkpoint.load_weights(out / "model.safetensors"),
            **{f"ema/{k}": v for k, v in checkpoint.load_weights(out / "ema.safetensors").items()}}


def test_compiled_step_gives_the_eager_weights(tmp_path, monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setattr(TorchTrainer, "compile_on_cpu", True)
    monkeypatch.setattr(TorchTrainer, "compile_backend", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    eager = _train(tmp_path, "eager", False)
    compiled = _train(tmp_path, "compiled", True)
    frames = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert frames >= 2  # forward+backward and the update were both captured
    assert not counters["recompiles"], dict(counters["recompiles"])  # the lr warm-up reuses them
    assert eager.keys() == compiled.keys()
    for name in eager:  # float32: a few ulps of the largest weights after 4 Adam steps
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-6, msg=name)
