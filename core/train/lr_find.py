"""The learning-rate finder, as fastai's ``lr_find``: a short sweep of rising learning rates on the training split.

The rule (fastai 2.7, ``LRFinder`` and ``valley``, followed step for step):

* a fresh network, exactly as a run of the config would start (architecture, starting weights, freezing,
  optimizer, its backbone/head groups), trains for at most ``STEPS`` (100) batches of the training split while the
  learning rate rises exponentially from ``START_LR`` (1e-7) to ``END_LR`` (10);
* the loss is smoothed as fastai's ``AvgSmoothLoss`` (exponential average, beta 0.98, start-up bias corrected);
  the sweep stops early once the smoothed loss exceeds 4 times its lowest value (it diverged) or is not a number;
* the suggestion is fastai's default, the **valley**: on the curve without its first tenth and its last 5 points,
  the longest stretch over which the loss keeps falling, and within it the rate a third and a half of a third
  of the way along (past the flat start, before the steep end). fastai found it more robust than the steepest
  slope, which a bumpy curve puts anywhere.

It leaves nothing behind: no run in the store, no checkpoint (a child run's starting weights are prepared in a
temporary folder), and torch's random state is restored, so a run started afterwards is exactly the run it
would have been. Only the decoded-image cache, which any run would write, is kept.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.train.config import TrainConfig
from core.train.plan import check_run
from core.train.runplan import RunPlan

START_LR = 1e-7
END_LR = 10.0
STEPS = 100
MIN_STEPS, MAX_STEPS = 20, 1000  # fewer cannot show a valley; 1,000 steps are 10x fastai's sweep already
SMOOTH_BETA = 0.98  # fastai's AvgSmoothLoss
DIVERGED = 4.0  # the sweep stops when the smoothed loss is this many times its lowest value
RULE = "valley"
RULE_WORDS = ("the valley rule (fastai's default): within the longest stretch where the loss keeps falling, the "
              "rate a little under halfway along, past the flat start and before the steep end")  # fmt: skip


@dataclass
class LrFinding:
    """What a sweep found: every step's rate and smoothed loss, and the suggested rate."""

    lrs: list[float]
    losses: list[float]  # smoothed
    suggested: float
    suggested_loss: float
    diverged: bool  # stopped early because the loss blew up (the usual end: the rates went past useful)
    seconds: float
    config: TrainConfig  # the settings the sweep trained with (its plan's, lr aside)

    def to_json(self) -> dict[str, Any]:
        return {"lrs": self.lrs, "losses": self.losses, "suggested": self.suggested, "rule": RULE,
                "steps": len(self.lrs), "diverged": self.diverged, "seconds": round(self.seconds, 3),
                "arch": self.config.arch, "optimizer": self.config.optimizer}  # fmt: skip


def find_lr(source: TrainConfig | RunPlan, ws: Workspace, *, steps: int = STEPS, start_lr: float = START_LR,
            end_lr: float = END_LR, progress: Callable[[str, float], None] | None = None) -> LrFinding:  # fmt: skip
    """Sweep the learning rate for a run (its config, or its plan: the Train page's) on its training split and
    suggest one (see the module docstring).

    Args:
        progress: called with (what is happening, share done) while it prepares and sweeps.

    Raises:
        ConfigError: a bad option. DatasetError: the data cannot be trained on. CoreError: a sweep too short to
            suggest anything.
    """
    from core.train.prepare import prepare

    if not MIN_STEPS <= steps <= MAX_STEPS or not 0 < start_lr < end_lr:
        raise CoreError(f"a learning-rate sweep needs at least {MIN_STEPS} steps (at most {MAX_STEPS}) and 0 < start "
                        f"< end (got {steps} steps, {start_lr:g} to {end_lr:g})")  # fmt: skip
    began = time.perf_counter()
    if isinstance(source, RunPlan):  # it trains as a run would, in this process: refused if it cannot fit
        source = replace(source, config=replace(source.config, ranks=1))
        check_run(source, ws)
    else:
        seen = check_run(replace(_with_parent(source.validate(), ws), ranks=1), ws)
        source = seen.plan if seen is not None else _with_parent(source, ws)  # unreadable: prepare says why
    _say(progress, "reading the images", 0.0)
    data = prepare(source, ws)
    with tempfile.TemporaryDirectory(prefix="lr-find-") as scratch:
        settings = replace(data.config, weights=_weights(data, ws, Path(scratch)))
        devices = [torch.cuda.current_device()] if _device(settings).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's random streams come back untouched
            torch.manual_seed(settings.seed)
            lrs, losses, diverged = _sweep(settings, data, steps, start_lr, end_lr, progress)
    if len(lrs) < 20:
        raise CoreError(f"the loss blew up after {len(lrs)} steps, before any rate could be judged; lower the "
                        "starting rate or check the data")  # fmt: skip
    suggested, loss = valley(lrs, losses)
    return LrFinding(lrs, losses, suggested, loss, diverged, time.perf_counter() - began, settings)


