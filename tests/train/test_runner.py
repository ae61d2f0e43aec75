"""core.train.runner + the ``train`` command: real runs through the job registry, the run store and checkpoints.

Small real trainings on a 3-class folder of generated images; the SIGKILL test kills a real
``python -m core train`` process in the middle and resumes the crashed run to its end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import main
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.checkpoints import load_checkpoint
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests import imagefactory as f
from tests.support import ROOT, cancel_after_first_checkpoint, wait_until

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """3 colour classes x 24 images of 12x12 px with noise: learnable in a couple of epochs."""
    root = tmp_path / "colours"
    for label, colour in COLOURS.items():
        for i in range(24):
            f.write_rgb(root / label / f"{i}.png", size=(12, 12), color=colour, seed=i)
    return root


def _config(dataset: Path | str, **kw) -> TrainConfig:
    return TrainConfig(
        **{"dataset": str(dataset), "arch": "lenet", "epochs": 2, "batch_size": 16, "log_every": 1, **kw}
    )


def test_a_run_trains_in_the_background_and_records_everything(shapes: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, _config(shapes))
    job = registry.wait(run_id, timeout=300)
    assert job.status == "completed", job.error
    run = store.get_run(run_id)
    assert (run.status, run.arch, run.device) == ("completed", "lenet", "cpu")
    result = train_run.result_json(store, run_id, ws)
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert set(result["epochs"][0]) >= {"epoch", "train_loss", "val_loss", "val_acc", "seconds"}
    assert 0 <= result["test"]["accuracy"] <= 1
    assert Path(result["checkpoint"]).is_file()
    steps = store.metrics(run_id, ["train_loss"])
    assert len(steps) >= 2  # per-step curve points, not only epochs
    kinds = {a["kind"] for a in store.artifacts(run_id)}
    assert kinds >= {"best", "last", "splits"}
    splits = (run_folder.run_dir(ws, run_id) / run_folder.SPLITS_FILE).read_text()
    assert splits.startswith("path,label,split")


def test_cancel_then_resume_keeps_the_run_id_and_every_epoch(shapes: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, _config(shapes, epochs=3))
    cancel_after_first_checkpoint(registry, run_id, run_folder.checkpoint_path(ws, run_id, "last"))
    assert registry.wait(run_id, timeout=120).status == "cancelled"
    assert store.get_run(run_id).status == "cancelled"
    train_run.resume_training(registry, ws, run_id)
    job = registry.wait(run_id, timeout=300)
    assert job.status == "completed", job.error
    epochs = train_run.result_json(store, run_id, ws)["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]


def test_a_run_resumes_at_the_size_its_checkpoint_has_though_the_automatic_choice_changed(
    shapes: Path, ws: Workspace
) -> None:
    """A run left to the automatic input size, started by a version whose choice differed (ResNets: 96 px before,
    112 now), resumes at its checkpoint's size instead of failing on data prepared at the new one."""
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, _config(shapes, epochs=3, image_size=32))  # auto: 16 px
    cancel_after_first_checkpoint(registry, run_id, run_folder.checkpoint_path(ws, run_id, "last"))
    assert registry.wait(run_id, timeout=120).status == "cancelled"
    store.describe(run_id, config={**store.get_run(run_id).config, "image_size": 0})  # as the older version stored it
    store.log_params(run_id, {"plan": None})  # ... without a plan: its checkpoint's is read (core.train.checkpoints)
    train_run.resume_training(registry, ws, run_id)
    job = registry.wait(run_id, timeout=300)
    assert job.status == "completed", job.error
    assert [e["epoch"] for e in train_run.result_json(store, run_id, ws)["epochs"]] == [1, 2, 3]
    assert load_checkpoint(run_folder.checkpoint_path(ws, run_id, "last")).image_size == 32


def test_resume_refuses_runs_that_cannot_resume(shapes: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    queued = store.create_run(dataset=str(shapes))
    with pytest.raises(Exception, match="only crashed, cancelled, failed"):
        train_run.resume_training(registry, ws, queued)
    store.set_status(queued, "failed", error="x")
    with pytest.raises(Exception, match="no checkpoint"):
        train_run.resume_training(registry, ws, queued)


def test_delete_removes_the_checkpoints_too(shapes: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, _config(shapes, epochs=1))
    registry.wait(run_id, timeout=300)
    folder = run_folder.run_dir(ws, run_id)
    assert folder.is_dir()
    run_folder.delete_run(store, ws, run_id)
    assert not folder.exists()
    assert store.list_runs() == []


def test_a_weights_upload_is_kept_by_content(ws: Workspace) -> None:
    a = train_run.save_weights_upload(ws, b"abc", "my weights!.pth")
    b = train_run.save_weights_upload(ws, b"abc", "my weights!.pth")
    assert a == b and a.read_bytes() == b"abc" and a.parent == ws.uploads / "weights"
    assert " " not in a.name and "!" not in a.name


def test_cli_train_json_follows_the_contract(shapes: Path, tmp_path: Path, capsys) -> None:
    code = main(["train", str(shapes), "--arch", "lenet", "--epochs", "1", "--batch-size", "16",
                 "--workspace", str(tmp_path / "ws"), "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"run_id", "status", "epochs", "test", "wall_s"}
    assert result["status"] == "completed" and len(result["epochs"]) == 1
    assert "accuracy" in result["test"]
    assert main(["runs", "--workspace", str(tmp_path / "ws"), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)  # the score and the number of images it was measured on
    assert row["test_accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert row["splits"] == {"train": 48, "val": 12, "test": 12}  # 3 classes of 24: 16 / 4 / 4 each


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "give a DATASET"),
        (["train", "{shapes}", "--lr", "-1"], "lr"),
        (["train", "{shapes}", "--resume", "1"], "drop DATASET"),
        (["train", "--resume", "7"], "unknown run 7"),
        (["train", "{shapes}", "--weights", "{shapes}/red/0.png"], "could not be read as a PyTorch file"),
    ],
)
def test_cli_train_bad_input_is_one_line(argv, message, shapes: Path, tmp_path: Path, capsys) -> None:
    argv = [a.format(shapes=shapes) for a in argv] + ["--workspace", str(tmp_path / "ws")]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_killed_training_process_shows_crashed_and_resumes_to_the_end(shapes: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    argv = [sys.executable, "-m", "core", "train", str(shapes), "--arch", "lenet", "--epochs", "4",
            "--batch-size", "8", "--workspace", str(ws), "--json"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = ws / "checkpoints" / "run-1" / "last.pt"
    wait_until(last.is_file, timeout=300, what="the first checkpoint of the CLI run", process=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = RunStore(ws / "runs.sqlite")
    assert store.get_run(1).status == "crashed"
    assert not list(last.parent.glob("*.tmp")) and not list(last.parent.glob(".*.tmp"))  # nothing half-written
    done = subprocess.run([sys.executable, "-m", "core", "train", "--resume", "1", "--workspace", str(ws), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["run_id"] == 1 and result["status"] == "completed"
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4]


def test_an_auto_run_is_named_after_the_network_it_chose(shapes: Path, ws: Workspace) -> None:
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run_id = train_run.submit_training(registry, ws, TrainConfig(dataset=str(shapes), epochs=1, batch_size=16))
    assert store.get_run(run_id).arch is None  # unknown until the images are seen
    assert registry.wait(run_id, timeout=300).status == "completed"
    run = store.get_run(run_id)
    assert (run.arch, run.name, run.config["arch"]) == ("lenet", f"lenet-{run_id}", "auto")
