"""The small-data recipe (issue 24): the automatic batch, rate, warm-up, network and input size follow the number of
training images, and the plan says why.

The issue's case: 3 colour classes of 30 images at 96 px, default recipe. Before, ResNet-18 from scratch at 112 px,
SGD at 0.1 and 64 images a step (1 step an epoch on its 60 training images) ran away and ended at 93.3%, 100% and
66.7% test accuracy over seeds 0-2. The digits (1,257 training images) keep the recipe they had. Real trainings,
real images (``tests.imagefactory``'s colour classes), one torch thread.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from core.cli.main import main
from core.common.workspace import Workspace
from core.train.config import MIN_BATCH, RECIPE_BATCH, SMALL_SET, TrainConfig
from core.train.fit import fit
from core.train.plan import check_run
from core.train.prepare import prepare
from core.train.runplan import DataFacts, RunPlan, resolve, steps_per_epoch
from tests import imagefactory as fx

SEEDS = (0, 1, 2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny runs: see tests/train/conftest.py


@pytest.fixture(scope="module")
def colours_96(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """The issue's small set: 3 colour classes x 30 images of 96 px (60 train, 15 validation, 15 test)."""
    base = tmp_path_factory.mktemp("small-recipe")
    root = fx.write_small_colour_set(base / "colours-96")
    return Workspace.open(base / "ws").with_roots(base), root


def test_the_default_recipe_learns_30_colour_images_per_class_at_96_px_on_every_seed(
    colours_96: tuple[Workspace, Path], tmp_path: Path
) -> None:
    ws, root = colours_96
    scores = {}
    for seed in SEEDS:
        data = prepare(TrainConfig(dataset=str(root), seed=seed), ws)
        result = fit(data, checkpoint_dir=tmp_path / f"seed-{seed}")
        assert result.status == "completed" and not result.runaways, (seed, result.runaways)
        scores[seed] = result.test["accuracy"]
    assert all(score >= 0.9 for score in scores.values()), scores


