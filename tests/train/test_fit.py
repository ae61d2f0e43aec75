"""core.train.fit: config, real short trainings (every architecture, optimizer and schedule), checkpoints,
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

from core.common.errors import ChoiceError, CoreError, DatasetError
from core.common.workspace import Workspace
from core.train.archs import ARCHS, choose_image_size
from core.train.batches import Batches
from core.train.checkpoints import REQUIRED_KEYS, load_checkpoint, load_for_inference
from core.train.config import OPTIMIZERS, SCHEDULES, OptionError, ResumeError, TrainConfig
from core.train.epochs import AUTO_MAX_EPOCHS, FIRST_CYCLE, FIXED_EPOCHS, EpochPlan, epoch_plan
from core.train.estimate import epoch_seconds, estimate_epoch_seconds
from core.train.fit import TrainCallbacks, fit
from core.train.loop import evaluate
from core.train.models import build_model
from core.train.plan import preview
from core.train.prepare import PreparedData, prepare
from core.train.runplan import DataFacts, RunPlan, resolve
from core.train.schedules import FITTED_TRAIN_ACC, Cycles, Plateau, lr_factor, one_cycle
from tests import imagefactory as f
from tests.support import TrainedRun

COLORS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}
SLOW_ARCHS = {"resnet101", "resnet152"}  # each writes ~2 x 170-230 MB of checkpoints


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny runs: see tests/train/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """A workspace and a folder of 3 colour classes x 10 images (16 px), unsplit."""
    base = tmp_path_factory.mktemp("tiny")
    root = base / "colours"
    for label, color in COLORS.items():
        for i in range(10):
            f.write_rgb(root / label / f"{i}.png", size=(16, 16), color=color, seed=i)
    return Workspace.open(base / "ws").with_roots(base), root


def config_for(root: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(dataset=str(root), epochs=1, batch_size=8, image_size=32, log_every=1)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def prepared(tiny: tuple[Workspace, Path]) -> PreparedData:
    ws, root = tiny
    return prepare(config_for(root), ws)


def planned(data: PreparedData, config: TrainConfig) -> PreparedData:
    """``data`` (decoded once for the module) carrying the plan of ``config`` instead: the tests vary the settings
    of one decoded dataset, at its input size."""
    plan = resolve(config.validate(), data.plan.facts)
    assert plan.image_size == data.image_size
    return replace(data, plan=plan)


def settled(config: TrainConfig, side: int = 8, gray: bool = True) -> TrainConfig:
    """The settings the plan of ``config`` makes for images of ``side`` px."""
    return resolve(config.validate(), DataFacts(side, gray)).settings


# --- config ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("arch", "resnet9", ("auto", *ARCHS)),
        ("optimizer", "lbfgs", ("sgd", "adam", "adamw", "adadelta", "rmsprop")),
        ("schedule", "linear", ("auto", "cycles", "plateau", "onecycle", "cosine", "step", "none")),
        ("augment", "mirror", ("auto", "none", "flip", "crop", "crop-flip", "strong")),
        ("best_metric", "f1", ("val_acc", "val_loss")),
    ],
)
def test_a_bad_choice_carries_its_field_value_and_allowed_values(name: str, value: str, allowed: tuple) -> None:
    with pytest.raises(ChoiceError) as caught:
        replace(TrainConfig(dataset="x"), **{name: value}).validate()
    assert (caught.value.field, caught.value.value, caught.value.allowed) == (name, value, allowed)
    assert str(caught.value) == f"{name} {value!r}: choose one of {', '.join(allowed)}"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("epochs", -1, "epochs -1: expected a number >= 0"),
        ("plateau_patience", 0, "plateau_patience 0: expected a number >= 1"),
        ("lr", -1.0, "lr -1.0: expected a number >= 0"),
        ("momentum", 1.5, "momentum 1.5: expected a number in [0, 1)"),
        ("val_fraction", 0.9, "val_fraction 0.9 and test_fraction 0.15"),
        ("milestones", [0], "milestones [0]: expected whole epoch numbers from 1 to 1000"),
    ],
)
def test_validate_names_the_bad_value_and_what_is_allowed(name: str, value: object, message: str) -> None:
    with pytest.raises(OptionError, match=re.escape(message)) as caught:
        replace(TrainConfig(dataset="x"), **{name: value}).validate()
    assert isinstance(caught.value, CoreError) and caught.value.field == name


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(dataset="sample:digits", milestones=[3, 6], schedule="step", oversample=True)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_from_dict_refuses_unknown_options() -> None:
    with pytest.raises(CoreError, match="unknown training options \\['colour'\\]"):
        TrainConfig.from_dict({"dataset": "x", "colour": "red"})


def test_every_field_has_help_text() -> None:
    helps = TrainConfig.help()
    assert set(helps) == set(TrainConfig().to_dict()) and all(len(h) > 10 for h in helps.values())


def test_auto_choices_follow_the_images() -> None:
    default = TrainConfig(dataset="x")
    digits = settled(default, 8, True)
    assert (digits.arch, digits.augment, digits.normalize, digits.lr) == ("lenet", "crop", "dataset", 0.1)
    assert digits.image_size == choose_image_size("lenet", 8)
    photos = settled(default, 480, False)
    assert (photos.arch, photos.image_size, photos.augment) == ("resnet18", 224, "crop-flip")
    tuned = settled(replace(default, weights="imagenet", optimizer="adam"), 8, False)
    assert (tuned.arch, tuned.normalize, tuned.lr) == ("resnet18", "imagenet", pytest.approx(1e-4))
    assert settled(replace(default, arch="mobilenet_v2", image_size=40, lr=0.5), 8, True).image_size == 40
    small = settled(default, 64, False)  # up to 64 px: LeNet at its 32 px cap
    assert (small.arch, small.image_size) == ("lenet", 32)
    assert settled(default, 65, False).arch == "resnet18"


def test_a_plan_says_why_for_every_automatic_choice_and_round_trips_through_json() -> None:
    plan = resolve(TrainConfig(dataset="x", optimizer="adam").validate(), DataFacts(8, True))
    why = plan.explain()
    assert set(why) == {"arch", "image_size", "schedule", "epochs", "lr", "augment", "normalize", "threads",
                        "batch_size", "memory_budget"}  # fmt: skip
    assert "8 px" in why["arch"] and "grey-scale" in why["augment"] and "Adam" in why["lr"]
    assert why["epochs"] == plan.epochs.words() == EpochPlan("cycles", AUTO_MAX_EPOCHS).words()
    assert RunPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    given = resolve(TrainConfig(dataset="x", arch="lenet", image_size=16, lr=0.1, epochs=3, augment="crop",
                                normalize="dataset", threads=1, batch_size=8, memory_budget=100).validate(),
                     DataFacts(8, True))  # fmt: skip
    assert set(given.explain()) == {"epochs", "schedule"}  # nothing else was left to the studio


@pytest.mark.parametrize(
    ("changes", "resolved", "planned"),
    [
        ({}, ("cycles", 0), (AUTO_MAX_EPOCHS, True)),  # the default: as many epochs as the data needs
        ({"epochs": 8}, ("onecycle", 8), (8, False)),
        ({"schedule": "cosine"}, ("cosine", FIXED_EPOCHS), (FIXED_EPOCHS, False)),
        ({"schedule": "plateau", "epochs": 30}, ("plateau", 30), (30, True)),
    ],
)
def test_auto_epochs_and_schedule(changes: dict, resolved: tuple, planned: tuple) -> None:
    config = TrainConfig(dataset="x", **changes)
    plan = resolve(config, DataFacts(8, True))
    assert (plan.settings.schedule, plan.settings.epochs) == resolved
    again = epoch_plan(plan.settings.schedule, plan.settings.epochs)  # the settings keep the same plan
    assert (plan.epochs.epochs, plan.epochs.until_converged) == (again.epochs, again.until_converged) == planned


# --- learning-rate schedules -----------------------------------------------------------------------------------


def test_onecycle_rises_for_a_quarter_then_decays_to_zero() -> None:
    factor = lr_factor(TrainConfig(epochs=4, schedule="onecycle"), steps_per_epoch=25)
    values = [factor(s) for s in range(100)]
    assert values[0] < 0.05 and max(values) == pytest.approx(1.0, abs=0.01)
    assert int(np.argmax(values)) == 25 and values[-1] < 0.001


def test_step_schedule_with_warmup() -> None:
    config = TrainConfig(epochs=6, schedule="step", milestones=[2, 4], gamma=0.5, warmup_epochs=1)
    factor = lr_factor(config, steps_per_epoch=10)
    assert factor(0) < factor(5) < factor(10) == 1.0
    assert (factor(19), factor(20), factor(40)) == (1.0, 0.5, 0.25)


def test_plateau_drops_the_rate_after_patience_epochs_and_stops_on_the_third_plateau() -> None:
    plateau = Plateau(warmup_steps=4, gamma=0.1, patience=2)
    assert [plateau(s) for s in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    losses = [1.0, 0.8, 0.8, 0.7999, 0.79, 0.9, 0.9, 0.5, 0.6, 0.6]  # 0.7999 is within the noise margin
    stops = [plateau.observe(x) for x in losses]
    assert stops == [False] * 9 + [True]
    assert plateau(100) == pytest.approx(0.01) and plateau.dropped == 2 and plateau.best == 0.5
    assert plateau.observe(float("nan")) is True  # a NaN loss never counts as progress


def test_cycles_double_while_the_network_underfits_and_validation_gains() -> None:
    cycles = Cycles(steps_per_epoch=2, cap_epochs=100, first=2)
    assert [cycles(s) for s in range(4)] == pytest.approx([one_cycle(s, 4) for s in range(4)])
    assert cycles.end_epoch(1, {"train_acc": 0.5, "val_acc": 0.4}) is False  # mid-cycle: nothing decided
    assert cycles.end_epoch(2, {"train_acc": 0.5, "val_acc": 0.4}) is False  # underfits: a 4-epoch cycle follows
    assert (cycles.starts, cycles.lengths) == ([0, 2], [2, 4])
    assert [cycles(s) for s in range(4, 12)] == pytest.approx([one_cycle(s, 8) for s in range(8)])  # restarted
    assert cycles.end_epoch(6, {"train_acc": 0.6, "val_acc": 0.405}) is True  # gained under a point: converged


def test_cycles_stop_when_the_training_set_is_fitted_or_the_cap_is_near() -> None:
    assert Cycles(1, 100, first=4).end_epoch(4, {"train_acc": 0.99, "val_acc": 0.5}) is True
    capped = Cycles(1, 10, first=4)
    assert capped.end_epoch(4, {"train_acc": 0.5, "val_acc": 0.3}) is False and capped.lengths == [4, 6]
    assert capped.end_epoch(10, {"train_acc": 0.6, "val_acc": 0.5}) is True  # no room for another cycle
    no_val = Cycles(1, 100, first=2)  # without validation images only the training accuracy decides
    assert no_val.end_epoch(2, {"train_acc": 0.5, "val_acc": math.nan}) is False
    assert no_val.end_epoch(6, {"train_acc": 0.5, "val_acc": math.nan}) is False


def test_cycles_state_survives_a_checkpoint(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, Cycles(3, 100, first=2))
    scheduler.lr_lambdas[0].end_epoch(2, {"train_acc": 0.5, "val_acc": 0.4})
    torch.save({"scheduler": scheduler.state_dict()}, tmp_path / "s.pt")
    again = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=0.1), Cycles(3, 100, first=2))
    again.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True)["scheduler"])  # as checkpoints load
    restored = again.lr_lambdas[0]
    assert (restored.starts, restored.lengths, restored.last_val_acc) == ([0, 2], [2, 4], 0.4)


def test_cosine_and_none() -> None:
    cosine = lr_factor(TrainConfig(epochs=2, schedule="cosine"), steps_per_epoch=10)
    assert cosine(0) == 1.0 and cosine(10) == pytest.approx(0.5) and cosine(19) < 0.01
    assert lr_factor(TrainConfig(epochs=2, schedule="none"), steps_per_epoch=10)(15) == 1.0


# --- data preparation ------------------------------------------------------------------------------------------


def test_prepare_splits_decodes_and_reports(prepared: PreparedData) -> None:
    assert prepared.classes == ["blue", "green", "red"]
    assert prepared.counts() == {"train": 18, "val": 6, "test": 6}
    assert prepared.tensors.images.shape == (30, 3, 32, 32) and prepared.dropped.empty
    assert prepared.config.arch == "lenet" and prepared.config.augment == "crop-flip"  # colour images
    assert set(prepared.splits.columns) == {"path", "label", "split"}


def test_second_prepare_decodes_nothing(tiny: tuple[Workspace, Path], prepared: PreparedData) -> None:
    ws, root = tiny
    again = prepare(config_for(root), ws)
    assert again.tensors.n_decoded == 0
    assert torch.equal(again.tensors.images, prepared.tensors.images)


def test_a_broken_image_is_dropped_with_its_reason_and_training_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for label, color in COLORS.items():
        for i in range(4):
            f.write_rgb(root / label / f"{i}.png", size=(16, 16), color=color, seed=i)
    f.write_truncated_png(root / "red" / "broken.png", size=(32, 32))
    ws = Workspace.open(tmp_path / "ws")
    data = prepare(config_for(root), ws)
    assert data.dropped.set_index("path")["reason"].str.contains("truncated").to_dict() == {"red/broken.png": True}
    # A file named by a stored split that has gone since: dropped at decode time, with its reason.
    stored = pd.concat([data.splits, pd.DataFrame([{"path": "red/gone.png", "label": "red", "split": "train"}])])
    data = prepare(config_for(root), ws, splits=stored)
    assert data.dropped.set_index("path").loc["red/gone.png", "reason"] == "file not found"
    result = fit(data, checkpoint_dir=tmp_path / "ck")
    assert result.status == "completed" and "red/gone.png" in set(result.dropped["path"])


def test_prepare_refuses_a_single_class(tmp_path: Path) -> None:
    for i in range(4):
        f.write_rgb(tmp_path / "data" / "only" / f"{i}.png", size=(8, 8), seed=i)
    with pytest.raises(DatasetError, match="at least 2 classes"):
        prepare(config_for(tmp_path / "data"), Workspace.open(tmp_path / "ws"))


def test_epoch_seconds_counts_every_training_batch_and_a_cheaper_validation() -> None:
    assert epoch_seconds(0.3, n_train=130, n_val=64, batch=64) == pytest.approx(0.3 * 3 + 0.1)
    assert epoch_seconds(0.3, n_train=128, n_val=0, batch=64) == pytest.approx(0.6)


def test_estimate_epoch_seconds_runs_on_prepared_data_or_a_preview(prepared: PreparedData) -> None:
    # The value is a measured time (benchmarks judge those); here: both inputs give an estimate, and a
    # preview's estimate (random pixels) leaves the caller's random streams untouched.
    assert isinstance(estimate_epoch_seconds(prepared, steps=1), float)
    manifest = pd.DataFrame({"path": [f"{i}.png" for i in range(20)], "label": ["a", "b"] * 10, "split": [""] * 20,
                             "width": [16] * 20, "height": [16] * 20, "mode": ["RGB"] * 20})  # fmt: skip
    before = torch.random.get_rng_state()
    assert isinstance(estimate_epoch_seconds(preview(TrainConfig(dataset="x"), manifest), steps=1), float)
    assert torch.equal(before, torch.random.get_rng_state())


# --- real trainings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ARCHS else a for a in ARCHS])
def test_every_architecture_trains(arch: str, prepared: PreparedData, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], arch=arch)
    result = fit(planned(prepared, config), checkpoint_dir=tmp_path)
    assert result.status == "completed" and len(result.epochs) == 1
    assert math.isfinite(result.epochs[0]["train_loss"]) and 0 <= result.test["accuracy"] <= 1
    assert load_checkpoint(tmp_path / "best.pt").arch == arch


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(optimizer: str, prepared: PreparedData, tmp_path: Path, tiny) -> None:
    result = fit(planned(prepared, config_for(tiny[1], optimizer=optimizer, epochs=2)), checkpoint_dir=tmp_path)
    assert result.status == "completed"
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in result.epochs)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_sets_the_rate_each_step(schedule: str, prepared: PreparedData, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], schedule=schedule, epochs=3, milestones=[1, 2], lr=0.05, warmup_epochs=0.5)
    rates: list[float] = []
    fit(planned(prepared, config), checkpoint_dir=tmp_path,
          callbacks=TrainCallbacks(on_step=lambda s, e, m: rates.append(m["lr"])))  # fmt: skip
    factor = lr_factor(resolve(config, prepared.plan.facts).settings, steps_per_epoch=3)
    assert rates == pytest.approx([0.05 * factor(s) for s in range(1, 10)])


def test_callbacks_report_start_steps_epochs_and_checkpoints(prepared: PreparedData, tmp_path: Path, tiny) -> None:
    seen: dict[str, list] = {"start": [], "step": [], "epoch": [], "checkpoint": []}
    callbacks = TrainCallbacks(
        on_start=lambda info: seen["start"].append(info),
        on_step=lambda step, epoch, m: seen["step"].append((step, epoch, sorted(m))),
        on_epoch=lambda epoch, m: seen["epoch"].append((epoch, sorted(m))),
        on_checkpoint=lambda path, kind: seen["checkpoint"].append((path.name, kind)),
    )
    fit(planned(prepared, config_for(tiny[1], epochs=2, log_every=2)), callbacks=callbacks, checkpoint_dir=tmp_path)
    info = seen["start"][0]
    assert (info["epochs"], info["steps_per_epoch"], info["total_steps"], info["n_train"]) == (2, 3, 6, 18)
    assert [s[:2] for s in seen["step"]] == [(2, 1), (4, 2), (6, 2)]
    assert seen["step"][0][2] == ["images_per_s", "lr", "train_acc", "train_loss"]
    assert [e[0] for e in seen["epoch"]] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"} <= set(seen["epoch"][0][1])
    assert ("last.pt", "last") in seen["checkpoint"] and ("best.pt", "best") in seen["checkpoint"]


def test_checkpoint_holds_the_contract_and_serves_inference(prepared: PreparedData, tmp_path: Path, tiny) -> None:
    result = fit(planned(prepared, config_for(tiny[1], epochs=2)), checkpoint_dir=tmp_path)
    on_disk = torch.load(tmp_path / "last.pt", weights_only=True)  # the file's contract, as a script reads it
    assert set(REQUIRED_KEYS) | {"optimizer", "scheduler", "scaler", "rng", "metrics", "plan", "epoch"} <= set(on_disk)
    assert (on_disk["image_size"], on_disk["arch"]) == (32, "lenet")
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck.epoch, ck.step, ck.classes, ck.image_size) == (2, 6, prepared.classes, 32)
    assert (
        ck.mean == pytest.approx(prepared.mean)
        and ck.plan == result.plan
        and ck.plan.settings.to_dict() == result.config
    )
    model = load_for_inference(tmp_path / "best.pt", "cpu")
    batch = Batches(prepared.tensors.images, prepared.labels, prepared.indices["test"], batch_size=8,
                        mean=ck.mean, std=ck.std)  # fmt: skip
    x, _ = next(iter(batch))
    probs = model.predict(x)
    assert np.argmax(probs.numpy(), 1).tolist() == result.test_predictions["predicted"].tolist()


def test_test_metrics_and_predictions_come_from_the_best_checkpoint(prepared, tmp_path: Path, tiny) -> None:
    result = fit(planned(prepared, config_for(tiny[1], epochs=3, lr=0.05)), checkpoint_dir=tmp_path)
    assert set(result.test) >= {"loss", "accuracy", "top5", "n", "epoch"} and result.test["n"] == 6
    assert result.test["epoch"] == result.best_epoch
    p = result.test_predictions
    assert p["probs"].shape == (6, 3) and np.allclose(p["probs"].sum(1), 1, atol=1e-5)
    assert len(p["paths"]) == 6 and p["classes"] == prepared.classes
    assert result.test["accuracy"] == pytest.approx((p["predicted"] == p["targets"]).mean())


def test_evaluate_an_empty_split_gives_nan(prepared: PreparedData) -> None:
    batches = Batches(prepared.tensors.images, prepared.labels, np.array([], dtype=np.int64), batch_size=4,
                          mean=[0.5] * 3, std=[0.5] * 3)  # fmt: skip
    out = evaluate(build_model("lenet", 3), batches)
    assert out["n"] == 0 and math.isnan(out["accuracy"])


# --- cancel and resume -----------------------------------------------------------------------------------------


def cancel_at(step: int) -> tuple[threading.Event, TrainCallbacks]:
    event = threading.Event()

    def on_step(s: int, epoch: int, metrics: dict) -> None:
        if s >= step:
            event.set()

    return event, TrainCallbacks(on_step=on_step)


def test_cancel_stops_at_the_next_step_with_a_loadable_checkpoint(prepared, tmp_path: Path, tiny) -> None:
    cancel, callbacks = cancel_at(2)
    result = fit(
        planned(prepared, config_for(tiny[1], epochs=5)), callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path
    )
    assert (result.status, result.steps, result.epochs, result.test) == ("cancelled", 2, [], {})
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck.epoch, ck.step, ck.metrics["partial"]["batch"]) == (0, 2, 2)


def test_cancel_from_another_thread(prepared, tmp_path: Path, tiny) -> None:
    cancel = threading.Event()
    started = threading.Event()
    callbacks = TrainCallbacks(on_step=lambda s, e, m: started.set())
    thread = threading.Thread(target=lambda: (started.wait(60), cancel.set()))
    thread.start()
    result = fit(
        planned(prepared, config_for(tiny[1], epochs=50)), callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path
    )
    thread.join()
    assert result.status == "cancelled" and result.steps < 50 * 3
    assert load_checkpoint(tmp_path / "last.pt").step == result.steps


@pytest.mark.parametrize("schedule", ["onecycle", "plateau"])
def test_resume_mid_epoch_continues_exactly_like_an_uninterrupted_run(schedule: str, prepared, tmp_path: Path,
                                                                      tiny) -> None:  # fmt: skip
    # plateau with patience 1: its drops (state inside the scheduler) must survive the checkpoint too.
    config = config_for(tiny[1], epochs=3, batch_size=4, schedule=schedule, plateau_patience=1)  # 5 steps per epoch
    whole = fit(planned(prepared, config), checkpoint_dir=tmp_path / "whole")
    cancel, callbacks = cancel_at(9)  # in the middle of epoch 2
    first = fit(planned(prepared, config), callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path / "parts")
    assert first.status == "cancelled" and len(first.epochs) == 1
    starts: list[dict] = []
    resumed = fit(planned(prepared, config), checkpoint_dir=tmp_path / "parts", resume_from=tmp_path / "parts" / "last.pt",
                    callbacks=TrainCallbacks(on_start=starts.append))  # fmt: skip
    assert (starts[0]["start_epoch"], starts[0]["start_step"]) == (1, 9)
    assert resumed.status == "completed" and [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
    assert resumed.steps == whole.steps == 15
    for a, b in zip(whole.epochs, resumed.epochs, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert resumed.test["accuracy"] == whole.test["accuracy"]


def test_resume_after_a_finished_epoch_keeps_the_history(prepared, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], epochs=2)
    cancel, callbacks = cancel_at(3)  # the last step of epoch 1: cancelled before validation
    first = fit(planned(prepared, config), callbacks=callbacks, cancel=cancel, checkpoint_dir=tmp_path)
    assert first.status == "cancelled"
    resumed = fit(planned(prepared, config), checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")
    assert [e["epoch"] for e in resumed.epochs] == [1, 2] and resumed.status == "completed"


def test_resume_refuses_other_classes(prepared, tmp_path: Path, tiny) -> None:
    fit(planned(prepared, config_for(tiny[1])), checkpoint_dir=tmp_path)
    other = replace(prepared, classes=["a", "b", "c"])
    with pytest.raises(ResumeError, match="trained on classes"):
        fit(planned(other, config_for(tiny[1])), checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt")


# --- early stopping, freezing, oversampling --------------------------------------------------------------------


def test_early_stopping_after_patience_epochs_without_progress(prepared, tmp_path: Path, tiny) -> None:
    # A frozen backbone and a vanishing rate: validation never changes, so no epoch after the first is better.
    config = config_for(tiny[1], epochs=6, freeze="backbone", lr=1e-30, weight_decay=0.0, early_stop_patience=2)
    result = fit(planned(prepared, config), checkpoint_dir=tmp_path)
    assert result.status == "completed" and result.stopped_early
    assert len(result.epochs) == 3 and result.best_epoch == 1


def test_default_schedule_ends_after_the_first_cycle_on_data_it_fits(prepared, tmp_path: Path, tiny) -> None:
    starts: list[dict] = []
    lengths: list[int] = []
    callbacks = TrainCallbacks(on_start=starts.append, on_epoch=lambda e, m: lengths.append(m["planned_epochs"]))
    config = config_for(tiny[1], epochs=0)  # the default: auto epochs, cycles
    result = fit(planned(prepared, config), checkpoint_dir=tmp_path, callbacks=callbacks)
    assert (starts[0]["epochs"], starts[0]["max_epochs"], starts[0]["until_converged"]) == (12, 100, True)
    assert lengths == [FIRST_CYCLE] * FIRST_CYCLE  # the run as far as it is decided: the first cycle
    assert result.epochs[-1]["train_acc"] >= FITTED_TRAIN_ACC  # three flat colours: fitted in one cycle
    assert result.stopped_early and len(result.epochs) == FIRST_CYCLE and result.config["schedule"] == "cycles"


def test_plateau_schedule_drops_twice_then_ends_the_run(prepared, tmp_path: Path, tiny) -> None:
    # Validation never changes (frozen backbone, vanishing rate): epoch 1 is the best; every 2 epochs the
    # rate drops (from the next step), and the plateau after the second drop ends the run: 1 + 3 x 2 epochs.
    config = config_for(tiny[1], epochs=0, schedule="plateau", plateau_patience=2, freeze="backbone", lr=1e-30,
                        weight_decay=0.0)  # fmt: skip
    starts: list[dict] = []
    result = fit(planned(prepared, config), checkpoint_dir=tmp_path, callbacks=TrainCallbacks(on_start=starts.append))
    assert (starts[0]["epochs"], starts[0]["until_converged"]) == (AUTO_MAX_EPOCHS, True)
    assert result.status == "completed" and result.stopped_early and len(result.epochs) == 7
    rates = [e["lr"] / 1e-30 for e in result.epochs]
    assert rates == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01])  # an epoch reports the rate it ended with


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(prepared, tmp_path: Path, tiny) -> None:
    config = config_for(tiny[1], arch="resnet18", freeze="backbone", epochs=2, lr=0.05)
    torch.manual_seed(config.seed)  # fit builds its model right after seeding the same way
    initial = build_model("resnet18", 3, freeze="backbone").state_dict()
    fit(planned(prepared, config), checkpoint_dir=tmp_path)
    trained = load_checkpoint(tmp_path / "last.pt").weights
    backbone = [k for k in initial if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone)
    assert all(torch.equal(initial[k], trained[k]) for k in backbone)
    assert not torch.equal(initial["fc.weight"], trained["fc.weight"])


def test_oversampling_lengthens_the_epoch_with_rare_class_repeats(prepared, tmp_path: Path, tiny) -> None:
    infos: list[dict] = []
    config = config_for(tiny[1], oversample=True, rare_threshold=12)  # 6 training images per class
    fit(planned(prepared, config), checkpoint_dir=tmp_path, callbacks=TrainCallbacks(on_start=infos.append))
    assert infos[0]["n_train"] == 18 and infos[0]["samples_per_epoch"] == 36 and infos[0]["steps_per_epoch"] == 5


# --- the default recipe ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_recipe_reaches_97_percent_on_the_digits(digits_ws: Workspace, trained_digits: TrainedRun) -> None:
    data = prepare(TrainConfig(dataset="sample:digits"), digits_ws)
    assert (data.plan.arch, data.plan.augment) == ("lenet", "crop")
    result = trained_digits.result()  # this recipe, trained once per pytest run
    assert result["status"] == "completed" and result["arch"] == "lenet"
    assert 0 < result["epochs_trained"] < AUTO_MAX_EPOCHS  # the automatic epochs stopped once the digits were learnt
    assert result["test"]["accuracy"] >= 0.97, result["test"]
