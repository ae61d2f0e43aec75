"""The divergence guard (``core.train.guard``) and the verdict on a finished run (``core.train.verdict``).

The rule is checked on loss sequences measured in real runs (the issue's coloured textures ran away 1.12 -> 1.32 ->
6.05); the guard's restarts, its checkpoint and resume, and its give-up on real short trainings of a tiny colour set
(3 classes x 10 images, as in ``test_fit``); "did not learn" end to end through ``python -m core train --json`` on a
set whose labels say nothing about the images. A rate of 10 on the digits, caught and learning, is in
``tests/pages/test_guard_pages.py`` with the Runs page that says so.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.common.workspace import Workspace
from core.train.checkpoints import load_checkpoint
from core.train.config import TrainConfig
from core.train.fit import TrainCallbacks, fit
from core.train.guard import MAX_RESTARTS, RUNAWAY_RATIO, Guard, Runaway
from core.train.prepare import PreparedData, prepare
from core.train.verdict import DID_NOT_LEARN, LEARNED, judge
from tests import imagefactory as f

COLOURS = ("red", "green", "blue")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny runs: see tests/train/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    base = tmp_path_factory.mktemp("tiny")
    root = f.write_colour_classes(base / "colours", 10, size=(16, 16), labels=COLOURS)
    return Workspace.open(base / "ws").with_roots(base), root


def _config(root: Path, **changes: object) -> TrainConfig:
    return replace(TrainConfig(dataset=str(root), epochs=1, batch_size=8, image_size=32, log_every=1), **changes)


def _prepared(tiny: tuple[Workspace, Path], **changes: object) -> PreparedData:
    ws, root = tiny
    return prepare(_config(root, **changes), ws)


def _watch(guard: Guard, losses: list[float]) -> int | None:
    """The step (from 1) at which ``guard`` says stop, or None."""
    for step, loss in enumerate(losses, 1):
        if guard.watch(step, torch.tensor(loss)):
            return step
    return None


# --- the rule ---------------------------------------------------------------------------------------------------


def test_a_loss_that_is_not_a_number_stops_the_epoch_at_once() -> None:
    assert _watch(Guard(10, 0.1, torch.device("cpu")), [2.3, 2.1, 1.9, math.nan, 1.0]) == 4
    assert _watch(Guard(10, 0.1, torch.device("cpu")), [2.3, math.inf]) == 2


def test_the_issues_small_set_runs_away_at_the_step_its_loss_jumped() -> None:
    # ResNet-18 at 112 px on 60 coloured textures, one step per epoch: the steps' losses of the issue's run.
    assert _watch(Guard(3, 0.1, torch.device("cpu")), [1.1247, 1.3238, 6.0470, 5.5276, 17.944]) == 3


def test_a_loss_climbing_past_twice_its_lowest_and_a_blind_guess_runs_away() -> None:
    falling = [2.3 - 1.3 * i / 30 for i in range(30)]  # to 1.0
    climbing = [1.0 + 0.1 * i for i in range(1, 40)]  # to 4.9
    stop = _watch(Guard(10, 0.1, torch.device("cpu")), falling + climbing)
    assert stop is not None and stop > 30
    guard = Guard(10, 0.1, torch.device("cpu"))
    _watch(guard, (falling + climbing)[:stop])
    assert guard.smoothed() > max(RUNAWAY_RATIO * guard.lowest, math.log(10))


def test_a_warm_restart_below_a_blind_guess_is_healthy() -> None:
    # The cycles schedule's next cycle lifts a loss of 0.02 to 0.6 (30 x its lowest), and it falls again.
    falling = [2.3 * 0.9**i for i in range(60)]
    restart = [0.6] * 20 + [0.6 * 0.9**i for i in range(40)]
    assert _watch(Guard(10, 0.1, torch.device("cpu")), falling + restart) is None


def test_an_event_is_said_in_words_and_stored_as_json() -> None:
    event = Runaway(3, 250, 7.5, 1.2, 2, 200, 0.025, 0.25, False)
    assert event.words() == "the loss ran away at epoch 3; restarted from epoch 2 at a quarter of the rate (0.025)"
    start = Runaway(1, 4, math.nan, 2.3, 0, 0, 0.1 / 64, 1 / 64, True)
    assert start.words() == ("the loss became not a number at epoch 1 again, at 1/64 of the rate; gave up: the run "
                             "ends as it was at the start")  # fmt: skip
    stored = json.loads(json.dumps(start.to_dict(), allow_nan=False))  # NaN is null: strict JSON
    assert stored["loss"] is None and stored["words"] == start.words()
    assert Runaway.from_dict(stored).words() == start.words()


# --- the verdict ------------------------------------------------------------------------------------------------


def _epochs(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"train_loss": loss, "val_acc": acc} for loss, acc in pairs]


def test_a_run_learned_when_it_beats_chance_and_its_loss_fell() -> None:
    verdict = judge(gave_up=None, epochs=_epochs((1.0, 0.6), (0.3, 0.95)), first_loss=1.1,
                    val_counts={"a": 20, "b": 20, "c": 20})  # fmt: skip
    assert (verdict.outcome, verdict.why, verdict.chance) == (LEARNED, "", pytest.approx(1 / 3))


def test_a_run_did_not_learn_when_the_guard_gave_up() -> None:
    verdict = judge(gave_up="the loss ran away at epoch 1 again", epochs=[], first_loss=1.1, val_counts={"a": 5})
    assert verdict.outcome == DID_NOT_LEARN and verdict.why.startswith("its loss kept running away (the loss ran")


def test_a_run_did_not_learn_at_chance_level_of_its_biggest_class() -> None:
    # 80% on a set of 80% cats is what always answering "cat" scores.
    verdict = judge(gave_up=None, epochs=_epochs((0.6, 0.78), (0.5, 0.8)), first_loss=0.7,
                    val_counts={"cat": 160, "dog": 40})  # fmt: skip
    assert verdict.outcome == DID_NOT_LEARN
    assert verdict.why == ("its best validation accuracy, 80.0% on 200 images, is about chance (80.0%: always "
                           "answering its biggest class)")  # fmt: skip


def test_a_validation_set_too_small_to_tell_leaves_the_verdict_to_the_loss() -> None:
    # 4 images of 2 classes: even 4 right out of 4 is within two standard errors of a coin.
    tiny_val = {"red": 2, "green": 2}
    assert judge(gave_up=None, epochs=_epochs((0.2, 0.5)), first_loss=0.7, val_counts=tiny_val).outcome == LEARNED
    flat = judge(gave_up=None, epochs=_epochs((0.9, 1.0)), first_loss=0.7, val_counts=tiny_val)
    assert flat.outcome == DID_NOT_LEARN and flat.why.startswith("its training loss did not fall: 0.9 over its last")


def test_a_loss_that_ends_above_its_start_but_below_a_blind_guess_is_not_a_failure() -> None:
    # A child run going on from its parent's weights starts near its lowest loss; noise may end it a little above.
    assert judge(gave_up=None, epochs=_epochs((0.55, 0.97)), first_loss=0.52,
                 val_counts={"a": 30, "b": 30, "c": 30}).outcome == LEARNED  # fmt: skip


def test_a_run_clearly_above_chance_learned_whatever_its_epochs_mean_loss() -> None:
    # One epoch of a search trial: 100% on 18 validation images, the epoch's mean loss (its first steps too) above the
    # first step's; it was called "did not learn" beside its 1.0000.
    verdict = judge(gave_up=None, epochs=_epochs((1.12, 1.0)), first_loss=1.10, val_counts={"a": 6, "b": 6, "c": 6})
    assert verdict.outcome == LEARNED


# --- the guard in real runs -------------------------------------------------------------------------------------


def test_a_runaway_mid_run_goes_back_lowers_the_rate_and_the_checkpoint_keeps_it(tiny, tmp_path: Path) -> None:
    # LeNet, one-cycle to a peak of 3 over 6 epochs (3 steps each): it runs away in epochs 1 and 2.
    seen: list[list[dict]] = []
    result = fit(_prepared(tiny, lr=3.0, epochs=6, schedule="onecycle"), checkpoint_dir=tmp_path,
                 callbacks=TrainCallbacks(on_runaway=seen.append))  # fmt: skip
    assert result.status == "completed" and [e["epoch"] for e in result.epochs] == [1, 2, 3, 4, 5, 6]
    words = [e["words"] for e in result.runaways]
    assert len(words) == 2 and seen[-1] == result.runaways
    assert words[0] == "the loss ran away at epoch 1; restarted from the start at a quarter of the rate (0.75)"
    assert words[1].endswith("at 1/16 of the rate (0.188)")
    last = load_checkpoint(tmp_path / "last.pt")
    assert [e["words"] for e in last.metrics["guard"]["events"]] == words
    assert last.scheduler["base_lrs"] == [pytest.approx(3.0 / 16)] * 2  # the whole schedule (both groups) at 1/16
    assert max(e["lr"] for e in result.epochs) <= 3.0 / 16 + 1e-9
    assert result.verdict is not None and result.verdict.learned and result.test["accuracy"] == 1.0


def test_a_run_cancelled_after_a_runaway_resumes_with_the_lower_rate_as_if_never_stopped(tiny, tmp_path: Path) -> None:
    data = _prepared(tiny, lr=3.0, epochs=6, schedule="onecycle")
    whole = fit(data, checkpoint_dir=tmp_path / "whole")
    cancel = threading.Event()
    first = fit(data, checkpoint_dir=tmp_path / "parts", cancel=cancel,
                callbacks=TrainCallbacks(on_runaway=lambda events: cancel.set()))  # fmt: skip
    assert first.status == "cancelled" and len(first.runaways) == 1
    saved = load_checkpoint(tmp_path / "parts" / "last.pt")
    assert saved.scheduler["base_lrs"] == [pytest.approx(3.0 / 4)] * 2 and saved.metrics["guard"]["scale"] == 0.25
    resumed = fit(data, checkpoint_dir=tmp_path / "parts", resume_from=tmp_path / "parts" / "last.pt")
    assert resumed.status == "completed" and resumed.steps == whole.steps
    assert resumed.runaways == whole.runaways  # the first event kept, the second met again at the same step
    for a, b in zip(whole.epochs, resumed.epochs, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert resumed.test["accuracy"] == whole.test["accuracy"]


def test_the_guard_gives_up_after_its_restarts_and_the_run_did_not_learn(tiny, tmp_path: Path) -> None:
    # RMSprop at a constant 10 runs away at every rate down to 10 / 64.
    result = fit(_prepared(tiny, lr=10.0, optimizer="rmsprop", schedule="none", epochs=2), checkpoint_dir=tmp_path)
    assert result.status == "completed" and len(result.runaways) == MAX_RESTARTS + 1
    assert [e["gave_up"] for e in result.runaways] == [False] * MAX_RESTARTS + [True]
    assert result.verdict is not None and result.verdict.outcome == DID_NOT_LEARN
    assert result.verdict.why.startswith("its loss kept running away (the loss ran away at epoch 1 again, at 1/64")
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()  # a finished run has both
    assert "accuracy" in result.test


# --- "did not learn" from the command line ------------------------------------------------------------------------


def write_meaningless_labels(root: Path, per_class: int = 40) -> Path:
    """Three classes whose images all come from one distribution (grey textures): the labels say nothing."""
    for c, label in enumerate(COLOURS):
        for i in range(per_class):
            f.write_rgb(root / label / f"{i}.png", size=(8, 8), color=(128, 128, 128), seed=c * per_class + i)
    return root


def test_a_run_on_meaningless_labels_ends_did_not_learn_in_train_json(tmp_path: Path, capsys) -> None:
    from core.cli.main import main
    from core.cli.train import _text

    data = write_meaningless_labels(tmp_path / "noise")
    assert main(["train", str(data), "--workspace", str(tmp_path / "ws"), "--epochs", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "completed" and result["outcome"] == DID_NOT_LEARN
    assert "is about chance (" in result["why"] and result["chance"] == pytest.approx(1 / 3, abs=0.05)
    assert _text(result).splitlines()[-1] == f"it did not learn: {result['why']}"  # what the command prints
    assert f"(chance level {result['chance']:.2%})" in _text(result)  # beside the test accuracy
