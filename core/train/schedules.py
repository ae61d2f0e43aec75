"""Learning-rate schedules, stepped per batch through one ``LambdaLR``: the open-ended ``cycles`` (the default)
and ``plateau``, and the fixed-length one-cycle, cosine, step and constant.

The open-ended ones also decide when a run ends (``end_epoch`` returns True); their state is plain
attributes of the factor object, which ``LambdaLR.state_dict`` keeps: a resumed run goes on exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from core.train.config import TrainConfig
from core.train.epochs import FIRST_CYCLE, effective_schedule, epoch_plan

FITTED_TRAIN_ACC = 0.98  # cycles: a network at this training accuracy fits its data; more epochs cannot help
CYCLE_MIN_GAIN = 0.01  # cycles: a cycle that raised validation accuracy less than this was the last useful one
PLATEAU_DROPS = 2  # plateau: the rate drops twice (x gamma each), and the third plateau ends the run
# plateau: a loss must be this much lower (relative) to count as better; torch's default is 1e-4, but the
# validation loss of a few hundred images moves more than that by chance.
PLATEAU_MIN_CHANGE = 1e-3
ONECYCLE_RISE = 0.25  # share of the steps over which "onecycle" rises when warmup_epochs is 0


class Plateau:
    """The ``plateau`` schedule: the rate is multiplied by ``gamma`` when the monitored loss has not improved
    for ``patience`` epochs; after ``drops`` drops, the next plateau ends the run (it has converged).

    Called with the step number it is ``LambdaLR``'s factor (linear warm-up, then ``gamma ** dropped``); the
    trainer calls :meth:`observe` after each epoch. Its state is plain attributes, which ``LambdaLR`` keeps in
    its ``state_dict`` for callable objects: a resumed run goes on with the same drops and best loss. The
    rule is torch's ``ReduceLROnPlateau`` (mode min, relative threshold, no cooldown); it is not used itself
    because it sets the rate directly, which the per-batch warm-up of ``LambdaLR`` would overwrite.
    """

    def __init__(self, warmup_steps: int, gamma: float, patience: int, drops: int = PLATEAU_DROPS) -> None:
        self.warmup_steps, self.gamma, self.patience, self.drops = warmup_steps, gamma, patience, drops
        self.dropped, self.bad_epochs, self.best = 0, 0, math.inf

    def __call__(self, step: int) -> float:
        warm = (step + 1) / (self.warmup_steps + 1) if step < self.warmup_steps else 1.0
        return warm * self.gamma**self.dropped

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        """After each epoch: True when the run should stop. Watches the validation loss (the training loss
        when there are no validation images)."""
        return self.observe(metrics["val_loss"] if math.isfinite(metrics["val_loss"]) else metrics["train_loss"])

    def observe(self, loss: float) -> bool:
        """Record one epoch's loss; True when training should stop (a plateau after the last drop)."""
        if loss < self.best * (1 - PLATEAU_MIN_CHANGE):  # NaN compares False: counts as no improvement
            self.best, self.bad_epochs = loss, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return False
        if self.dropped >= self.drops:
            return True
        self.dropped, self.bad_epochs = self.dropped + 1, 0
        return False