def test_the_small_set_s_plan_has_a_batch_rate_warm_up_network_and_size_it_can_train_and_says_why(
    colours_96: tuple[Workspace, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ws, root = colours_96
    assert main(["train", str(root), "--dry-run", "--json", "--workspace", str(ws.root)]) == 0
    out = json.loads(capsys.readouterr().out)
    plan = RunPlan.from_dict(out["plan"])
    assert out["splits"]["train"] == 60 and plan.facts.train_images == 60
    assert (plan.arch, plan.image_size, plan.batch_size) == ("lenet", 32, MIN_BATCH)
    assert plan.lr == pytest.approx(0.1 * MIN_BATCH / RECIPE_BATCH)
    assert plan.settings.batch_size == MIN_BATCH and plan.config.batch_size == 0  # the row keeps "automatic"
    why = out["why"]
    assert "60 training images give 8 steps an epoch at 8 (1 step at the recipe's 64)" in why["batch_size"]
    assert "scaled to the batch of 8: x 8/64" in why["lr"]
    assert "60 training images (under 500), from scratch" in why["arch"]
    assert "scaled down to the largest input LeNet (small CNN) takes" in why["image_size"]
    assert plan.warmup_steps == 24
    assert "first quarter of each cycle: 24 steps in the first, at 8 steps an epoch" in why["warmup_epochs"]


def test_a_typed_batch_is_kept_and_the_usual_rate_with_it() -> None:
    plan = resolve(TrainConfig(dataset="x", batch_size=32).validate(), DataFacts(96, False, 60))
    assert (plan.batch_size, plan.lr) == (32, 0.1) and "batch_size" not in plan.explain()
    adam = resolve(TrainConfig(dataset="x", optimizer="adam").validate(), DataFacts(96, False, 60))
    assert adam.batch_size == 8 and adam.lr == pytest.approx(1e-3 * math.sqrt(8 / 64))  # adaptive: square root
    assert "the square root of 8/64" in adam.explain()["lr"]


@pytest.mark.parametrize(
    ("train_images", "batch"),
    [(0, 64), (40, 8), (60, 8), (114, 8), (200, 16), (300, 32), (500, 32), (640, 64), (1257, 64)],
)
def test_the_automatic_batch_gives_enough_steps_an_epoch(train_images: int, batch: int) -> None:
    config = TrainConfig(dataset="x", arch="resnet18").validate()
    plan = resolve(config, DataFacts(8, True, train_images))
    assert plan.batch_size == batch
    if batch not in (MIN_BATCH, RECIPE_BATCH):
        assert steps_per_epoch(train_images, batch) >= 10 > steps_per_epoch(train_images, 2 * batch)


@pytest.mark.parametrize(
    ("train_images", "batch"),
    [(0, 64), (40, 8), (60, 8), (114, 8), (200, 16), (300, 16), (840, 16), (1257, 16), (3200, 64), (6400, 64)],
)
def test_the_small_cnn_gets_more_steps_down_to_16_a_step(train_images: int, batch: int) -> None:
    """LeNet's steps cost little and it learns from their number (the measurements: MIN_STEPS_SMALL_CNN); a typed
    rate, chosen for the recipe's batch, keeps the batch the rest of the recipe would give."""
    plan = resolve(TrainConfig(dataset="x").validate(), DataFacts(8, True, train_images))
    assert plan.arch == "lenet" and plan.batch_size == batch
    typed = resolve(TrainConfig(dataset="x", lr=0.5).validate(), DataFacts(8, True, train_images))
    assert typed.batch_size == resolve(TrainConfig(dataset="x", arch="resnet18").validate(),
                                       DataFacts(8, True, train_images)).batch_size  # fmt: skip
    if 16 < batch < RECIPE_BATCH:
        assert steps_per_epoch(train_images, batch) >= 50 > steps_per_epoch(train_images, 2 * batch)


def test_the_network_follows_the_number_of_training_images_from_scratch_only() -> None:
    def arch(side: int, n: int, **changes) -> str:
        return resolve(TrainConfig(dataset="x", **changes).validate(), DataFacts(side, False, n)).arch

    assert arch(96, SMALL_SET - 1) == "lenet" and arch(96, SMALL_SET) == "resnet18"
    assert arch(96, 0) == "resnet18"  # a plan stored before the count: decided by the side alone, as it was
    assert arch(96, 60, weights="imagenet") == "resnet18"  # pretrained weights: no small CNN has them
    assert arch(32, 5000) == "lenet"


def test_the_warm_up_is_the_schedule_s_rise_over_the_automatic_batch_s_steps() -> None:
    small = resolve(TrainConfig(dataset="x").validate(), DataFacts(96, False, 60))
    assert small.warmup_steps == 24 and small.settings.warmup_epochs == 0  # the first cycle's 3 epochs of 8 steps
    old = resolve(TrainConfig(dataset="x", batch_size=64).validate(), DataFacts(96, False, 60))
    assert old.warmup_steps == 3  # the recipe before: 3 steps to the peak rate, where the run ran away
    short = resolve(TrainConfig(dataset="x", epochs=3).validate(), DataFacts(96, False, 60))
    assert short.warmup_steps == 6 and "first quarter of the run: 6 steps of 24" in short.explain()["warmup_epochs"]
    typed = resolve(TrainConfig(dataset="x", epochs=3, warmup_epochs=0.5).validate(), DataFacts(96, False, 60))
    assert typed.warmup_steps == 4 and typed.settings.warmup_epochs == 0.5 and "warmup_epochs" not in typed.explain()


def test_too_few_epochs_from_scratch_are_warned_in_words(colours_96: tuple[Workspace, Path]) -> None:
    ws, root = colours_96
    seen = check_run(TrainConfig(dataset=str(root), arch="mobilenet_v2", epochs=3).validate(), ws)
    assert any(w.startswith("3 epochs of MobileNetV2 from random weights buy little") for w in seen.warnings)
    for fine in ({"epochs": 0}, {"epochs": 12}, {"epochs": 3, "weights": "imagenet"}):
        seen = check_run(TrainConfig(dataset=str(root), arch="mobilenet_v2", **fine).validate(), ws)
        assert not [w for w in seen.warnings if "from random weights" in w], fine


def test_the_digits_get_the_small_cnns_steps(digits_ws: Workspace) -> None:
    plan = check_run(TrainConfig(dataset="sample:digits").validate(), digits_ws).plan
    assert plan.facts.train_images == 1257
    assert (plan.arch, plan.image_size, plan.batch_size, plan.lr, plan.warmup_steps) == ("lenet", 16, 16, 0.025, 237)
    assert plan.explain()["batch_size"] == ("1,257 training images give 79 steps an epoch at 16 (20 steps at the "
                                            "recipe's 64): the small CNN learns from the number of its steps, which "
                                            "cost little.")  # fmt: skip


def test_a_plan_stored_before_the_batch_was_automatic_reads_back_as_it_ran() -> None:
    """A stored plan (issue 23's format) has no warm-up steps, no training count and its batch in its config."""
    old = {"arch": "lenet", "image_size": 16, "normalize": "dataset", "augment": "crop", "schedule": "cycles",
           "epochs": {"kind": "cycles", "epochs": 100, "first_cycle": 12}, "lr": 0.1, "optimizer": "sgd",
           "batch_size": 64, "threads": 0, "ranks": 1, "facts": {"typical_side": 8, "grayscale": True},
           "why": {"arch": "The images' median side is 8 px (up to 64) and it learns from scratch."},
           "config": {**TrainConfig(dataset="sample:digits").to_dict(), "batch_size": 64}}  # fmt: skip
    plan = RunPlan.from_dict(old)
    assert (plan.batch_size, plan.settings.batch_size, plan.warmup_steps) == (64, 64, 0)
    assert plan.facts == DataFacts(8, True, 0)
    assert RunPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
