"""The learning-rate finder, as fastai's ``lr_find``: a short sweep of rising learning rates on the training split,
and a suggestion only where the curve shows one.

The sweep (fastai 2.7, ``LRFinder``, followed step for step):

* a fresh network, exactly as a run of the config would start (architecture, starting weights, freezing,
  optimizer, its backbone/head groups), trains for at most ``STEPS`` (100) batches of the training split while the
  learning rate rises exponentially from ``START_LR`` (1e-7) to ``END_LR`` (10);
* the loss is smoothed as fastai's ``AvgSmoothLoss`` (exponential average, beta 0.98, start-up bias corrected);
  the sweep stops early once the smoothed loss exceeds 4 times its lowest value (it diverged) or is not a number.

The suggestion (:func:`suggest`) is fastai's **valley**, but only on a curve that fell, and only on its fall:

* the loss must have **fallen**: its lowest point (before the blow-up, by definition) at least ``FALL`` (10%) below
  where it started (the median of the sweep's first tenth) *and* below the loss of a network that learns nothing
  but how common each class is (the entropy of the training split's class shares, :func:`prior_loss`). A network
  that cannot learn (no signal in the labels) falls 0-2% and reaches that loss at best; the digits fall 14-19%,
  photos cut into classes 35% (the default recipe, 100 steps). Otherwise the curve is **inconclusive**: no rate
  is suggested, the run's own rate is kept, and the finding says so (``why``);
* on a curve that fell, the valley rule is applied to the **fall** only: from where the loss is a tenth of the way
  down from its start to its lowest, to its lowest. fastai applies it to the whole curve (less its first tenth
  and last 5 steps); on a curve flat from 1e-7 to 3e-2 whose smoothed loss drifts down a little (the network
  learning the class shares), its longest falling stretch began in that drift, and it suggested 0.00063 for a
  set that trains to 99.4% at 0.1. Within the fall, the longest falling stretch and the rate a third plus a sixth
  of the way along it: past the start of the fall, before its bottom;
* a suggestion ``FAR_BELOW`` (10) or more times under the run's rate says where that rate lies on the curve (still
  falling, past the bottom, above the start, or beyond where the sweep stopped), so the difference is explained.

The time a sweep takes is said before it starts (:func:`estimate_seconds`: a few timed steps of the run's network,
``core.train.estimate.step_seconds``, times the sweep's steps).

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

import numpy as np
import torch
from torch import nn

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.train.config import RECIPE_BATCH, TrainConfig
from core.train.plan import RunPreview, check_run
from core.train.runplan import RunPlan

START_LR = 1e-7
END_LR = 10.0
STEPS = 100
MIN_STEPS, MAX_STEPS = 20, 1000  # fewer cannot show a valley; 1,000 steps are 10x fastai's sweep already
SMOOTH_BETA = 0.98  # fastai's AvgSmoothLoss
DIVERGED = 4.0  # the sweep stops when the smoothed loss is this many times its lowest value
RULE = "valley"
FALL = 0.1  # the lowest loss must be this share below the start and the know-nothing loss: a fall, not noise
DESCENT = 0.1  # the fall begins where the loss is this share of the way down from its start to its lowest
FAR_BELOW = 10.0  # a suggestion this many times under the run's rate says where that rate lies on the curve
TIMED_STEPS = 3  # steps timed for the estimate (after a warm-up; their median): a 100-step sweep's 4%
RULE_WORDS = ("the valley rule (fastai's default) on the part of the curve where the loss falls: within the longest "
              "falling stretch, the rate a little under halfway along; no rate when the loss did not clearly fall")  # fmt: skip


@dataclass(frozen=True)
class Suggestion:
    """What a curve suggests: a rate and its smoothed loss (None when the curve is inconclusive), and why, in words."""

    rate: float | None
    loss: float | None
    why: str


@dataclass
class LrFinding:
    """What a sweep found: every step's rate and smoothed loss, the suggested rate (None: inconclusive) and why."""

    lrs: list[float]
    losses: list[float]  # smoothed
    suggested: float | None  # None: the loss did not fall, the run's rate is kept
    suggested_loss: float | None
    why: str  # the suggestion, or why there is none, in words
    rate: float  # the run's own rate (the recipe's, or the one given), kept when nothing is suggested
    diverged: bool  # stopped early because the loss blew up (the usual end: the rates went past useful)
    seconds: float
    config: TrainConfig  # the settings the sweep trained with (its plan's, lr aside)

    def to_json(self) -> dict[str, Any]:
        return {"lrs": self.lrs, "losses": self.losses, "suggested": self.suggested, "why": self.why,
                "run_lr": self.rate, "rule": RULE, "steps": len(self.lrs), "diverged": self.diverged,
                "seconds": round(self.seconds, 3), "arch": self.config.arch, "optimizer": self.config.optimizer}  # fmt: skip


