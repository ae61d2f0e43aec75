"""core.train.transfer: a child run starts from a parent run's best checkpoint, with other classes.

The acceptance test trains a parent on the sample's digits 0-4 and a child on digits 5-9 (datasets made here from
the sample's files); the checks of the rules use small real runs on coloured squares.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from core.common.workspace import Workspace
from core.datasets import samples
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.config import ConfigError, TrainConfig
from core.train.jobs import JobRegistry
from core.train.runplan import RunPlan
from core.train.transfer import PARENT_WEIGHTS, fit_head, head_prefix
from tests import imagefactory as f

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _folder(root: Path, colours: dict[str, tuple[int, int, int]]) -> Path:
    for label, colour in colours.items():
        for i in range(20):
            f.write_rgb(root / label / f"{i}.png", size=(12, 12), color=colour, seed=i)
    return root


def _train(ws: Workspace, **kw) -> int:
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    config = TrainConfig(**{"arch": "lenet", "epochs": 1, "batch_size": 16, "log_every": 1, **kw})
    run_id = train_run.submit_training(registry, ws, config)
    job = registry.wait(run_id, timeout=300)
    assert job.status == "completed", job.error
    return run_id


def test_a_child_takes_its_parents_network_and_records_it(tmp_path: Path, ws: Workspace) -> None:
    parent = _train(ws, dataset=str(_folder(tmp_path / "three", COLOURS)))
    child_data = _folder(tmp_path / "two", {"cyan": (30, 200, 200), "yellow": (220, 220, 30)})
    store = RunStore(ws.runs_db)
    child = _train(ws, dataset=str(child_data), arch="auto", from_run=parent)
    run = store.get_run(child)
    assert run.parent_id == parent and run.arch == "lenet" and run.config["from_run"] == parent
    assert train_run.result_json(store, child, ws)["parent_id"] == parent
    state = torch.load(run_folder.run_dir(ws, child) / PARENT_WEIGHTS, weights_only=True)
    assert state["classifier.2.weight"].shape == (2, 128)  # a head for the child's two classes
    plan = RunPlan.from_dict(store.params(child)["plan"])  # the one stored plan
    assert plan.normalize == "dataset" and plan.lr == pytest.approx(0.01)  # own statistics; a tenth
    assert "parent run" in plan.explain()["normalize"] and "A tenth" in plan.explain()["lr"]


def test_the_same_classes_keep_the_parents_head(tmp_path: Path, ws: Workspace) -> None:
    data = str(_folder(tmp_path / "three", COLOURS))
    parent = _train(ws, dataset=data)
    child = _train(ws, dataset=data, from_run=parent)
    assert not (run_folder.run_dir(ws, child) / PARENT_WEIGHTS).exists()  # started from best.pt itself


def test_children_that_cannot_start_from_their_parent_are_refused(tmp_path: Path, ws: Workspace) -> None:
    data = str(_folder(tmp_path / "three", COLOURS))
    parent = _train(ws, dataset=data)
    registry = JobRegistry(RunStore(ws.runs_db))
    cases = {
        "a run starts from one of them": TrainConfig(dataset=data, from_run=parent, weights="imagenet"),
        "its weights fit only that network; choose auto or lenet": TrainConfig(dataset=data, from_run=parent,
                                                                               arch="resnet18"),
        "unknown run 99": TrainConfig(dataset=data, from_run=99),
    }  # fmt: skip
    for says, config in cases.items():
        with pytest.raises(Exception, match=says):
            train_run.submit_training(registry, ws, config)
    queued = registry.store.create_run(dataset=data, kind="train", arch="lenet")
    with pytest.raises(ConfigError, match="has no best checkpoint yet"):
        train_run.submit_training(registry, ws, TrainConfig(dataset=data, from_run=queued))
    search = registry.store.create_run(dataset=data, kind="search")
    with pytest.raises(ConfigError, match="is a search run; start from a training run"):
        train_run.submit_training(registry, ws, TrainConfig(dataset=data, from_run=search))
    assert len(registry.store.list_runs(kind="train")) == 2  # nothing was queued


def test_the_new_head_is_fitted_on_the_features_without_a_random_draw() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=generator) * 3
    labels = torch.arange(3).repeat_interleave(30)
    features = centres[labels] + torch.randn(90, 16, generator=generator)
    before = torch.get_rng_state()
    weight, bias = fit_head(features, labels, 3, smoothing=0.1)
    assert torch.equal(before, torch.get_rng_state())
    assert ((features @ weight.T + bias).argmax(1) == labels).float().mean() == 1.0
    assert head_prefix("resnet18") == "fc." and head_prefix("lenet") == "classifier."


@pytest.fixture(scope="module")
def split_digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample's digits 0-4 and 5-9 as two datasets (its own train/val/test folders kept)."""
    base = tmp_path_factory.mktemp("split-digits")
    source = samples.sample_path("sample:digits", base / "sample")
    folders = {"low": "01234", "high": "56789"}
    for name, digits in folders.items():
        for split in ("train", "val", "test"):
            for d in digits:
                shutil.copytree(source / split / d, base / name / split / d)
    return base / "low", base / "high"


@pytest.mark.slow
def test_a_child_on_digits_5_to_9_beats_the_same_run_from_scratch_after_one_epoch(
    split_digits: tuple[Path, Path], tmp_path: Path
) -> None:
    low, high = split_digits
    ws = Workspace.open(tmp_path / "ws").with_roots(low.parent)
    store = RunStore(ws.runs_db)
    parent = _train(ws, dataset=str(low), arch="auto", epochs=0, batch_size=64)  # the default recipe
    child = _train(ws, dataset=str(high), arch="auto", epochs=1, batch_size=64, from_run=parent)
    scratch = _train(ws, dataset=str(high), arch="auto", epochs=1, batch_size=64)
    results = {run: train_run.result_json(store, run, ws) for run in (parent, child, scratch)}
    assert store.get_run(child).parent_id == parent and store.get_run(scratch).parent_id is None
    assert results[parent]["test"]["accuracy"] >= 0.97
    child_acc, scratch_acc = (results[r]["test"]["accuracy"] for r in (child, scratch))
    print(f"after one epoch on digits 5-9: child of run {parent} {child_acc:.1%}, from scratch {scratch_acc:.1%}")
    assert child_acc > scratch_acc
    assert child_acc >= 0.9
