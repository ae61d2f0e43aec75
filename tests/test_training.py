"""core.training: config, real short trainings (every architecture, optimizer and schedule), checkpoints,
resume, cancel, early stopping, freezing, oversampling, broken images, and the default recipe on the digits.

Trainings here are real (no mocks) but tiny: 3 classes x 10 images of 16 px, 32 px inputs, one or a few
epochs. Nothing asserts on wall time.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core import training as T
from core.checkpoints import REQUIRED_KEYS, load_checkpoint, load_for_inference
from core.errors import CoreError, DatasetError
from core.models import ARCHS, build_model, choose_image_size
from core.workspace import Workspace
from tests import imagefactory as f

COLORS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}
SLOW_ARCHS = {"resnet101", "resnet152"}  # each writes ~2 x 170-230 MB of checkpoints


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine a 2-thread OpenMP team waits on every layer's barrier for a
    descheduled thread (MobileNetV2 ran 10x slower, research/cpu-training.md section 3); tests need no speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """A workspace and a folder of 3 colour classes x 10 images (16 px), unsplit."""
    base = tmp_path_factory.mktemp("tiny")
    root = base / "colours"
    for label, color in COLORS.items():
        for i in range(10):
            f.write_rgb(root / label / f"{i}.png", size=(16, 16), color=color, seed=i)
    return Workspace.open(base / "ws"), root


def config_for(root: Path, **changes: object) -> T.TrainConfig:
    base = T.TrainConfig(dataset=str(root), epochs=1, batch_size=8, image_size=32, log_every=1)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def prepared(tiny: tuple[Workspace, Path]) -> T.PreparedData:
    ws, root = tiny
    return T.prepare(config_for(root), ws)


# --- config ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("arch", "resnet9", "arch 'resnet9' is not allowed; choose one of: auto, resnet18"),
        ("optimizer", "lbfgs", "optimizer 'lbfgs' is not allowed; choose one of: sgd, adam, adamw, adadelta, rmsprop"),
        ("schedule", "linear", "choose one of: onecycle, cosine, step, none"),
        ("augment", "mirror", "choose one of: auto, none, flip, crop, crop-flip, strong"),
        ("best_metric", "f1", "choose one of: val_acc, val_loss"),
        ("epochs", 0, "epochs 0: expected a number >= 1"),
        ("lr", -1.0, "lr -1.0: expected a number >= 0"),
        ("momentum", 1.5, "momentum 1.5: expected a number in [0, 1)"),
        ("val_fraction", 0.9, "val_fraction 0.9 and test_fraction 0.15"),
        ("milestones", [0], "milestones [0]: expected whole epoch numbers >= 1"),
    ],
)
def test_validate_names_the_bad_value_and_the_allowed_ones(name: str, value: object, message: str) -> None:
    with pytest.raises(T.ConfigError, match=re.escape(message)) as caught:
        replace(T.TrainConfig(dataset="x"), **{name: value}).validate()
    assert isinstance(caught.value, CoreError)


def test_config_round_trips_through_json() -> None:
    config = T.TrainConfig(dataset="sample:digits", milestones=[3, 6], schedule="step", oversample=True)
    again = T.TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_from_dict_refuses_unknown_options() -> None:
    with pytest.raises(T.ConfigError, match="unknown training options \\['colour'\\]"):
        T.TrainConfig.from_dict({"dataset": "x", "colour": "red"})


def test_every_field_has_help_text() -> None:
    helps = T.TrainConfig.help()
    assert set(helps) == set(T.TrainConfig().to_dict()) and all(len(h) > 10 for h in helps.values())


def test_auto_choices_follow_the_images() -> None:
    default = T.TrainConfig(dataset="x")
    digits = T.resolve_config(default, typical_side=8, grayscale=True)
    assert (digits.arch, digits.augment, digits.normalize, digits.lr) == ("lenet", "crop", "dataset", 0.1)
    assert digits.image_size == choose_image_size("lenet", 8)
    photos = T.resolve_config(default, typical_side=480, grayscale=False)
    assert (photos.arch, photos.image_size, photos.augment) == ("resnet18", 224, "crop-flip")
    tuned = T.resolve_config(replace(default, weights="imagenet", optimizer="adam"), typical_side=8, grayscale=False)
    assert (tuned.arch, tuned.normalize, tuned.lr) == ("resnet18", "imagenet", pytest.approx(1e-4))
    assert T.resolve_config(replace(default, arch="mobilenet_v2", image_size=40, lr=0.5), 8, True).image_size == 40


# --- learning-rate schedules -----------------------------------------------------------------------------------


def test_onecycle_rises_for_a_quarter_then_decays_to_zero() -> None:
    factor = T.lr_factor(T.TrainConfig(epochs=4, schedule="onecycle"), steps_per_epoch=25)
    values = [factor(s) for s in range(100)]
    assert values[0] < 0.05 and max(values) == pytest.approx(1.0, abs=0.01)
    assert int(np.argmax(values)) == 25 and values[-1] < 0.001


def test_step_schedule_with_warmup() -> None:
    config = T.TrainConfig(epochs=6, schedule="step", milestones=[2, 4], gamma=0.5, warmup_epochs=1)
    factor = T.lr_factor(config, steps_per_epoch=10)
    assert factor(0) < factor(5) < factor(10) == 1.0
    assert (factor(19), factor(20), factor(40)) == (1.0, 0.5, 0.25)


def test_cosine_and_none() -> None:
    cosine = T.lr_factor(T.TrainConfig(epochs=2, schedule="cosine"), steps_per_epoch=10)
    assert cosine(0) == 1.0 and cosine(10) == pytest.approx(0.5) and cosine(19) < 0.01
    assert T.lr_factor(T.TrainConfig(epochs=2, schedule="none"), steps_per_epoch=10)(15) == 1.0


# --- data preparation ------------------------------------------------------------------------------------------


def test_prepare_splits_decodes_and_reports(prepared: T.PreparedData) -> None:
    assert prepared.classes == ["blue", "green", "red"]
    assert prepared.counts() == {"train": 18, "val": 6, "test": 6}
    assert prepared.tensors.images.shape == (30, 3, 32, 32) and prepared.dropped.empty
    assert prepared.config.arch == "lenet" and prepared.config.augment == "crop-flip"  # colour images
    assert set(prepared.splits.columns) == {"path", "label", "split"}


def test_second_prepare_decodes_nothing(tiny: tuple[Workspace, Path], prepared: T.PreparedData) -> None:
    ws, root = tiny
    again = T.prepare(config_for(root), ws.cache)  # the cache folder alone names the workspace too
    assert again.tensors.n_decoded == 0
    assert torch.equal(again.tensors.images, prepared.tensors.images)


def test_a_broken_image_is_dropped_with_its_reason_and_training_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for label, color in COLORS.items():
        for i in range(4):
            f.write_rgb(root / label / f"{i}.png", size=(16, 16), color=color, seed=i)
    f.write_truncated_png(root / "red" / "broken.png", size=(32, 32))
    ws = Workspace.open(tmp_path / "ws")
    data = T.prepare(config_for(root), ws)
    assert data.dropped.set_index("path")["reason"].str.contains("truncated").to_dict() == {"red/broken.png": True}
    # A file named by a stored split that has gone since: dropped at decode time, with its reason.
    stored = pd.concat([data.splits, pd.DataFrame([{"path": "red/gone.png", "label": "red", "split": "train"}])])
    data = T.prepare(config_for(root), ws, splits=stored)
    assert data.dropped.set_index("path").loc["red/gone.png", "reason"] == "file not found"
    result = T.fit(config_for(root), data, checkpoint_dir=tmp_path / "ck")
    assert result.status == "completed" and "red/gone.png" in set(result.dropped["path"])


def test_prepare_refuses_a_single_class(tmp_path: Path) -> None:
    for i in range(4):
        f.write_rgb(tmp_path / "data" / "only" / f"{i}.png", size=(8, 8), seed=i)
    with pytest.raises(DatasetError, match="at least 2 classes"):
        T.prepare(config_for(tmp_path / "data"), Workspace.open(tmp_path / "ws"))


def test_epoch_seconds_counts_every_training_batch_and_a_cheaper_validation() -> None:
    assert T.epoch_seconds(0.3, n_train=130, n_val=64, batch=64) == pytest.approx(0.3 * 3 + 0.1)
    assert T.epoch_seconds(0.3, n_train=128, n_val=0, batch=64) == pytest.approx(0.6)


def test_estimate_epoch_seconds_runs_on_prepared_data_or_a_bare_manifest(prepared: T.PreparedData) -> None:
    # The value is a measured time (benchmarks judge those); here: both inputs give an estimate, and a
    # manifest-only estimate leaves the caller's random streams untouched.
    assert isinstance(T.estimate_epoch_seconds(prepared.config, prepared, steps=1), float)
    manifest = pd.DataFrame({"path": ["a.png"] * 20, "label": ["a", "b"] * 10, "split": [""] * 20,
                             "width": [16] * 20, "height": [16] * 20, "mode": ["RGB"] * 20})  # fmt: skip
    before = torch.random.get_rng_state()
    assert isinstance(T.estimate_epoch_seconds(T.TrainConfig(dataset="x"), manifest, steps=1), float)
    assert torch.equal(before, torch.random.get_rng_state())


# --- real trainings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ARCHS else a for a in ARCHS])
def test_every_architecture_trains(arch: str, prepared: T.PreparedData, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], arch=arch)
    result = T.fit(config, prepared, checkpoint_dir=tmp_path)
    assert result.status == "completed" and len(result.epochs) == 1
    assert math.isfinite(result.epochs[0]["train_loss"]) and 0 <= result.test["accuracy"] <= 1
    assert load_checkpoint(tmp_path / "best.pt")["arch"] == arch


@pytest.mark.parametrize("optimizer", T.OPTIMIZERS)
def test_every_optimizer_trains(optimizer: str, prepared: T.PreparedData, tmp_path: Path, tiny) -> None:
    result = T.fit(config_for(tiny[1], optimizer=optimizer, epochs=2), prepared, checkpoint_dir=tmp_path)
    assert result.status == "completed"
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in result.epochs)


@pytest.mark.parametrize("schedule", T.SCHEDULES)
def test_every_schedule_sets_the_rate_each_step(schedule: str, prepared: T.PreparedData, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], schedule=schedule, epochs=3, milestones=[1, 2], lr=0.05, warmup_epochs=0.5)
    rates: list[float] = []
    T.fit(config, prepared, checkpoint_dir=tmp_path,
          callbacks=T.TrainCallbacks(on_step=lambda s, e, m: rates.append(m["lr"])))  # fmt: skip
    factor = T.lr_factor(replace(prepared.config, **{k: getattr(config, k) for k in ("schedule", "epochs",
                         "milestones", "warmup_epochs")}), steps_per_epoch=3)  # fmt: skip
    assert rates == pytest.approx([0.05 * factor(s) for s in range(1, 10)])


def test_callbacks_report_start_steps_epochs_and_checkpoints(prepared: T.PreparedData, tmp_path: Path, tiny) -> None:
    seen: dict[str, list] = {"start": [], "step": [], "epoch": [], "checkpoint": []}
    callbacks = T.TrainCallbacks(
        on_start=lambda info: seen["start"].append(info),
        on_step=lambda step, epoch, m: seen["step"].append((step, epoch, sorted(m))),
        on_epoch=lambda epoch, m: seen["epoch"].append((epoch, sorted(m))),
        on_checkpoint=lambda path, kind: seen["checkpoint"].append((path.name, kind)),
    )
    T.fit(config_for(tiny[1], epochs=2, log_every=2), prepared, callbacks=callbacks, checkpoint_dir=tmp_path)
    info = seen["start"][0]
    assert (info["epochs"], info["steps_per_epoch"], info["total_steps"], info["n_train"]) == (2, 3, 6, 18)
    assert [s[:2] for s in seen["step"]] == [(2, 1), (4, 2), (6, 2)]
    assert seen["step"][0][2] == ["images_per_s", "lr", "train_acc", "train_loss"]
    assert [e[0] for e in seen["epoch"]] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"} <= set(seen["epoch"][0][1])
    assert ("last.pt", "last") in seen["checkpoint"] and ("best.pt", "best") in seen["checkpoint"]


def test_checkpoint_holds_the_contract_and_serves_inference(prepared: T.PreparedData, tmp_path: Path, tiny) -> None:
    result = T.fit(config_for(tiny[1], epochs=2), prepared, checkpoint_dir=tmp_path)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert set(REQUIRED_KEYS) | {"optimizer", "scheduler", "scaler", "rng", "metrics", "config", "epoch"} <= set(ck)
    assert (ck["epoch"], ck["step"], ck["classes"], ck["image_size"]) == (2, 6, prepared.classes, 32)
    assert ck["mean"] == pytest.approx(prepared.mean) and ck["config"] == result.config
    model = load_for_inference(tmp_path / "best.pt", "cpu")
    batch = T.D.Batches(prepared.tensors.images, prepared.labels, prepared.indices["test"], batch_size=8,
                        mean=ck["mean"], std=ck["std"])  # fmt: skip
    x, _ = next(iter(batch))
    probs = model.predict(x)
    assert np.argmax(probs.numpy(), 1).tolist() == result.test_predictions["predicted"].tolist()


def test_test_metrics_and_predictions_come_from_the_best_checkpoint(prepared, tmp_path: Path, tiny) -> None:
    result = T.fit(config_for(tiny[1], epochs=3, lr=0.05), prepared, checkpoint_dir=tmp_path)
    assert set(result.test) >= {"loss", "accuracy", "top5", "n", "epoch"} and result.test["n"] == 6
    assert result.test["epoch"] == result.best_epoch
    p = result.test_predictions
    assert p["probs"].shape == (6, 3) and np.allclose(p["probs"].sum(1), 1, atol=1e-5)
    assert len(p["paths"]) == 6 and p["classes"] == prepared.classes
    assert result.test["accuracy"] == pytest.approx((p["predicted"] == p["targets"]).mean())


def test_evaluate_an_empty_split_gives_nan(prepared: T.PreparedData) -> None:
    batches = T.D.Batches(prepared.tensors.images, prepared.labels, np.array([], dtype=np.int64), batch_size=4,
                          mean=[0.5] * 3, std=[0.5] * 3)  # fmt: skip
    out = T.evaluate(build_model("lenet", 3), batches)
    assert out["n"] == 0 and math.isnan(out["accuracy"])


# --- cancel and resume -----------------------------------------------------------------------------------------


def cancel_at(step: int) -> tuple[threading.Event, T.TrainCallbacks]:
    event = threading.Event()

    def on_step(s: int, epoch: int, metrics: dict) -> None:
        if s >= step:
            event.set()

    return event, T.TrainCallbacks(on_step=on_step)


def test_cancel_stops_at_the_next_step_with_a_loadable_checkpoint(prepared, tmp_path: Path, tiny) -> None:
    cancel, callbacks = cancel_at(2)
    result = T.fit(config_for(tiny[1], epochs=5), prepared, callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path)
    assert (result.status, result.steps, result.epochs, result.test) == ("cancelled", 2, [], {})
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck["epoch"], ck["step"], ck["metrics"]["partial"]["batch"]) == (0, 2, 2)


def test_cancel_from_another_thread(prepared, tmp_path: Path, tiny) -> None:
    cancel = threading.Event()
    started = threading.Event()
    callbacks = T.TrainCallbacks(on_step=lambda s, e, m: started.set())
    thread = threading.Thread(target=lambda: (started.wait(60), cancel.set()))
    thread.start()
    result = T.fit(
        config_for(tiny[1], epochs=50), prepared, callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path
    )
    thread.join()
    assert result.status == "cancelled" and result.steps < 50 * 3
    assert load_checkpoint(tmp_path / "last.pt")["step"] == result.steps


def test_resume_mid_epoch_continues_exactly_like_an_uninterrupted_run(prepared, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], epochs=3, batch_size=4)  # 5 steps per epoch
    whole = T.fit(config, prepared, checkpoint_dir=tmp_path / "whole")
    cancel, callbacks = cancel_at(9)  # in the middle of epoch 2
    first = T.fit(config, prepared, callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path / "parts")
    assert first.status == "cancelled" and len(first.epochs) == 1
    starts: list[dict] = []
    resumed = T.fit(config, prepared, checkpoint_dir=tmp_path / "parts", resume_from=tmp_path / "parts" / "last.pt",
                    callbacks=T.TrainCallbacks(on_start=starts.append))  # fmt: skip
    assert (starts[0]["start_epoch"], starts[0]["start_step"]) == (1, 9)
    assert resumed.status == "completed" and [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
    assert resumed.steps == whole.steps == 15
    for a, b in zip(whole.epochs, resumed.epochs, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert resumed.test["accuracy"] == whole.test["accuracy"]


def test_resume_after_a_finished_epoch_keeps_the_history(prepared, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], epochs=2)
    cancel, callbacks = cancel_at(3)  # the last step of epoch 1: cancelled before validation
    first = T.fit(config, prepared, callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path)
    assert first.status == "cancelled"
    resumed = T.fit(config, prepared, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")
    assert [e["epoch"] for e in resumed.epochs] == [1, 2] and resumed.status == "completed"


def test_resume_refuses_other_classes(prepared, tmp_path: Path, tiny) -> None:
    T.fit(config_for(tiny[1]), prepared, checkpoint_dir=tmp_path)
    other = replace(prepared, classes=["a", "b", "c"])
    with pytest.raises(T.ResumeError, match="trained on classes"):
        T.fit(config_for(tiny[1]), other, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")


# --- early stopping, freezing, oversampling --------------------------------------------------------------------


def test_early_stopping_after_patience_epochs_without_progress(prepared, tmp_path: Path, tiny) -> None:
    # A frozen backbone and a vanishing rate: validation never changes, so no epoch after the first is better.
    config = config_for(tiny[1], epochs=6, freeze="backbone", lr=1e-30, weight_decay=0.0, early_stop_patience=2)
    result = T.fit(config, prepared, checkpoint_dir=tmp_path)
    assert result.status == "completed" and result.stopped_early
    assert len(result.epochs) == 3 and result.best_epoch == 1


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(prepared, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], arch="resnet18", freeze="backbone", epochs=2, lr=0.05)
    torch.manual_seed(config.seed)  # fit builds its model right after seeding the same way
    initial = build_model("resnet18", 3, freeze="backbone").state_dict()
    T.fit(config, prepared, checkpoint_dir=tmp_path)
    trained = load_checkpoint(tmp_path / "last.pt")["model"]
    backbone = [k for k in initial if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone)
    assert all(torch.equal(initial[k], trained[k]) for k in backbone)
    assert not torch.equal(initial["fc.weight"], trained["fc.weight"])


def test_oversampling_lengthens_the_epoch_with_rare_class_repeats(prepared, tmp_path: Path, tiny) -> None:
    infos: list[dict] = []
    config = config_for(tiny[1], oversample=True, rare_threshold=12)  # 6 training images per class
    T.fit(config, prepared, checkpoint_dir=tmp_path, callbacks=T.TrainCallbacks(on_start=infos.append))
    assert infos[0]["n_train"] == 36 and infos[0]["steps_per_epoch"] == 5


# --- the default recipe ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_recipe_reaches_97_percent_on_the_digits(digits_ws: Workspace, tmp_path: Path) -> None:
    config = T.TrainConfig(dataset="sample:digits")
    data = T.prepare(config, digits_ws)
    assert (data.config.arch, data.config.augment) == ("lenet", "crop")
    result = T.fit(config, data, checkpoint_dir=tmp_path)
    assert result.status == "completed" and len(result.epochs) == config.epochs
    assert result.test["accuracy"] >= 0.97, result.test