def sweep_steps(batch: int) -> int:
    """The steps of an automatic sweep: ``STEPS`` at the recipe's 64 images a step, as many more as a smaller batch
    needs to see as many images (at most ``MAX_STEPS``). At 16 a step, 100 steps were 1.3 epochs of the digits and
    their loss never clearly fell; 400 are the 100 of 64 the rule was measured on."""
    return max(STEPS, min(MAX_STEPS, round(STEPS * RECIPE_BATCH / max(1, batch))))


def find_lr(source: TrainConfig | RunPlan, ws: Workspace, *, steps: int = 0, start_lr: float = START_LR,
            end_lr: float = END_LR, progress: Callable[[str, float], None] | None = None) -> LrFinding:  # fmt: skip
    """Sweep the learning rate for a run (its config, or its plan: the Train page's) on its training split and
    suggest one where the curve shows one (see the module docstring). ``steps`` 0: :func:`sweep_steps` of the
    run's batch.

    Args:
        progress: called with (what is happening, share done) while it prepares and sweeps.

    Raises:
        ConfigError: a bad option. DatasetError: the data cannot be trained on. CoreError: a sweep too short to
            judge anything.
    """
    from core.train.prepare import prepare

    if not (steps == 0 or MIN_STEPS <= steps <= MAX_STEPS) or not 0 < start_lr < end_lr:
        raise CoreError(f"a learning-rate sweep needs at least {MIN_STEPS} steps (at most {MAX_STEPS}) and 0 < start "
                        f"< end (got {steps} steps, {start_lr:g} to {end_lr:g})")  # fmt: skip
    began = time.perf_counter()
    if isinstance(source, RunPlan):  # it trains as a run would, in this process
        source = replace(source, config=replace(source.config, ranks=1))
    seen = preview_sweep(source, ws)
    if seen is not None:
        source = seen.plan
    elif isinstance(source, TrainConfig):  # unreadable data: prepare says why
        source = _with_parent(source, ws)
    _say(progress, "reading the images", 0.0)
    data = prepare(source, ws)
    steps = steps or sweep_steps(data.plan.batch_size)
    with tempfile.TemporaryDirectory(prefix="lr-find-") as scratch:
        settings = replace(data.config, weights=_weights(data, ws, Path(scratch)))
        devices = [torch.cuda.current_device()] if _device(settings).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's random streams come back untouched
            torch.manual_seed(settings.seed)
            lrs, losses, diverged = _sweep(settings, data, steps, start_lr, end_lr, progress)
    if len(lrs) < 20:
        raise CoreError(f"the loss blew up after {len(lrs)} steps, before any rate could be judged; lower the "
                        "starting rate or check the data")  # fmt: skip
    counts = torch.bincount(data.labels[torch.as_tensor(data.indices["train"])], minlength=len(data.classes))
    rate, chosen = data.plan.lr, bool(data.plan.config.lr)
    found = suggest(lrs, losses, prior=prior_loss(counts.tolist(), settings.label_smoothing), rate=rate, chosen=chosen)
    return LrFinding(lrs, losses, found.rate, found.loss, found.why, rate, diverged, time.perf_counter() - began,
                     settings)  # fmt: skip


def preview_sweep(source: TrainConfig | RunPlan, ws: Workspace) -> RunPreview | None:
    """The run a sweep trains as (in this process: one rank), refused if it cannot fit; None when its data cannot
    be read (preparing it then says why)."""
    if isinstance(source, RunPlan):
        return check_run(replace(source, config=replace(source.config, ranks=1)), ws)
    return check_run(replace(_with_parent(source.validate(), ws), ranks=1), ws)


