"""Every numeric training option has an upper bound, and a run that would not fit in memory is refused before it
queues, with the estimate in words (issue 22: one user's settings must not take the server down)."""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from core.common.cpu import usable_cores
from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.config import BOUNDS, ConfigError, TrainConfig
from core.train.jobs import JobRegistry
from core.train.runplan import DataFacts, resolve
from tests import imagefactory as fx

# Settings no machine can hold: a ResNet-50 at the largest input side with the largest batch (terabytes of
# activations), on a handful of tiny images.
TOO_BIG = {"arch": "resnet50", "image_size": 1024, "batch_size": 4096}


def _numeric(f) -> bool:
    return f.type in ("int", "float")


def test_every_numeric_option_has_a_finite_bound() -> None:
    numeric = {f.name for f in fields(TrainConfig) if _numeric(f)}
    assert numeric <= set(BOUNDS), f"options without a bound: {sorted(numeric - set(BOUNDS))}"
    assert all(math.isfinite(b.low) and math.isfinite(b.high) and b.low < b.high for b in BOUNDS.values())


def test_the_values_of_issue_22_are_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("image_size 100000: expected a number <= 1024")):
        TrainConfig(image_size=10**5, ranks=10**3).validate()
    with pytest.raises(ConfigError, match="ranks 1000: expected a number <= 64"):
        TrainConfig(ranks=10**3).validate()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("epochs", 10**12, "epochs 1000000000000: expected a number <= 1000"),
        ("batch_size", 10**6, "batch_size 1000000: expected a number <= 4096"),
        ("lr", math.inf, "lr inf: expected a finite number"),
        ("lr", math.nan, "lr nan: expected a finite number"),
        ("lr", 1e6, "lr 1000000.0: expected a number <= 10"),
        ("weight_decay", math.inf, "weight_decay inf: expected a finite number"),
        ("warmup_epochs", 1e9, "warmup_epochs 1000000000.0: expected a number <= 1000"),
        ("backbone_lr_factor", 1e9, "backbone_lr_factor 1000000000.0: expected a number <= 10"),
        ("threads", 10**6, "threads 1000000: expected a number <= 256"),
        ("seed", -1, "seed -1: expected a number >= 0"),
        ("seed", 2**64, "expected a number <= 4294967295"),
        ("rare_threshold", 10**9, "rare_threshold 1000000000: expected a number <= 10000"),
        ("log_every", 10**12, "expected a number <= 1000000"),
        ("image_size", 64.5, "image_size 64.5: expected a whole number"),
        ("milestones", [10**9], "milestones [1000000000]: expected whole epoch numbers from 1 to 1000"),
        ("milestones", list(range(1, 1002)), "at most 1000 milestones"),
    ],
)
def test_a_value_beyond_its_bound_is_refused_in_words(name: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        replace(TrainConfig(dataset="x"), **{name: value}).validate()


def test_the_bounds_themselves_are_allowed() -> None:
    highest = {name: bound.high for name, bound in BOUNDS.items() if not bound.below}
    highest.pop("val_fraction", None), highest.pop("test_fraction", None)
    TrainConfig(dataset="x", **{k: type(getattr(TrainConfig(), k))(v) for k, v in highest.items()}).validate()


# --- memory: refused before it queues ----------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return fx.write_colour_classes(tmp_path / "colours", 4)


def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_queues(tmp_path: Path, tiny: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    config = TrainConfig(dataset=str(tiny), **TOO_BIG).validate()  # each value within its own bound
    with pytest.raises(CoreError, match=r"this run would need about [\d.,]+ [GT]B of memory; [\d.,]+ [GM]B is free"):
        train_run.submit_training(JobRegistry(store), ws, config)
    assert store.list_runs() == []  # nothing queued, nothing recorded


def test_a_resume_that_cannot_fit_in_memory_is_refused(tmp_path: Path, tiny: Path) -> None:
    """A run recorded when the machine had the memory (or by an older version) is checked again on resume."""
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    config = TrainConfig(dataset=str(tiny), **TOO_BIG)
    run_id = train_run.create_training_run(store, config)
    store.log_params(run_id, {"plan": resolve(config, DataFacts(8, False)).to_dict()})  # its plan, as stored
    store.set_status(run_id, "cancelled")
    last = run_folder.checkpoint_path(ws, run_id, "last")
    last.parent.mkdir(parents=True)
    last.write_bytes(b"a checkpoint")  # never read: the refusal comes first
    with pytest.raises(CoreError, match="this run would need about"):
        train_run.resume_training(JobRegistry(store), ws, run_id)
    assert store.get_run(run_id).status == "cancelled"  # not queued


def test_more_processes_than_cores_is_refused_on_one_machine(tmp_path: Path, tiny: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    store = RunStore(ws.runs_db)
    cores = usable_cores()
    config = TrainConfig(dataset=str(tiny), arch="lenet", ranks=cores + 1).validate()
    with pytest.raises(CoreError, match=f"ranks {cores + 1}: this machine has {cores} usable core"):
        train_run.submit_training(JobRegistry(store), ws, config)
    assert store.list_runs() == []
