"""``python -m core search``, ``lr-find`` and ``train --from-run``: the command-line contract (core/cli/main.py), on
real runs (a small colour folder; LeNet for an epoch or two)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import main
from core.store.runs import RunStore
from tests import imagefactory as f
from tests.support import ROOT


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    return f.write_colour_classes(tmp_path / "colours", 20)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_search_json_follows_the_contract(colours: Path, tmp_path: Path, capsys) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"optimizer": ["sgd", "adam"], "lr": {"low": 0.01, "high": 0.1, "log": True}}))
    ws = str(tmp_path / "ws")
    code, out, err = _run(["search", str(colours), "--space", str(space), "--trials", "3", "--epochs", "1",
                           "--arch", "lenet", "--batch-size", "16", "--workspace", ws, "--json"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert {"search_id", "trials", "best_run_id"} <= set(result) and len(result["trials"]) == 3
    for trial in result["trials"]:
        assert {"run_id", "params", "status", "value"} <= set(trial) and trial["status"] == "completed"
        assert set(trial["params"]) == {"optimizer", "lr"} and 0.01 <= trial["params"]["lr"] <= 0.1
    assert result["best_run_id"] == max(result["trials"], key=lambda t: t["value"])["run_id"]
    store = RunStore(Path(ws) / "runs.sqlite")
    assert store.get_run(result["search_id"]).kind == "search"
    assert all(store.get_run(t["run_id"]).parent_id == result["search_id"] for t in result["trials"])


def test_a_grid_given_inline_without_json_prints_a_table(colours: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = _run(["search", str(colours), "--space", '{"lr": [0.05, 0.1]}', "--method", "grid", "--epochs",
                         "1", "--arch", "lenet", "--workspace", str(tmp_path / "ws")], capsys)  # fmt: skip
    assert code == 0
    assert "search 1 completed: 2 trials (grid, by val_acc)" in out and "best: run " in out


def test_a_search_at_chance_names_no_best_and_flags_its_trials(tmp_path: Path, capsys) -> None:
    from tests.train.test_guard import write_meaningless_labels

    data = str(write_meaningless_labels(tmp_path / "noise"))
    argv = ["search", data, "--space", '{"optimizer": ["sgd", "adam"], "lr": {"low": 0.01, "high": 0.3, "steps": 2}}',
            "--method", "grid", "--epochs", "2", "--arch", "lenet", "--batch-size", "16", "--workspace", str(tmp_path / "ws")]  # fmt: skip
    code, out, err = _run([*argv, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["best_run_id"] is None and result["best_value"] is None
    assert result["best_why"].startswith("No trial learned: every score is about chance (33.3%")
    assert all(t["at_chance"] and t["chance"] == pytest.approx(1 / 3) for t in result["trials"])
    assert any("lie far outside Adam's usual range (1e-4 to 3e-3)" in w for w in result["warnings"])
    code, out, err = _run(argv, capsys)  # the same search again, as text
    assert code == 0, err
    assert "about chance (33.3%" in out and "best: none: No trial learned" in out
    assert "warning: Learning rates 0.01 to 0.3 lie far outside Adam's usual range" in err
    assert "Learning rate: from 0.01 to 0.3 (evenly)" in err  # the space in words, before the trials


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--space", '{"lr": ["fast"]}'], "lr: 'fast' is not a number"),
        (["--space", '{"dataset": ["x"]}'], "dataset cannot be searched"),
        (["--space", "{nope"], "not valid JSON"),
        (["--space", "MISSING/space.json"], "cannot read the search space"),
        ([], "give --space FILE.json"),
        (["--space", '{"lr": [0.1]}', "--method", "best"], "invalid choice: 'best'"),
    ],
)
def test_bad_search_input_is_one_error_line(extra, message, colours: Path, tmp_path: Path, capsys) -> None:
    argv = ["search", str(colours), *[e.replace("MISSING", str(tmp_path)) for e in extra], "--workspace",
            str(tmp_path / "w")]  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own checks
        code = exit_.code
    out, err = capsys.readouterr()
    assert (code, out) == (2, "") and err.startswith("error: ") and err.count("\n") == 1
    assert message in err, err
    assert RunStore(tmp_path / "w" / "runs.sqlite").list_runs() == []


def test_lr_find_json_follows_the_contract_and_leaves_no_run(colours: Path, tmp_path: Path, capsys) -> None:
    ws = tmp_path / "ws"
    code, out, err = _run(["lr-find", str(colours), "--arch", "lenet", "--batch-size", "8", "--steps", "40",
                           "--workspace", str(ws), "--json"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert {"lrs", "losses", "suggested"} <= set(result) and len(result["lrs"]) == len(result["losses"])
    assert result["lrs"][0] < result["suggested"] < result["lrs"][-1] and result["rule"] == "valley"
    assert RunStore(ws / "runs.sqlite").list_runs() == []
    code, out, _ = _run(["lr-find", str(colours), "--steps", "40", "--workspace", str(ws)], capsys)
    assert code == 0 and out.startswith("suggested learning rate ") and "(valley rule)" in out


def test_train_from_run_records_the_parent(colours: Path, tmp_path: Path, capsys) -> None:
    ws = str(tmp_path / "ws")
    common = ["--arch", "lenet", "--epochs", "1", "--batch-size", "16", "--workspace", ws, "--json"]
    code, out, err = _run(["train", str(colours), *common], capsys)
    assert code == 0, err
    parent = json.loads(out)["run_id"]
    code, out, err = _run(["train", str(colours), "--from-run", str(parent), *common], capsys)
    assert code == 0, err
    child = json.loads(out)
    assert child["parent_id"] == parent and child["status"] == "completed"
    code, _, err = _run(["train", str(colours), "--from-run", "77", *common], capsys)
    assert code == 2 and err == "error: unknown run 77\n"


def test_help_lists_the_commands_without_loading_torch_or_optuna(capsys) -> None:
    code = (
        "import sys, contextlib, io\n"
        "from core.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('search' in out.getvalue() and 'lr-find' in out.getvalue())\n"
        "print(sorted(m for m in ('torch', 'pandas', 'optuna') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "[]"]
    for command in ("search", "lr-find"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert exit_.value.code == 0 and "--workspace" in text and "--batch-size" in text, command
