"""The command line refuses settings beyond their bounds, and a run too big for this machine's memory, with one
``error:`` line and exit 2 before anything is recorded (issue 22)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import main
from core.common.cpu import usable_cores
from core.store.runs import RunStore
from tests import imagefactory as fx
from tests.support import ROOT


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return fx.write_colour_classes(tmp_path / "colours", 4)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of ``argv`` (exit 2, nothing on stdout)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks leave this way, as `python -m core` does
        code = exc.code
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--image-size", "100000"], "argument --image-size: 100000 is too large: at most 1024"),
        (["--ranks", "1000"], "argument --ranks: 1000 is too large: at most 64"),
        (["--epochs", "1000000000000"], "argument --epochs: 1000000000000 is too large: at most 1000"),
        (["--batch-size", "-1"], "argument --batch-size: -1 is too small: at least 0"),  # 0 = automatic
        (["--lr", "inf"], "argument --lr: inf is not a finite number"),
        (["--lr", "nan"], "argument --lr: nan is not a finite number"),
        (["--momentum", "1"], "argument --momentum: 1 is too large: below 1"),
        (["--milestones", "3", "1000000"], "argument --milestones: 1000000 is too large: at most 1000"),
        (["--image-size", "big"], "argument --image-size: 'big' is not a whole number"),
    ],
)
def test_train_options_beyond_their_bounds_are_one_error_line(
    options: list[str], says: str, colours: Path, tmp_path: Path, capsys
) -> None:
    err = _refused(["train", str(colours), *options, "--workspace", str(tmp_path / "w")], capsys)
    assert says in err, err
    assert not (tmp_path / "w" / "runs.sqlite").exists() or RunStore(tmp_path / "w" / "runs.sqlite").list_runs() == []


def test_a_run_too_big_for_memory_is_refused_with_the_estimate(colours: Path, tmp_path: Path, capsys) -> None:
    argv = ["train", str(colours), "--arch", "resnet50", "--image-size", "1024", "--batch-size", "4096",
            "--workspace", str(tmp_path / "w")]  # fmt: skip
    err = _refused(argv, capsys)
    assert "this run would need about" in err and "is free" in err, err
    assert RunStore(tmp_path / "w" / "runs.sqlite").list_runs() == []


def test_more_processes_than_cores_is_refused(colours: Path, tmp_path: Path, capsys) -> None:
    cores = usable_cores()
    err = _refused(["train", str(colours), "--arch", "lenet", "--ranks", str(cores + 1), "--workspace",
                    str(tmp_path / "w")], capsys)  # fmt: skip
    assert f"this machine has {cores} usable core" in err, err


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--space", '{"lr": {"low": 0.001, "high": 0.1, "steps": 10000000}}'], 'lr: "steps" is at most'),
        (["--space", '{"lr": [Infinity]}'], "lr inf: expected a finite number"),
        (["--space", '{"epochs": [1e12]}'], "epochs 1000000000000: expected a number <= 1000"),
        (["--space", '{"lr": [0.1]}', "--trials", "1000000"], "argument --trials: 1000000 is too large"),
        (["--space", '{"lr": [0.1]}', "--image-size", "5000"], "argument --image-size: 5000 is too large"),
    ],
)
def test_search_bounds_are_one_error_line(options: list[str], says: str, colours: Path, tmp_path: Path,
                                          capsys) -> None:  # fmt: skip
    err = _refused(["search", str(colours), *options, "--workspace", str(tmp_path / "w")], capsys)
    assert says in err, err


def test_lr_find_steps_are_bounded(colours: Path, tmp_path: Path, capsys) -> None:
    err = _refused(["lr-find", str(colours), "--steps", "1000000000", "--workspace", str(tmp_path / "w")], capsys)
    assert "argument --steps: 1000000000 is too large" in err, err


def test_as_a_real_process_the_refusal_is_exit_2_without_a_traceback(colours: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "core", "train", str(colours), "--image-size", "100000",
                           "--workspace", str(tmp_path / "w")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and "at most 1024" in done.stderr


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--steps", "10000000"], "argument --steps: 10000000 is too large: at most 10000"),
        (["--repeats", "1000000"], "argument --repeats: 1000000 is too large: at most 20"),
        (["--epochs", "1e12"], "argument --epochs: 1e12 is too large: at most 1000"),
        (["--threads-per-worker", "100000"], "argument --threads-per-worker: 100000 is too large: at most 256"),
        (["--workers", "1,100000"], "workers 100000: expected a whole number from 1 to 64"),
        (["--workers", ",".join(map(str, range(1, 18)))], "give 1 to 16 worker counts, got 17"),
    ],
)
def test_a_sweep_beyond_its_bounds_is_refused_before_any_point_runs(
    options: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    err = _refused(["sweep", "train", "sample:digits", *options, "--workspace", str(ws)], capsys)
    assert says in err, err
    assert RunStore(ws / "runs.sqlite").list_runs() == []
