"""``python -m core label-issues DATASET --run RUN``: the command-line contract (JSON fields, words, one-line errors)
on a real trained run and a dataset with planted wrong labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.datasets.sources import resolve_dataset
from core.labels.probabilities import load_out_of_sample
from core.store.runs import RunStore
from tests import imagefactory as f
from tests.cli.test_cli import run_cli
from tests.labels import Flipped, plant_flips
from tests.support import TrainedRun, copy_workspace

SUSPECT_KEYS = {"image", "given", "suggested", "p_given", "p_suggested", "rank"}


@pytest.fixture
def colours_run(trained_colours: TrainedRun, tmp_path: Path) -> TrainedRun:
    """The 1-epoch colour LeNet in a copy of its workspace (the command writes caches there)."""
    return copy_workspace(trained_colours, tmp_path / "ws")


@pytest.fixture
def flipped(tmp_path: Path) -> Flipped:
    """3 colours x 40 images of 16 x 12 px, 6 of them in another colour's folder."""
    return plant_flips(f.write_colour_classes(tmp_path / "colours", 40, size=(16, 12), seed=50), tmp_path / "flipped")


def test_quick_json(colours_run: TrainedRun, flipped: Flipped, capsys: pytest.CaptureFixture[str]) -> None:
    ws = str(colours_run.ws.root)
    code, out, err = run_cli(["label-issues", str(flipped.root), "--run", str(colours_run.run_id), "--json",
                              "--workspace", ws], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert {"n_images", "n_suspects", "suspects", "per_class", "classes", "left_out"} <= set(result)
    assert result["n_images"] == 120 and result["mode"] == "quick" and result["folds"] == 5
    assert result["run"] == colours_run.run_id and result["left_out"] == [] and result["fold_runs"] == []
    suspects = result["suspects"]
    assert result["n_suspects"] == len(suspects) > 0
    assert all(set(s) == SUSPECT_KEYS and s["suggested"] != s["given"] for s in suspects)
    assert [s["rank"] for s in suspects] == list(range(1, len(suspects) + 1))
    assert [s["p_given"] for s in suspects] == sorted(s["p_given"] for s in suspects)  # least sure of its label first
    assert all(s["image"].split("/")[0] == s["given"] for s in suspects)  # paths as the dataset names them
    assert all(0 <= s["p_given"] < s["p_suggested"] <= 1 for s in suspects)
    assert [c["class"] for c in result["per_class"]] == result["classes"] == ["blue", "green", "red"]
    assert sum(c["n_suspects"] for c in result["per_class"]) == len(suspects)
    assert all(sum(c["suggested"].values()) == c["n_suspects"] for c in result["per_class"])
    # Kept for the page and for dedup --apply relabel,drop-suspects.
    spec = resolve_dataset(str(flipped.root), colours_run.ws).spec
    kept = load_out_of_sample(colours_run.ws, spec, colours_run.run_id, "quick")
    assert kept is not None and len(kept.paths) == 120


def test_quick_words(colours_run: TrainedRun, flipped: Flipped, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["label-issues", str(flipped.root), "--run", str(colours_run.run_id),
                              "--workspace", str(colours_run.ws.root)], capsys)  # fmt: skip
    assert code == 0, err
    first = out.splitlines()[0]
    assert "of 120 images" in first and "probably carry a wrong label" in first and "quick mode" in first
    assert "rank" in out and "suggested" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--run", "99"], "99", id="unknown-run"),
        pytest.param(["--run", "{run}", "--folds", "1"], "folds 1: expected a whole number from 2 to 20", id="folds"),
        pytest.param(["--run", "{run}", "--mode", "fast"], "invalid choice: 'fast'", id="mode"),
        pytest.param([], "the following arguments are required: --run", id="no-run"),
    ],
)
def test_bad_input_is_one_line(
    colours_run: TrainedRun, flipped: Flipped, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["label-issues", str(flipped.root), *[a.format(run=colours_run.run_id) for a in extra],
            "--workspace", str(colours_run.ws.root)]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "label-issues" in out


def test_thorough_trains_the_folds_then_says_the_same(
    colours_run: TrainedRun, flipped: Flipped, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two folds, each an ordinary run with the colour run's settings (LeNet, one epoch: seconds), trained in this
    process."""
    code, out, err = run_cli(["label-issues", str(flipped.root), "--run", str(colours_run.run_id), "--mode",
                              "thorough", "--folds", "2", "--json", "--workspace", str(colours_run.ws.root)],
                             capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "thorough" and result["folds"] == 2 and result["n_images"] == 120
    assert all(set(s) == SUSPECT_KEYS for s in result["suspects"])
    store = RunStore(colours_run.ws.runs_db)
    assert len(result["fold_runs"]) == 2
    assert all(store.get_run(r).status == "completed" for r in result["fold_runs"])
