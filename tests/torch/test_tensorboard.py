"""``ddpm train --tensorboard``: the event files read back and checked against log.csv.

The events are read with a small reader of the TFRecord framing and tensorboardX's own
protobufs, so the tests need only tensorboardX; :func:`read_events` applies TensorBoard's
rule for a restarted writer (a ``SessionLog.START`` at step S hides the earlier events at
steps >= S), which is what ``purge_step`` relies on.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from ddpm_core.app import cli  # noqa: E402
from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.run.rundir import read_run_json  # noqa: E402
from ddpm_core.app.training import trainer  # noqa: E402
from ddpm_core.backends.torch import api  # noqa: E402
from ddpm_core.backends.torch.training import TorchTrainer  # noqa: E402

COLUMNS = ("loss", "grad_norm", "lr", "images_per_s")


@pytest.fixture
def tbx():
    return pytest.importorskip("tensorboardX")


def options(tmp_path, **kw):
    base = dict(preset="tiny", out=str(tmp_path / "run"), steps=6, log_every=2, ckpt_every=0,
                progress=False, sample_n=4, tensorboard=True)
    return TrainOptions(**{**base, **kw})


def _records(path):
    """The payloads of a TFRecord file: u64 length, u32 CRC, data, u32 CRC."""
    data, pos = path.read_bytes(), 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        yield data[pos + 12:pos + 12 + n]
        pos += 12 + n + 4


def read_events(logdir, *, purge=True):
    """``{tag: [(step, value), ...]}`` of every event file in ``logdir`` (file-name order);
    a scalar's value is a float, an image's its decoded uint8 array."""
    from PIL import Image
    from tensorboardX.proto import event_pb2

    out: dict[str, list] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for payload in _records(path):
            event = event_pb2.Event.FromString(payload)
            if purge and event.session_log.status == event_pb2.SessionLog.START:
                out = {tag: [p for p in points if p[0] < event.step] for tag, points in out.items()}
            for v in event.summary.value:
                value = (np.asarray(Image.open(io.BytesIO(v.image.encoded_image_string)))
                         if v.HasField("image") else v.simple_value)
                out.setdefault(v.tag, []).append((event.step, value))
    return out


def _log(run):
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _check_against_log(events, run):
    rows = _log(run)
    for column in COLUMNS:
        points = events[f"train/{column}"]
        assert [s for s, _ in points] == [int(r["step"]) for r in rows], column
        np.testing.assert_allclose([v for _, v in points], [float(r[column]) for r in rows],
                                   rtol=6e-6, err_msg=column)  # the CSV keeps 6 digits


def test_events_hold_the_logged_curves_and_the_sample_grids(tmp_path, tbx):
    from PIL import Image

    api.train(options(tmp_path, sample_every=3))
    run = tmp_path / "run"
    events = read_events(run / "tensorboard")
    assert set(events) == {f"train/{c}" for c in COLUMNS} | {"samples"}
    _check_against_log(events, run)
    assert [int(r["step"]) for r in _log(run)] == [2, 3, 4, 6]  # a grid's step logs too
    assert [s for s, _ in events["samples"]] == [3, 6]
    for step, image in events["samples"]:
        saved = np.asarray(Image.open(run / "samples" / f"step-{step:06d}.png"))
        np.testing.assert_array_equal(image[..., 0], saved)  # grey, stored as RGB


@pytest.mark.parametrize("loss", ["hybrid", "vlb"])
def test_a_run_trained_with_the_bound_draws_its_loss_parts(tmp_path, tbx, monkeypatch, loss):
    from loss_parts import check_loss_parts

    from ddpm_core.app.training.logs import TERM_FIELDS

    opts = dict(loss=loss, variance="learned_range", log_every=1, ckpt_every=2)
    _train_interrupted_at(4, monkeypatch, options(tmp_path, **opts))  # logged 1..4, saved at 2
    api.train(options(tmp_path, steps=5, resume=True, **opts))
    run = tmp_path / "run"
    check_loss_parts(run, loss)  # resume kept the header; each loss is made of its parts
    events = read_events(run / "tensorboard")
    assert set(events) == {f"train/{c}" for c in (*COLUMNS, *TERM_FIELDS)} | {"samples"}
    for column in TERM_FIELDS:  # the same rows as log.csv, no duplicate of steps 3, 4
        assert [s for s, _ in events[f"train/{column}"]] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([v for _, v in events[f"train/{column}"]],
                                   [float(r[column]) for r in _log(run)], rtol=6e-6)


def _train_interrupted_at(stop: int, monkeypatch, opts) -> None:
    """Train with ``opts`` until step ``stop`` raises KeyboardInterrupt (after it is logged)."""
    step_once = trainer._Loop._train_step

    def interrupted(self, step):
        if step == stop:
            raise KeyboardInterrupt
        return step_once(self, step)

    monkeypatch.setattr(trainer._Loop, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.train(opts)
    monkeypatch.setattr(trainer._Loop, "_train_step", step_once)


def test_a_resumed_run_continues_the_curves_without_duplicate_steps(tmp_path, tbx, monkeypatch):
    run = tmp_path / "run"
    _train_interrupted_at(5, monkeypatch, options(tmp_path, log_every=1, ckpt_every=3))
    # step 5 is logged; the checkpoint holds step 3
    assert read_run_json(run)["step"] == 3
    assert [s for s, _ in read_events(run / "tensorboard")["train/loss"]] == [1, 2, 3, 4, 5]

    api.train(options(tmp_path, steps=8, log_every=1, resume=True, tensorboard=None))  # kept
    events = read_events(run / "tensorboard")
    _check_against_log(events, run)
    assert [s for s, _ in events["train/loss"]] == list(range(1, 9))
    raw = [s for s, _ in read_events(run / "tensorboard", purge=False)["train/loss"]]
    assert raw == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]  # steps 4, 5 of the interrupted session: purged

    files = sorted((run / "tensorboard").iterdir())
    api.train(options(tmp_path, steps=9, resume=True, tensorboard=False))
    assert sorted((run / "tensorboard").iterdir()) == files  # --no-tensorboard on resume
    assert read_run_json(run)["options"]["tensorboard"] is False


def test_a_run_restarted_before_its_first_checkpoint_starts_new_curves(tmp_path, tbx,
                                                                       monkeypatch):
    _train_interrupted_at(2, monkeypatch, options(tmp_path, log_every=1, seed=1))
    api.train(options(tmp_path, steps=3, log_every=1))  # the folder holds tensorboard/: allowed
    events = read_events(tmp_path / "run" / "tensorboard")
    _check_against_log(events, tmp_path / "run")  # the first session's steps 1, 2 are purged
    assert len(read_events(tmp_path / "run" / "tensorboard", purge=False)["train/loss"]) == 5


def test_only_the_main_process_writes_events(tmp_path, tbx):
    def not_main(*args):
        backend = TorchTrainer(*args)
        backend.main = False
        return backend

    trainer.train(options(tmp_path, steps=2, log_every=1), not_main)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_the_classifier_writes_the_same_curves(tmp_path, tbx):
    from ddpm_core.backends.torch.classifier_training import train_classifier

    train_classifier(options(tmp_path, data="digits", steps=2, log_every=1, sample_n=None))
    events = read_events(tmp_path / "run" / "tensorboard")
    assert set(events) == {f"train/{c}" for c in COLUMNS}  # no sample grids
    _check_against_log(events, tmp_path / "run")


def test_a_missing_tensorboardx_is_a_one_line_error_naming_the_extra(tmp_path, capsys,
                                                                     monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
    argv = ["train", "--preset", "tiny", "--out", str(run), "--steps", "2", "--quiet"]
    assert cli.main([*argv, "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "ddpm-core[tensorboard]"' in err
    assert not run.exists()
    # a resumed run keeps writing events: the loop refuses before it writes anything
    assert cli.main([*argv, "--sample-n", "2"]) == 0
    info = read_run_json(run)
    info["options"]["tensorboard"] = True  # as if trained with --tensorboard
    (run / "run.json").write_text(json.dumps(info))
    log = (run / "log.csv").read_bytes()
    capsys.readouterr()
    assert cli.main(["train", "--preset", "tiny", "--out", str(run), "--steps", "3",
                     "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ddpm-core[tensorboard]" in err
    assert (run / "log.csv").read_bytes() == log and read_run_json(run)["step"] == 2
