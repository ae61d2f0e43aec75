"""One plan per run (issue 23): a run's settings are decided once (``core.train.runplan.resolve``), stored once,
carried identically by its checkpoints, read back by every reader, and never decided again on resume; the epochs a
run trained are a stored field. Real runs through the command line (tiny ones: 2 colour classes, a few epochs).

The count is taken by a spy around the real ``resolve`` (it decides exactly as before, and counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli.main import main
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import run_folder, runplan
from core.train import runner as train_run
from core.train.checkpoints import load_checkpoint, stored_plan
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from core.train.runplan import RunPlan
from tests import imagefactory as fx
from tests.support import cancel_after_first_checkpoint

TINY = ["--arch", "lenet", "--batch-size", "8", "--log-every", "1"]


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return fx.write_colour_classes(tmp_path / "data" / "colours", 12, labels=("red", "green"))


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """Every config ``resolve`` decides, in order (the real function runs)."""
    calls: list[TrainConfig] = []
    real = runplan.resolve

    def counted(config: TrainConfig, facts: runplan.DataFacts) -> RunPlan:
        calls.append(config)
        return real(config, facts)

    monkeypatch.setattr(runplan, "resolve", counted)
    return calls


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_a_command_line_run_is_resolved_once_and_stores_its_epochs(
    colours: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], resolutions: list[TrainConfig]
) -> None:
    ws = tmp_path / "ws"
    result = _cli(capsys, "train", str(colours), *TINY, "--epochs", "2", "--workspace", str(ws))
    assert result["status"] == "completed"
    assert len(resolutions) == 1  # submit made the plan; the job, prepare and fit read it
    store = RunStore(Workspace.open(ws).runs_db)
    assert store.params(result["run_id"])["epochs_trained"] == result["epochs_trained"] == 2


def test_the_plan_is_stored_once_and_every_reader_reads_that_one(colours: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    root = tmp_path / "ws"
    run_id = _cli(capsys, "train", str(colours), "--epochs", "1", "--batch-size", "8", "--workspace", str(root))[
        "run_id"
    ]
    ws, store = Workspace.open(root), RunStore(Workspace.open(root).runs_db)
    run = store.get_run(run_id)
    assert run.config["arch"] == "auto" and run.config["image_size"] == 0  # the row: what was asked
    assert "settings" not in store.params(run_id)  # no second stored copy
    stored = RunPlan.from_dict(store.params(run_id)["plan"])
    assert (stored.arch, stored.image_size) == ("lenet", 16)  # 12 px colours: the small CNN at its smallest input
    for kind in ("last", "best"):  # the checkpoints carry the very same plan
        assert load_checkpoint(run_folder.checkpoint_path(ws, run_id, kind)).plan == stored
    assert stored_plan(store, ws, run) == stored  # what Compare, predict, resume and evaluate read


def test_a_resume_decides_nothing_again(colours: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        resolutions: list[TrainConfig]) -> None:  # fmt: skip
    root = tmp_path / "ws"
    ws = Workspace.open(root)
    registry = JobRegistry(RunStore(ws.runs_db))
    run_id = train_run.submit_training(registry, ws, TrainConfig(dataset=str(colours), arch="lenet", epochs=3,
                                                                  batch_size=8, log_every=1))  # fmt: skip
    cancel_after_first_checkpoint(registry, run_id, run_folder.checkpoint_path(ws, run_id, "last"))
    assert registry.wait(run_id, timeout=120).status == "cancelled"
    assert len(resolutions) == 1
    resolutions.clear()
    result = _cli(capsys, "train", "--resume", str(run_id), "--workspace", str(root))
    assert result["status"] == "completed" and [e["epoch"] for e in result["epochs"]] == [1, 2, 3]
    assert resolutions == []  # the stored plan, as it was
    assert result["epochs_trained"] == 3


def test_the_epochs_trained_of_an_older_run_are_still_known(tmp_path: Path) -> None:
    """A run from before the field existed: counted from its per-epoch rows, in the one reader."""
    store = RunStore(Workspace.open(tmp_path / "ws").runs_db)
    run_id = store.create_run(dataset="x", kind="train")
    store.log_metrics(run_id, [("epoch_s", epoch, 1.0) for epoch in (1, 2, 3)])
    assert train_run.epochs_trained(store, run_id) == 3
    store.log_params(run_id, {"epochs_trained": 5})
    assert train_run.epochs_trained(store, run_id) == 5


def test_the_dry_run_prints_the_plan_and_why_and_records_nothing(colours: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 resolutions: list[TrainConfig]) -> None:  # fmt: skip
    root = tmp_path / "ws"
    out = _cli(capsys, "train", str(colours), "--dry-run", "--weights", "none", "--workspace", str(root))
    plan = RunPlan.from_dict(out["plan"])
    assert (plan.arch, plan.image_size, plan.augment, plan.epochs.kind) == ("lenet", 16, "crop-flip", "cycles")
    assert out["why"]["epochs"] == plan.epochs.words() and "colour photos" in out["why"]["augment"]
    assert set(out["why"]) >= {"arch", "image_size", "lr", "normalize"}
    assert out["splits"] == {"train": 16, "val": 4, "test": 4} and out["classes"] == 2
    assert len(resolutions) == 1
    assert RunStore(Workspace.open(root).runs_db).list_runs() == []  # nothing recorded
    assert main(["train", str(colours), "--dry-run", "--workspace", str(root)]) == 0
    text = capsys.readouterr().out
    assert "dry run: nothing was trained or recorded" in text
    assert f"network lenet, input 16 px, {plan.batch_size} images a step at a rate of {plan.lr:g}, " in text
