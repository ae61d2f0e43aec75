"""From a stored label check to cleaned copies on the command line (issue 27): ``dedup DATASET --apply relabel`` takes
every suggestion, ``drop-suspects`` drops every suspect, both take the sure suggestions and drop the rest; without a
stored check the policies are refused in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.labels.decisions import RELABEL_WHEN_SURE, automatic_fixes, stored_issues
from tests import imagefactory as f
from tests.cli.test_cli import run_cli
from tests.labels import Flipped, plant_flips
from tests.support import TrainedRun, copy_workspace


@pytest.fixture
def checked(trained_colours: TrainedRun, tmp_path: Path, capsys) -> tuple[TrainedRun, Flipped, dict]:
    run = copy_workspace(trained_colours, tmp_path / "ws")
    flipped = plant_flips(f.write_colour_classes(tmp_path / "colours", 40, size=(16, 12), seed=50), tmp_path / "flip")
    code, out, err = run_cli(["label-issues", str(flipped.root), "--run", str(run.run_id), "--json", "--workspace",
                              str(run.ws.root)], capsys)  # fmt: skip
    assert code == 0, err
    return run, flipped, json.loads(out)


def _apply(run: TrainedRun, flipped: Flipped, policies: str, capsys) -> dict:
    code, out, err = run_cli(["dedup", str(flipped.root), "--apply", policies, "--json", "--workspace",
                              str(run.ws.root)], capsys)  # fmt: skip
    assert code == 0, err
    return json.loads(out)["cleaned"]


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_the_stored_check_is_found_and_turned_into_decisions(checked) -> None:
    run, flipped, result = checked
    issues = stored_issues(run.ws, str(flipped.root.resolve()))
    assert issues is not None and len(issues.suspects) == result["n_suspects"] > 0
    both = automatic_fixes(issues, relabel=True, drop=True)
    sure = {r.path for r in issues.suspects.itertuples() if r.p_suggested >= RELABEL_WHEN_SURE}
    assert {p for p, new in both.items() if new is not None} == sure and set(both) == set(issues.suspects["path"])


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_dedup_applies_relabel_and_drop_suspects_from_the_stored_check(checked, capsys) -> None:
    run, flipped, result = checked
    suspects = {s["image"]: s["suggested"] for s in result["suspects"]}
    relabelled = _apply(run, flipped, "relabel", capsys)
    assert {r["path"]: r["new"] for r in relabelled["relabelled"]} == suspects
    dropped = _apply(run, flipped, "drop-suspects", capsys)
    assert {r["path"] for r in dropped["removed"]} == set(suspects)
    assert dropped["n_images"] == result["n_images"] - len(suspects)


def test_label_policies_without_a_check_are_refused_in_words(tmp_path: Path, capsys) -> None:
    colours = f.write_colour_classes(tmp_path / "colours", 6, size=(8, 8))
    code, _, err = run_cli(["dedup", str(colours), "--apply", "relabel", "--workspace", str(tmp_path / "ws")], capsys)
    assert code == 2 and "check the labels first" in err