def _with_parent(config: TrainConfig, ws: Workspace) -> TrainConfig:
    if not config.from_run:
        return config
    from core.store.runs import RunStore
    from core.train.transfer import with_parent

    return with_parent(config, RunStore(ws.runs_db), ws)


def _weights(data: Any, ws: Workspace, scratch: Path) -> str:
    """The starting weights of the sweep's network: a child's are made as its run would make them."""
    config = data.plan.config
    if not config.from_run:
        return config.weights
    from core.train.run_folder import checkpoint_path
    from core.train.transfer import starting_weights

    return str(starting_weights(checkpoint_path(ws, config.from_run), data, scratch))


def _device(config: TrainConfig) -> torch.device:
    from core.train.checkpoints import device_for

    return device_for(config.device)


class _Finder:
    """Watches each step of the sweep: records the rate it used and the smoothed loss (fastai's ``AvgSmoothLoss``),
    reports progress, and ends the sweep after ``steps`` steps or once the loss has blown up."""

    def __init__(self, steps: int, schedule: torch.optim.lr_scheduler.LambdaLR,
                 progress: Callable[[str, float], None] | None) -> None:  # fmt: skip
        self.steps, self.schedule, self.progress = steps, schedule, progress
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.average, self.best, self.diverged = 0.0, math.inf, False
        self.rate = schedule.get_last_lr()[-1]  # the rate of the next step

    @property
    def done(self) -> bool:
        return self.diverged or len(self.lrs) >= self.steps

    def after_step(self, step: int, loss: torch.Tensor) -> bool:
        self.lrs.append(self.rate)
        self.rate = self.schedule.get_last_lr()[-1]
        self.average = SMOOTH_BETA * self.average + (1 - SMOOTH_BETA) * loss.item()
        smooth = self.average / (1 - SMOOTH_BETA ** len(self.lrs))
        self.losses.append(smooth)
        self.best = min(self.best, smooth)
        _say(self.progress, f"step {len(self.lrs)} of {self.steps}: learning rate {self.lrs[-1]:.2g}",
             len(self.lrs) / self.steps)  # fmt: skip
        self.diverged = not math.isfinite(smooth) or smooth > DIVERGED * self.best
        return self.done


def _sweep(config: TrainConfig, data: Any, steps: int, start_lr: float, end_lr: float,
           progress: Callable[[str, float], None] | None) -> tuple[list[float], list[float], bool]:  # fmt: skip
    """The sweep: the run's own epoch loop and step (``core.train.loop``), with rising rates, until the finder
    ends it."""
    from core.train.loop import Tally, train_one_epoch
    from core.train.models import build_model, set_train_mode
    from core.train.optim import build_optimizer, choose_precision

    device = _device(config)
    model = build_model(config.arch, len(data.classes), weights=config.weights, freeze=config.freeze).to(device)
    optimizer = build_optimizer(model, replace(config, lr=1.0))  # each group's rate = 1 x its factor, scaled below
    ratio = end_lr / start_lr
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: start_lr * ratio ** (i / (steps - 1)))
    precision = choose_precision(config.amp, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    set_train_mode(model, config.freeze)
    finder, batches, epoch, step = _Finder(steps, schedule, progress), _batches(config, data, device), 0, 0
    while not finder.done:  # epoch after epoch of the training split, cut and augmented as the run cuts them
        step = train_one_epoch(model, batches.epoch(epoch), optimizer, schedule, criterion, precision,
                               tally=Tally.zero(device), step=step, after_step=finder.after_step)  # fmt: skip
        epoch += 1
    return finder.lrs, finder.losses, finder.diverged


def _batches(config: TrainConfig, data: Any, device: torch.device):
    """The training batches, scaled as the run scales them (``PreparedData.scaling``)."""
    from core.train.batches import Batches

    mean, std = data.scaling()
    batches = Batches(data.tensors.images, data.labels, data.indices["train"], batch_size=config.batch_size,
                      mean=mean, std=std, device=device, augment=config.augment, shuffle=True, seed=config.seed)  # fmt: skip
    if not len(batches):
        raise CoreError("the training split has too few images for one batch")
    return batches


def valley(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, float]:
    """fastai's ``valley`` suggestion on a sweep: (learning rate, its smoothed loss).

    As fastai, the first tenth of the sweep (the flat start, the loss still barely moved) and its last 5 steps
    (the blow-up) are left out first; then the longest strictly falling run of losses (a longest decreasing
    subsequence) is found, and the rate at a third plus a sixth of its length is suggested.
    """
    skip = len(lrs) // 10
    rates, values = list(lrs[skip:-5]), list(losses[skip:-5])
    n = len(values)
    if n < 2:
        raise CoreError("too few steps to suggest a learning rate")
    lengths, start, end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if values[i] < values[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
            if lengths[end] < lengths[i]:
                end, start = i, i - lengths[i]
    third = (end - start) / 3
    index = start + int(third) + int(third / 2)
    return float(rates[index]), float(values[index])


def _say(progress: Callable[[str, float], None] | None, what: str, share: float) -> None:
    if progress is not None:
        progress(what, min(1.0, share))