class Cycles:
    """The ``cycles`` schedule (the default): one-cycle runs of 12, 24, 48... epochs, each starting from where
    the last one ended (warm restarts, as SGDR with a period that doubles), for as long as the data needs.

    At the end of a cycle (the rate back at zero, the network at its best for that cycle) the run stops when
    the network fits its training images (accuracy >= ``FITTED_TRAIN_ACC``: more epochs cannot help), when
    the cycle raised validation accuracy by less than ``CYCLE_MIN_GAIN`` (it has converged), or when the next
    cycle, cut to the epoch cap, would be shorter than the last. Why: easy data (the digits) is learned in
    the first 12 epochs, harder data is not. Coloured shapes on textures (1,600 images, LeNet from scratch)
    reached 54% test accuracy after 12 epochs, 85% after 12 + 24 and 99.6% after 12 + 24 + 48, while the
    digits end at 12 epochs with 99% training accuracy. A plateau rule on the validation loss stopped the
    shapes at 61%: at the peak rate the loss stays flat for a while before it falls.

    Called with the step number it is ``LambdaLR``'s factor; its state (the cycles so far, the last
    validation accuracy) is plain attributes, which ``LambdaLR`` keeps in its ``state_dict``: resumes exactly.
    """

    def __init__(self, steps_per_epoch: int, cap_epochs: int, first: int = FIRST_CYCLE) -> None:
        self.steps_per_epoch, self.cap_epochs = steps_per_epoch, cap_epochs
        self.starts, self.lengths = [0], [min(first, cap_epochs)]  # in epochs
        self.last_val_acc: float | None = None

    @property
    def planned_epochs(self) -> int:
        """The epoch the current cycle ends at: the run's length as far as it is decided now."""
        return self.starts[-1] + self.lengths[-1]

    def __call__(self, step: int) -> float:
        start, length = self.starts[-1] * self.steps_per_epoch, self.lengths[-1] * self.steps_per_epoch
        return one_cycle(step - start, max(1, length))

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        """After each epoch (numbered from 1): True when the run should stop; else maybe start the next cycle."""
        if epoch < self.planned_epochs:
            return False
        val_acc = metrics["val_acc"]
        known = math.isfinite(val_acc) and self.last_val_acc is not None
        gained = not known or val_acc >= self.last_val_acc + CYCLE_MIN_GAIN
        if math.isfinite(val_acc):
            self.last_val_acc = val_acc
        following = min(2 * self.lengths[-1], self.cap_epochs - epoch)
        if metrics["train_acc"] >= FITTED_TRAIN_ACC or not gained or following < self.lengths[-1]:
            return True
        self.starts.append(epoch)
        self.lengths.append(following)
        return False


def one_cycle(step: int, total: int, rise: int | None = None) -> float:
    """The one-cycle multiplier at ``step`` of ``total``: linear rise over ``rise`` steps (default a quarter),
    then cosine decay to zero."""
    rise = min(total - 1, round(ONECYCLE_RISE * total) if rise is None else rise)
    if step < rise:
        return (step + 1) / (rise + 1)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - rise) / max(1, total - rise))))


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each step: warm-up, then the schedule (``LambdaLR`` steps it per batch). How
    many epochs it spans is ``core.train.epochs``' rule (the cap, for the open-ended schedules)."""
    epochs = epoch_plan(config.schedule, config.epochs).epochs
    schedule = effective_schedule(config.schedule, config.epochs)
    if schedule == "cycles":
        return Cycles(steps_per_epoch, epochs)
    if schedule == "plateau":
        return Plateau(round(config.warmup_epochs * steps_per_epoch), config.gamma, config.plateau_patience)
    total = max(1, epochs * steps_per_epoch)
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if schedule == "onecycle":
        return lambda step: one_cycle(step, total, warmup or None)
    milestones = sorted(m * steps_per_epoch for m in config.milestones)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        done = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        if schedule == "step":
            return config.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-batch ``LambdaLR`` over :func:`lr_factor` (its state is the step count, plus the :class:`Cycles`
    or :class:`Plateau` state for those schedules: resumes exactly)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))


def scale_rates(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, scale: float) -> None:
    """Every group's rate at ``scale`` of the run's own, the whole schedule with it (warm-up, peak, decay): the
    divergence guard's lower rate (``core.train.guard``). Called on a schedule and optimizer just loaded from a state
    whose rates were the run's own; both keep the new rates in their state dicts, so a resume goes on with them."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    own = [group["initial_lr"] for group in optimizer.param_groups]
    scheduler.base_lrs = [rate * scale for rate in own]
    for group, factor, base in zip(optimizer.param_groups, scheduler.lr_lambdas, scheduler.base_lrs, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr reports