def estimate_seconds(seen: RunPreview, steps: int = 0) -> float:
    """About how long a sweep of ``steps`` steps (0: :func:`sweep_steps`) of the run ``seen`` takes: a few of its
    steps timed here (``core.train.estimate.step_seconds``) times the steps (the sweep may stop sooner, when the loss
    blows up).

    Raises:
        RunTooBigError: the run would not fit in the free memory (nothing is built).
    """
    from core.train.estimate import step_seconds

    return step_seconds(seen, steps=TIMED_STEPS) * (steps or sweep_steps(seen.plan.batch_size))


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
    from core.train.batches import TRAINING_LAYOUT
    from core.train.loop import Tally, train_one_epoch
    from core.train.models import build_model, set_train_mode
    from core.train.optim import build_optimizer, choose_precision

    device = _device(config)
    model = build_model(config.arch, len(data.classes), weights=config.weights, freeze=config.freeze)
    model.to(device, memory_format=TRAINING_LAYOUT)
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


def suggest(lrs: Sequence[float], losses: Sequence[float], *, prior: float | None, rate: float,
            chosen: bool = False) -> Suggestion:  # fmt: skip
    """The suggestion of a sweep's curve (rates, smoothed losses), or why there is none (see the module docstring).

    Args:
        prior: the loss of a network that knows only the class shares (:func:`prior_loss`); None if unknown.
        rate: the run's own rate (kept when nothing is suggested; compared with the suggestion).
        chosen: ``rate`` was given by the person (else the recipe chose it).
    """
    n = len(losses)
    start = float(np.median(losses[: max(3, n // 10)]))
    bottom = int(np.argmin(losses))
    lowest = float(losses[bottom])
    whose = "your rate" if chosen else "the recipe's rate"
    if not lowest <= (1 - FALL) * (start if prior is None else min(start, prior)):
        known = "" if prior is None else f"; a network that learns only how common each class is gets {prior:.2f}"
        return Suggestion(None, None, f"the loss did not fall anywhere in the range: keeping {whose} {rate:g} (it "
                                      f"started at {start:.2f} and got no lower than {lowest:.2f}{known})")  # fmt: skip
    level = start - DESCENT * (start - lowest)
    begins = max((i for i in range(bottom) if losses[i] >= level), default=0)
    index = begins + valley_index(losses[begins : bottom + 1]) if bottom > begins else bottom
    found = float(lrs[index])
    why = (f"the loss fell from {start:.2f} to {lowest:.2f} (at {lrs[bottom]:.2g}); suggested {found:.2g}, a little "
           f"under halfway down that fall (fastai's valley rule)")  # fmt: skip
    if rate >= FAR_BELOW * found:
        why += f"; that is {rate / found:.0f}x below {whose} {rate:g}: " + _where(lrs, losses, rate, bottom, start)
    return Suggestion(found, float(losses[index]), why)


def _where(lrs: Sequence[float], losses: Sequence[float], rate: float, bottom: int, start: float) -> str:
    """Where ``rate`` lies on the curve, in words: why a suggestion far below it was made."""
    if rate > lrs[-1] * 1.05:
        return f"the sweep stopped at {lrs[-1]:.2g}, when the loss blew up, before it reached that rate"
    at = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / rate)))
    if at <= bottom:
        return ("at that rate the loss was still falling, so it suits this data too; the valley rule takes a more "
                "cautious one")  # fmt: skip
    if losses[at] > start:
        return "at that rate the loss had risen above where it started"
    return f"at that rate the loss was past its lowest and rising again ({losses[at]:.2f} against {losses[bottom]:.2f})"


def valley_index(values: Sequence[float]) -> int:
    """fastai's ``valley`` pick on a stretch of a curve: the longest strictly falling run of ``values`` (a longest
    decreasing subsequence), and the position a third plus a sixth of its length along it (fastai counts the run
    from one before its first point)."""
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
    return min(n - 1, max(0, start + int(third) + int(third / 2)))


def prior_loss(counts: Sequence[int], label_smoothing: float = 0.0) -> float | None:
    """The training loss of a network that learns nothing but how common each class is (``counts`` images per
    class): the entropy of the targets' average, label smoothing spreading ``label_smoothing`` of each evenly.
    A curve that only gets there did not learn from the images. None for no images."""
    total = sum(counts)
    if not total:
        return None
    k = len(counts)
    shares = [(1 - label_smoothing) * c / total + label_smoothing / k for c in counts]
    return -sum(p * math.log(p) for p in shares if p > 0)


def _say(progress: Callable[[str, float], None] | None, what: str, share: float) -> None:
    if progress is not None:
        progress(what, min(1.0, share))
