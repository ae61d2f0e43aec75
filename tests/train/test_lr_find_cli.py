"""``python -m core lr-find``: on a curve that never falls it suggests nothing and says why (``"suggested": null``
and a ``"why"``), and it says how long the sweep will take before it starts. Real sweeps of LeNet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli.main import main
from core.store.runs import RunStore
from tests import imagefactory as f


@pytest.fixture
def same(tmp_path: Path) -> Path:
    """Three classes of the very same picture: the labels carry no signal, and no network can learn them."""
    for label in ("a", "b", "c"):
        for i in range(30):
            f.write_rgb(tmp_path / "same" / label / f"{i}.png", size=(16, 16), color=(120, 120, 120))
    return tmp_path / "same"


def test_lr_find_on_a_flat_curve_suggests_nothing_and_says_why(same: Path, tmp_path: Path, capsys) -> None:
    ws = tmp_path / "ws"
    common = [str(same), "--arch", "lenet", "--batch-size", "16", "--steps", "40", "--workspace", str(ws)]
    assert main(["lr-find", *common, "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["suggested"] is None and result["run_lr"] > 0
    assert result["why"].startswith("the loss did not fall anywhere in the range: keeping the recipe's rate "
                                    f"{result['run_lr']:g}")  # fmt: skip
    assert result["estimated_seconds"] > 0 and err == ""  # --json: nothing but the object
    assert main(["lr-find", *common, "--lr", "0.05"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("no learning rate suggested: the loss did not fall anywhere in the range: keeping your "
                          "rate 0.05")  # fmt: skip
    assert err.startswith("sweeping up to 40 steps of rising learning rates: about ")  # before the sweep began
    assert RunStore(ws / "runs.sqlite").list_runs() == []


def test_lr_find_says_its_suggestion_and_why(tmp_path: Path, capsys) -> None:
    colours = f.write_colour_classes(tmp_path / "colours", 20)
    code = main(["lr-find", str(colours), "--arch", "lenet", "--batch-size", "8", "--steps", "40", "--workspace",
                 str(tmp_path / "ws")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    first, why = out.splitlines()[:2]
    assert first.startswith("suggested learning rate ") and "(valley rule)" in first
    assert why.startswith("the loss fell from ") and "sweeping up to 40 steps" in err
