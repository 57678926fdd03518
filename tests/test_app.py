"""The application layer (ddpm_core.app): options, run.json, atomic files, CSV log, determinism,
images (NumPy only), and the ddpm_core.runs compatibility names."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ddpm_testing import load_benchmark

from ddpm_core import runs
from ddpm_core.app.run import atomic, images, options, rundir
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.training import logs, seeding

# --------------------------------------------------------------------------- options

@pytest.mark.parametrize(("field", "value", "words"), [
    ("loss", "l2", "loss must be one of 'simple', 'vlb', 'hybrid'"),
    ("prediction", "noise", "prediction must be one of"),
    ("variance", "big", "variance must be one of"),
    ("timestep_sampler", "importance", "timestep_sampler must be one of"),
    ("backend", "tf", "backend must be one of 'torch', 'jax'"),
    ("steps", 0, "steps must be an integer >= 1"),
    ("batch_size", 2.5, "batch_size must be an integer >= 1"),
    ("lr", -1e-3, "lr must be a number in (0.0, 1.0]"),
    ("lr", float("nan"), "lr must be a number"),
    ("ema_decay", 1.0, "ema_decay must be a number in [0.0, 1.0)"),
    ("grad_clip", 0.0, "grad_clip must be a number in (0.0, inf)"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("log_every", -5, "log_every must be an integer >= 0"),
    ("device", "tpu9", "device must be one of"),
    ("schedule", "exp", "schedule must be one of 'linear'"),
    ("weighting", "snr", "weighting must be one of 'none', 'min_snr'"),
    ("min_snr_gamma", 0.0, "min_snr_gamma must be a number in (0.0, inf)"),
    ("ch", 0, "ch must be an integer >= 1"),
    ("num_res_blocks", 1.5, "num_res_blocks must be an integer >= 1"),
])
def test_options_name_the_bad_field(field, value, words):
    with pytest.raises(ValueError, match=None) as info:
        TrainOptions(preset="tiny", out="x", **{field: value})
    assert words in str(info.value)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_options_learned_variance_needs_a_loss_that_trains_it():
    with pytest.raises(ValueError, match="variance='learned' is only trained by"):
        TrainOptions(preset="tiny", out="x", loss="simple", variance="learned")
    with pytest.raises(ValueError, match="loss='hybrid' needs variance"):
        TrainOptions(preset="tiny", out="x", loss="hybrid", variance="fixed_large")
    TrainOptions(preset="tiny", out="x", loss="hybrid", variance="learned_range")


def test_options_are_frozen_and_replace_validates():
    o = TrainOptions(preset="tiny", out="x")
    with pytest.raises(AttributeError):
        o.steps = 3  # type: ignore[misc]
    assert o.replace(steps=3).steps == 3
    with pytest.raises(ValueError, match="steps"):
        o.replace(steps=-3)
    assert json.loads(json.dumps(o.to_dict()))["preset"] == "tiny"


def test_resolve_options_applies_overrides_to_the_preset():
    o = TrainOptions(preset="tiny", out="x", steps=7, lr=3e-4, batch_size=4, warmup=0,
                     loss="hybrid", variance="learned_range", dropout=0.2)
    preset, unet, train = options.resolve_options(o)
    assert (train.num_steps, train.lr, train.batch_size, train.warmup_steps) == (7, 3e-4, 4, 0)
    assert unet.out_channels == 2 * preset.channels and unet.dropout == 0.2
    assert preset.train.num_steps != 7  # the preset itself is untouched


def test_resolve_options_applies_schedule_weighting_and_width():
    o = TrainOptions(preset="tiny", out="x", schedule="cosine", weighting="min_snr",
                     min_snr_gamma=2.0, ch=32, num_res_blocks=2)
    preset, unet, train = options.resolve_options(o)
    assert (train.schedule, train.weighting, train.min_snr_gamma) == ("cosine", "min_snr", 2.0)
    assert (unet.ch, unet.num_res_blocks, unet.ch_mult) == (32, 2, preset.unet.ch_mult)
    with pytest.raises(ValueError, match="ch=20 does not fit preset 'tiny': num_groups must "
                                         "divide ch"):
        options.resolve_options(TrainOptions(preset="tiny", out="x", ch=20))
    with pytest.raises(ValueError, match="weighting='min_snr' weights L_simple; it needs "
                                         "loss='simple', got loss='vlb'"):
        options.resolve_options(o.replace(loss="vlb"))


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_host_batch_multiplies_the_min_snr_weights_of_its_timesteps(prediction):
    from ddpm_core.app.training import batches

    o = TrainOptions(preset="tiny", out="x", batch_size=32, weighting="min_snr",
                     prediction=prediction)
    train = options.resolve_options(o)[2]
    schedule = rundir.make_schedule(rundir.schedule_dict(train))
    table = batches.loss_weight_table(schedule, train)
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)  # float64 reference
    want = {"eps": np.minimum(snr, 5) / snr, "v": np.minimum(snr, 5) / (snr + 1),
            "x0": np.minimum(snr, 5)}[prediction]
    np.testing.assert_allclose(table, want, rtol=1e-12)
    data = np.zeros((40, 8, 8, 1), np.uint8)
    plain = batches.host_batch(data, 1, 2, train, None)
    weighted = batches.host_batch(data, 1, 2, train, None, loss_weights=table)
    np.testing.assert_array_equal(weighted.t, plain.t)
    np.testing.assert_array_equal(plain.weights, np.ones(32, np.float32))
    np.testing.assert_array_equal(weighted.weights, table[plain.t].astype(np.float32))
    assert batches.loss_weight_table(schedule, options.resolve_options(
        TrainOptions(preset="tiny", out="x"))[2]) is None  # the paper's L_simple: no weights


# --------------------------------------------------------------------------- files

def test_warmup_lr_is_linear_from_the_first_update_then_constant():
    from ddpm_core.app.training.protocol import warmup_lr

    assert warmup_lr(1e-3, 4, 0) == pytest.approx(2.5e-4, rel=1e-15)  # lr / warmup, not 0
    assert [warmup_lr(1.0, 4, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lr(1e-3, 0, 0) == 1e-3
    steps = np.arange(6, dtype=np.float32)  # the traced form: an array step and its minimum
    np.testing.assert_array_equal(warmup_lr(1.0, 4, steps, np.minimum),
                                  np.float32([0.25, 0.5, 0.75, 1.0, 1.0, 1.0]))


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic.atomic_write_bytes(path, b"one")
    atomic.atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic.atomic_write_json(path, {"a": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_json(path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def _write(run_dir, **kw):
    from ddpm_core.models import get_preset

    preset = get_preset("tiny")
    args = dict(backend="torch", preset="tiny", unet=preset.unet, train=preset.train,
                schedule=rundir.schedule_dict(preset.train), prediction=preset.train.prediction,
                variance=preset.train.variance, data="digits", step=3)
    args.update(kw)
    return rundir.write_run_json(run_dir, **args)


def test_run_json_round_trip(tmp_path):
    written = _write(tmp_path, step=np.int64(5))
    read = rundir.read_run_json(tmp_path)
    assert read == written and read["format"] == 2 and read["step"] == 5
    assert read["unet"]["ch_mult"] == [1, 2]


def test_run_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        rundir.read_run_json(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run\.json: not a readable"):
        rundir.read_run_json(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="'format' is 99; allowed: one of 1, 2"):
        rundir.read_run_json(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format": 1, "backend": "torch"}))
    with pytest.raises(ValueError, match="field 'preset' is missing"):
        rundir.read_run_json(tmp_path)
    with pytest.raises(ValueError, match="prediction must be one of"):
        _write(tmp_path, prediction="noise")


def test_schedule_dict_round_trips_through_make_schedule():
    train = options.resolve_options(TrainOptions(preset="tiny", out="x"))[2]
    sched = rundir.make_schedule(rundir.schedule_dict(train))
    assert sched.num_timesteps == train.num_timesteps
    np.testing.assert_allclose(sched.betas[[0, -1]], [train.beta_start, train.beta_end])
    with pytest.raises(ValueError, match="schedule name must be one of"):
        rundir.make_schedule({"name": "exp", "num_timesteps": 10})


# --------------------------------------------------------------------------- CSV log

def test_csv_log_resume_drops_rows_after_the_checkpoint(tmp_path):
    log = logs.CsvLog(tmp_path / "log.csv", ["step", "loss"])
    for s in (10, 20, 30):
        log.append({"step": s, "loss": 1.0 / s})
    resumed = logs.CsvLog(tmp_path / "log.csv", ["step", "loss"], resume_step=20)
    assert [r["step"] for r in resumed.read()] == ["10", "20"]
    fresh = logs.CsvLog(tmp_path / "log.csv", ["step", "loss"])
    assert fresh.read() == []


def test_train_seconds_sums_the_logged_windows(tmp_path):
    assert rundir.train_seconds(tmp_path) is None  # no log
    log = logs.CsvLog(tmp_path / "log.csv", ["step", "seconds"])
    for step, seconds in ((10, 1.5), (20, 2.25), (30, 0.25)):
        log.append({"step": step, "seconds": seconds})
    assert rundir.train_seconds(tmp_path) == 4.0
    logs.CsvLog(tmp_path / "log.csv", ["step", "loss"]).append({"step": 1, "loss": 0.5})
    assert rundir.train_seconds(tmp_path) is None  # a log without the column


# --------------------------------------------------------------------------- determinism

def test_step_seed_depends_only_on_its_arguments():
    assert seeding.step_seed(0, 5) == seeding.step_seed(0, 5)
    seeds = {seeding.step_seed(s, k, j) for s in range(3) for k in range(3) for j in range(3)}
    assert len(seeds) == 27
    assert all(0 <= s < 2**63 for s in seeds)


def test_batch_indices_visit_every_example_once_per_epoch():
    n, b = 10, 4
    seq = np.concatenate([seeding.batch_indices(3, s, n, b) for s in range(5)])  # 20 = 2 epochs
    assert sorted(seq[:10]) == list(range(10)) and sorted(seq[10:]) == list(range(10))
    assert not np.array_equal(seq[:10], seq[10:])  # a new permutation each epoch
    assert not np.array_equal(seq, np.concatenate(
        [seeding.batch_indices(4, s, n, b) for s in range(5)]))  # depends on the seed


def test_batch_indices_of_ranks_tile_the_global_batch():
    for step in range(4):
        whole = seeding.batch_indices(1, step, 7, 6)
        parts = [seeding.batch_indices(1, step, 7, 6, rank=r, world_size=3) for r in range(3)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
        flips = [seeding.flip_mask(1, step, 6, rank=r, world_size=3) for r in range(3)]
        np.testing.assert_array_equal(np.concatenate(flips), seeding.flip_mask(1, step, 6))
    with pytest.raises(ValueError, match="divisible by world_size"):
        seeding.batch_indices(0, 0, 10, 5, world_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        seeding.batch_indices(0, 0, 10, 4, rank=2, world_size=2)


# --------------------------------------------------------------------------- images

def test_to_uint8_inverts_the_model_scaling():
    u = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(images.to_uint8(u / 127.5 - 1.0), u)
    np.testing.assert_array_equal(images.to_uint8(np.array([-3.0, 3.0])), [0, 255])


def test_image_grid_places_every_image():
    imgs = np.stack([np.full((3, 4, 1), k, np.uint8) for k in range(5)])
    grid = images.image_grid(imgs, ncols=2, pad=1, pad_value=255)
    assert grid.shape == (3 * 4 + 1, 2 * 5 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1 + 4, 1 + 5, 0] == 3 and grid[1 + 8, 1, 0] == 4
    assert grid[1 + 8, 1 + 5, 0] == 255  # empty cell
    with pytest.raises(ValueError, match="uint8 array of shape"):
        images.image_grid(imgs.astype(np.float32))


def test_save_png_round_trips(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    images.save_png(tmp_path / "a.png", img)
    np.testing.assert_array_equal(np.asarray(pil.open(tmp_path / "a.png")), img)
    images.save_png(tmp_path / "g.png", img[:, :, :1])
    assert np.asarray(pil.open(tmp_path / "g.png")).shape == (5, 7)
    with pytest.raises(ValueError, match="image must be uint8"):
        images.save_png(tmp_path / "b.png", img[:, :, :2])


def test_app_imports_no_framework(tmp_path):
    code = ("import sys, ddpm_core.runs, ddpm_core.data, ddpm_core.app.cli, ddpm_core.app.training.trainer,"
            " ddpm_core.app.evaluation.bound, ddpm_core.app.evaluation.fid, ddpm_core.app.evaluation.classify,"
            " ddpm_core.app.sampling.driver, ddpm_core.app.run.splits;"
            "bad = [m for m in ('torch', 'jax', 'flax', 'PIL', 'sklearn', 'mlxtend')"
            " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runs_keeps_the_documented_names():
    from ddpm_core.app.sampling import chains
    from ddpm_core.app.training import trainer

    assert runs.TrainOptions is options.TrainOptions and runs.RunPaths is rundir.RunPaths
    assert runs.chain_schedule is chains.chain_schedule and runs.step_seed is seeding.step_seed
    assert set(runs.__all__) <= set(dir(runs))
    assert trainer.host_batch.__module__ == "ddpm_core.app.training.batches"


def test_classifier_run_round_trip_and_fit_checks(tmp_path):
    from ddpm_core.app.run.classifier_run import check_classifier_fits, read_classifier_run, write_classifier_run
    from ddpm_core.models import classifier_config, get_preset

    config = classifier_config("tiny", 10)
    entry = {"name": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    write_classifier_run(tmp_path, backend="torch", config=config, schedule=entry,
                         class_names=[str(k) for k in range(10)], data="digits", step=3)
    got, info = read_classifier_run(tmp_path)
    assert got == config and info["step"] == 3 and info["classes"]["num_classes"] == 10
    unet = get_preset("tiny").unet
    check_classifier_fits(got, info, unet, entry, None)
    with pytest.raises(ValueError, match="the classifier takes image_size=8 but the model's image_size is 28"):
        check_classifier_fits(got, info, get_preset("mnist").unet, entry, None)
    with pytest.raises(ValueError, match="trained on a 1000-step chain but the model's chain has 100"):
        check_classifier_fits(got, info, unet, {**entry, "num_timesteps": 100}, None)
    with pytest.raises(ValueError, match="10 classes but the model has 3"):
        check_classifier_fits(got, info, unet, entry, 3)
    rundir.write_run_json(tmp_path / "diffusion", backend="torch", preset="tiny", unet=unet,
                          train=get_preset("tiny").train, schedule=entry, prediction="eps",
                          variance="fixed_small", data="digits", step=0)
    with pytest.raises(ValueError, match="not a classifier run"):
        read_classifier_run(tmp_path / "diffusion")
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        read_classifier_run(tmp_path / "none")
    bad = json.loads((tmp_path / "run.json").read_text())
    bad["schedule"]["num_timesteps"] = 0
    (tmp_path / "run.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="schedule.num_timesteps"):
        read_classifier_run(tmp_path)


# --------------------------------------------------------------------------- class labels

def test_label_drop_mask_rate_is_p_and_depends_only_on_seed_and_step():
    B, p = 20000, 0.1
    mask = seeding.label_drop_mask(5, 7, B, p)
    assert mask.dtype == bool and mask.shape == (B,)
    # a binomial rate: 5 standard deviations sqrt(p (1 - p) / B) = 0.0106
    assert abs(mask.mean() - p) < 5 * np.sqrt(p * (1 - p) / B), mask.mean()
    np.testing.assert_array_equal(mask, seeding.label_drop_mask(5, 7, B, p))
    assert not np.array_equal(mask, seeding.label_drop_mask(5, 8, B, p))
    assert not np.array_equal(mask, seeding.label_drop_mask(6, 7, B, p))
    # independent of the flip stream, and the ranks tile the global mask
    assert not np.array_equal(seeding.label_drop_mask(5, 7, B, 0.5), seeding.flip_mask(5, 7, B))
    parts = [seeding.label_drop_mask(5, 7, 12, p, rank=r, world_size=3) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), seeding.label_drop_mask(5, 7, 12, p))
    assert not seeding.label_drop_mask(5, 7, 100, 0.0).any()
    with pytest.raises(ValueError, match=r"label dropout p must be in \[0, 1\); got 1.0"):
        seeding.label_drop_mask(5, 7, 10, 1.0)


def test_host_batch_labels_are_the_images_classes_with_dropped_ones_null():
    from ddpm_core.app.training import trainer

    train = options.resolve_options(TrainOptions(preset="tiny", out="x", batch_size=64))[2]
    data = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1) * np.ones((1, 8, 8, 1), np.uint8)
    labels = np.arange(40, dtype=np.int64) % 10
    plain = trainer.host_batch(data, 2, 3, train, None)
    assert plain.labels is None
    batch = trainer.host_batch(data, 2, 3, train, None, labels=labels, num_classes=10,
                               label_dropout=0.25)
    np.testing.assert_array_equal(batch.images, plain.images)  # labels change nothing else
    np.testing.assert_array_equal(batch.t, plain.t)
    drop = seeding.label_drop_mask(2, 3, 64, 0.25)
    assert drop.any() and not drop.all()
    own = batch.images[:, 0, 0, 0].astype(np.int64) % 10  # image i holds its index
    np.testing.assert_array_equal(batch.labels, np.where(drop, 10, own))
    assert batch.labels.dtype == np.int64
    half = trainer.host_batch(data, 2, 3, train, None, labels=labels, num_classes=10,
                              label_dropout=0.25, rank=1, world_size=2)
    np.testing.assert_array_equal(half.labels, batch.labels[32:])


def test_class_conditional_options():
    o = TrainOptions(preset="tiny", out="x", class_conditional=True)
    assert options.with_defaults(o).label_dropout == options.DEFAULT_LABEL_DROPOUT == 0.1
    assert options.with_defaults(TrainOptions(preset="tiny", out="x")).label_dropout is None
    assert options.with_defaults(o.replace(label_dropout=0.0)).label_dropout == 0.0
    with pytest.raises(ValueError, match="label_dropout is for class-conditional runs"):
        TrainOptions(preset="tiny", out="x", label_dropout=0.1)
    with pytest.raises(ValueError, match=r"label_dropout must be a number in \[0.0, 1.0\)"):
        TrainOptions(preset="tiny", out="x", class_conditional=True, label_dropout=1.0)
    assert options.resolve_options(o)[1].num_classes == 0  # K unknown: validation only
    assert options.resolve_options(o, 10)[1].num_classes == 10
    assert options.resolve_options(TrainOptions(preset="tiny", out="x"), 10)[1].num_classes == 0


def test_run_json_classes_must_agree_with_the_unet(tmp_path):
    from ddpm_core.models import get_preset

    pre = get_preset("tiny")
    unet = {**rundir.plain_json(pre.unet), "num_classes": 3}
    kw = dict(backend="torch", preset="tiny", unet=unet, train=pre.train,
              schedule=rundir.schedule_dict(pre.train), prediction="eps",
              variance="fixed_small", data="x.npz", step=0)
    rundir.write_run_json(tmp_path, **kw, classes={"num_classes": 3, "names": ["a", "b", "c"]})
    assert rundir.read_run_json(tmp_path)["classes"]["names"] == ["a", "b", "c"]
    rundir.write_run_json(tmp_path, **kw, classes={"num_classes": 2, "names": ["a", "b"]})
    with pytest.raises(ValueError, match="'classes.num_classes' is 2 but 'unet.num_classes' is 3"):
        rundir.read_run_json(tmp_path)
    rundir.write_run_json(tmp_path, **kw)
    with pytest.raises(ValueError, match="field 'classes' is None"):
        rundir.read_run_json(tmp_path)
    rundir.write_run_json(tmp_path, **kw, classes={"num_classes": 3, "names": ["a", "a", "c"]})
    with pytest.raises(ValueError, match="K distinct strings"):
        rundir.read_run_json(tmp_path)


def test_resume_refuses_another_label_dropout():
    from ddpm_core.app.run.resume import resume_options
    from ddpm_core.models import get_preset

    pre = get_preset("tiny")
    info = {"preset": "tiny", "backend": "torch", "data": "digits", "step": 4,
            "unet": {**rundir.plain_json(pre.unet), "num_classes": 10},
            "train": rundir.plain_json(pre.train), "options": {"label_dropout": 0.2}}
    o = TrainOptions(preset="tiny", out="x", resume=True)
    done = resume_options(o, info)
    assert done.class_conditional is True and done.label_dropout == 0.2
    with pytest.raises(ValueError, match="--label-dropout cannot change on --resume: the run "
                                         "has 0.2, got 0.3"):
        resume_options(o.replace(label_dropout=0.3), info)
    with pytest.raises(ValueError, match="--class-conditional cannot change"):
        resume_options(o.replace(class_conditional=False), info)


def test_chain_schedule_keeps_each_samplers_steps_and_a_given_spacing():
    from ddpm_core.app.sampling.chains import chain_schedule
    from ddpm_core.respacing import space_timesteps
    from ddpm_core.schedules import Schedule

    s = Schedule.linear(100)
    assert chain_schedule(s, "ddpm", None) is s and chain_schedule(s, "ddpm", 100, "trailing") is s
    np.testing.assert_array_equal(chain_schedule(s, "ddpm", 10).timesteps, space_timesteps(100, "10"))
    np.testing.assert_array_equal(chain_schedule(s, "ddim", None).timesteps, space_timesteps(100, "ddim50"))
    for sampler in ("ddpm", "ddim"):
        for spacing in ("linspace", "leading", "trailing"):
            got = chain_schedule(s, sampler, 7, spacing)
            np.testing.assert_array_equal(got.timesteps, space_timesteps(100, 7, timestep_spacing=spacing))
            # abar re-derived through the respaced betas: equal to float64 rounding
            np.testing.assert_allclose(got.alphas_cumprod, s.alphas_cumprod[got.timesteps],
                                       rtol=8 * np.finfo(float).eps)
    allowed = "spacing must be one of 'linspace', 'leading', 'trailing'; got spacing='karras'"
    with pytest.raises(ValueError, match=allowed):
        chain_schedule(s, "ddim", 7, "karras")
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\]; got 0"):
        chain_schedule(s, "ddim", 0, "linspace")


def test_a_batch_without_images_carries_the_rows_and_flips_of_the_gathered_one():
    from ddpm_core.app.training import batches

    train = options.resolve_options(TrainOptions(preset="tiny", out="x", random_flip=True))[2]
    data = np.random.default_rng(0).integers(0, 256, (50, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(50, dtype=np.int64) % 10
    for step in range(4):
        full = batches.host_batch(data, 3, step, train, None, labels=labels, num_classes=10)
        bare = batches.host_batch(data, 3, step, train, None, labels=labels, num_classes=10, gather=False)
        assert bare.images is None and bare.flips is not None
        rows = data[bare.indices]
        want = np.where(bare.flips[:, None, None, None], rows[:, :, ::-1], rows)
        np.testing.assert_array_equal(full.images, want)
        for name in ("t", "weights", "t_global", "labels", "indices", "flips"):
            np.testing.assert_array_equal(getattr(full, name), getattr(bare, name))
    assert batches.host_batch(data, 3, 0, dataclasses.replace(train, random_flip=False), None).flips is None


def test_bench_train_times_the_host_work_of_both_data_paths():
    bench = load_benchmark("bench_train")
    ms = bench.host_work_ms("tiny", batch=16, n=100, reps=3)
    assert set(ms) == {"gathered", "held", "floor"}
    assert all(np.isfinite(v) and v > 0 for v in ms.values())
