"""core.train.lr_find: fastai's learning-rate finder on real training steps; it leaves no run behind and does not
change the run started after it. The acceptance test trains the default recipe at the suggested rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from core.train.lr_find import END_LR, START_LR, find_lr, valley
from tests import imagefactory as f


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    root = tmp_path / "colours"
    for label, colour in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        for i in range(24):
            f.write_rgb(root / label / f"{i}.png", size=(12, 12), color=colour, seed=i)
    return root


def test_valley_takes_the_rate_a_little_under_halfway_down_the_longest_fall() -> None:
    lrs = list(np.geomspace(1e-7, 10, 100))
    # Flat, then a steady fall from step 40 to step 79, then a blow-up.
    losses = [2.3] * 40 + list(np.linspace(2.3, 0.5, 40)) + list(np.linspace(0.6, 9, 20))
    rate, loss = valley(lrs, losses)
    # As fastai: the first 10 and last 5 steps are left out; in what is left the longest fall starts at 29 (fastai
    # counts from one before its first point) and ends at 69, and the pick is a third plus a sixth of the 40 steps
    # along: 29 + int(13.3) + int(6.7) = 48.
    assert rate == pytest.approx(lrs[10 + 48]) and loss == pytest.approx(losses[10 + 48])
    with pytest.raises(CoreError):
        valley(lrs[:6], losses[:6])


def test_a_sweep_rises_exponentially_and_leaves_nothing_behind(colours: Path, ws: Workspace) -> None:
    config = TrainConfig(dataset=str(colours), arch="lenet", batch_size=8)
    before = torch.get_rng_state()
    finding = find_lr(config, ws, steps=60)
    assert torch.equal(before, torch.get_rng_state())  # the caller's random stream is untouched
    assert len(finding.lrs) == len(finding.losses) and 20 <= len(finding.lrs) <= 60
    ratios = np.diff(np.log(finding.lrs))
    assert np.allclose(ratios, np.log(END_LR / START_LR) / 59)  # one exponential ramp from 1e-7 towards 10
    assert finding.lrs[0] == pytest.approx(START_LR)
    assert finding.lrs[0] < finding.suggested < finding.lrs[-1]
    assert min(finding.losses) < finding.losses[0]  # the loss fell somewhere on the way
    assert finding.to_json().keys() >= {"lrs", "losses", "suggested", "rule"}
    assert RunStore(ws.runs_db).list_runs() == [] and not any(ws.checkpoints.iterdir())


def test_a_run_after_a_sweep_is_the_run_it_would_have_been(colours: Path, tmp_path: Path) -> None:
    def train(ws: Workspace) -> list[float]:
        store = RunStore(ws.runs_db)
        registry = JobRegistry(store)
        run = train_run.submit_training(registry, ws, TrainConfig(dataset=str(colours), arch="lenet", epochs=1,
                                                                  batch_size=8, log_every=1))  # fmt: skip
        assert registry.wait(run, timeout=300).status == "completed"
        return list(store.metrics(run, ["train_loss"])["value"])

    plain = train(Workspace.open(tmp_path / "a"))
    swept = Workspace.open(tmp_path / "b")
    find_lr(TrainConfig(dataset=str(colours), arch="lenet", batch_size=8), swept, steps=30)
    assert train(swept) == plain


def test_bad_sweeps_are_refused(colours: Path, ws: Workspace) -> None:
    with pytest.raises(CoreError, match="at least 20 steps"):
        find_lr(TrainConfig(dataset=str(colours)), ws, steps=5)


@pytest.mark.slow
def test_the_suggested_rate_trains_the_default_recipe_to_97_percent(digits_ws: Workspace, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws").with_roots(digits_ws.datasets)
    dataset = str(digits_ws.datasets / "sample-digits")
    finding = find_lr(TrainConfig(dataset=dataset), ws)
    store = RunStore(ws.runs_db)
    registry = JobRegistry(store)
    run = train_run.submit_training(registry, ws, TrainConfig(dataset=dataset, lr=finding.suggested))
    assert registry.wait(run, timeout=900).status == "completed"
    result = train_run.result_json(store, run, ws)
    print(f"lr-find suggested {finding.suggested:.3g} in {finding.seconds:.1f} s; test accuracy "
          f"{result['test']['accuracy']:.1%} after {len(result['epochs'])} epochs")  # fmt: skip
    assert result["arch"] == "lenet" and result["test"]["accuracy"] >= 0.97
