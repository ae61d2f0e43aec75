"""The epoch loop with callbacks, as fastai's ``Learner``: train an epoch, validate, then let each callback decide and
act. The schedule's end (cycles, plateau), early stopping and the best checkpoint are callbacks; so are ``last.pt``
and the progress reports. ``core.train.fit`` builds a :class:`Learner` for a run and adds them.

Each epoch ends in two rounds over the callbacks, in their order: :meth:`Callback.after_epoch` decides (is this the
best epoch? stop now?), then :meth:`Callback.after_decisions` acts (write ``best.pt``, then ``last.pt``, then
report), so a checkpoint always holds every decision of its epoch. What a callback must remember across a resume it
gives in :meth:`Callback.state` and takes back in :meth:`Callback.load`; the checkpoint keeps it in ``metrics``.

The divergence guard (``core.train.guard``) is the one callback that acts mid-epoch: it watches every step's loss,
and when the loss ran away the epoch stops, the learner goes back to its last good state with a lower rate, and
:meth:`Callback.after_restart` tells the others (``last.pt`` is written again, the event reported).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from core.train.batches import Batches
from core.train.loop import StepLog, Tally, evaluate, train_one_epoch
from core.train.optim import Precision
from core.train.schedules import Cycles, Plateau

if TYPE_CHECKING:
    from core.train.guard import Guard, Runaway


class Callback:
    """A part of the loop that decides or acts at the end of each epoch (and on a cancel)."""

    def after_epoch(self, learner: Learner, metrics: dict[str, float]) -> None:
        """Decide: set ``learner.stop`` to end the run after this epoch."""

    def after_decisions(self, learner: Learner, metrics: dict[str, float]) -> None:
        """Act on this epoch's decisions (write a checkpoint, report)."""

    def after_cancel(self, learner: Learner) -> None:
        """The run was cancelled mid-epoch or mid-validation."""

    def after_restart(self, learner: Learner, event: Runaway) -> None:
        """The loss ran away: the learner is back at its last good state, with a lower rate (or it gave up)."""

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, state: dict[str, Any]) -> None:
        pass


class Learner:
    """One run's loop and counters. ``model`` trains (a DDP wrapper under torch.distributed); ``net`` is the network
    itself, which is validated and saved."""

    def __init__(self, model: nn.Module, net: nn.Module, train: Batches, val: Batches, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LambdaLR, criterion: nn.Module, precision: Precision, *,
                 max_epochs: int, set_mode: Callable[[nn.Module], Any],
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 callbacks: list[Callback] | None = None, guard: Guard | None = None) -> None:  # fmt: skip
        self.model, self.net, self.train_batches, self.val_batches = model, net, train, val
        self.optimizer, self.scheduler, self.criterion, self.precision = optimizer, scheduler, criterion, precision
        self.max_epochs, self.set_mode, self.reduce = max_epochs, set_mode, reduce
        # The guard comes last: it keeps the state of an epoch once every other callback has acted on it.
        self.callbacks, self.guard = [*(callbacks or []), *([guard] if guard is not None else [])], guard
        self.history: list[dict[str, float]] = []
        self.epoch = self.step = self.batch = 0  # epochs completed, steps, batches into the current epoch
        self.stop = False  # a callback ended the run (early stopping, the schedule's end)
        self.tally, self.partial_seconds = Tally.zero(train.device), 0.0

    @property
    def planned_epochs(self) -> int:
        """The run's length as far as it is decided now (the cycles schedule lengthens it while it learns)."""
        factor = self.scheduler.lr_lambdas[0]
        return factor.planned_epochs if isinstance(factor, Cycles) else self.max_epochs

    def fit(self, cancel: threading.Event | None, log: StepLog | None = None) -> str:
        """Epochs until the cap, a callback's stop or ``cancel``; returns ``completed`` or ``cancelled``."""
        if self.guard is not None:
            self.guard.keep(self)  # the state to go back to if the first epoch runs away: the start (or the resume)
        while self.epoch < self.max_epochs and not self.stop:
            self.set_mode(self.model)
            began = time.perf_counter()
            self._train_epoch(cancel, log)
            self.partial_seconds += time.perf_counter() - began
            if self.guard is not None and self.guard.ran_away():  # every rank asks, all get one answer
                self._restart(log)
                continue
            if self.batch < len(self.train_batches):  # cancelled mid-epoch
                return self._cancelled()
            began = time.perf_counter()
            val = evaluate(self.net, self.val_batches, precision=self.precision, cancel=cancel, reduce=self.reduce)
            self.partial_seconds += time.perf_counter() - began
            if val.get("cancelled"):
                return self._cancelled()
            metrics = self._end_epoch(val)
            for callback in self.callbacks:
                callback.after_epoch(self, metrics)
            for callback in self.callbacks:
                callback.after_decisions(self, metrics)
        return "completed"

    def _train_epoch(self, cancel: threading.Event | None, log: StepLog | None) -> None:
        batches = self.train_batches.epoch(self.epoch, start_batch=self.batch)
        step = train_one_epoch(self.model, batches, self.optimizer, self.scheduler, self.criterion, self.precision,
                               tally=self.tally, step=self.step, log=log, cancel=cancel,
                               after_step=self.guard.watch if self.guard is not None else None)  # fmt: skip
        self.batch += step - self.step
        self.step = step

    def _end_epoch(self, val: dict[str, Any]) -> dict[str, float]:
        if self.reduce is not None:  # every rank's share of the epoch, so all ranks decide alike
            self.tally.load_sums(self.reduce(self.tally.sums()))
        train_loss, train_acc = self.tally.read()
        seconds = self.partial_seconds
        metrics = {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val["loss"], "val_acc": val["accuracy"],
                   "val_top5": val["top5"], "lr": self.scheduler.get_last_lr()[-1], "seconds": seconds,
                   "images_per_s": self.tally.seen / max(seconds, 1e-9)}  # fmt: skip
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **metrics})
        self.batch, self.partial_seconds, self.tally = 0, 0.0, Tally.zero(self.train_batches.device)
        return metrics

    def _restart(self, log: StepLog | None) -> None:
        """The loss ran away: back to the last good state at a lower rate (or, given up, to stop there)."""
        assert self.guard is not None
        event = self.guard.restart(self)
        if log is not None:  # the progress window held the runaway steps
            log.window, log.since = Tally.zero(self.train_batches.device), time.perf_counter()
        for callback in self.callbacks:
            callback.after_restart(self, event)

    def _cancelled(self) -> str:
        for callback in self.callbacks:
            callback.after_cancel(self)
        return "cancelled"

    def state(self) -> dict[str, Any]:
        """What a checkpoint's ``metrics`` keep: the history, the partial epoch, and every callback's state."""
        partial = {"batch": self.batch, "seconds": self.partial_seconds, **self.tally.state()}
        merged: dict[str, Any] = {"history": self.history, "stopped_early": self.stop, "partial": partial}
        for callback in self.callbacks:
            merged |= callback.state()
        return merged

    def load(self, state: dict[str, Any], epoch: int, step: int) -> None:
        """Back to a checkpoint's counters (its weights and optimizer are loaded by the caller)."""
        self.history, self.stop = list(state["history"]), bool(state["stopped_early"])
        self.epoch, self.step = epoch, step
        self.batch, self.partial_seconds = state["partial"]["batch"], state["partial"]["seconds"]
        self.tally.load(state["partial"])
        for callback in self.callbacks:
            callback.load(state)


class ScheduleEnd(Callback):
    """The open-ended schedules (cycles, plateau) end the run when it has converged (``core.train.schedules``)."""

    def after_epoch(self, learner: Learner, metrics: dict[str, float]) -> None:
        factor = learner.scheduler.lr_lambdas[0]
        if isinstance(factor, Cycles | Plateau) and factor.end_epoch(learner.epoch, metrics):
            learner.stop = True


class BestCheckpoint(Callback):
    """Tracks the best epoch by ``metric`` and writes ``best.pt`` when an epoch is the best so far (always, without
    validation images). With ``val_acc`` a tie goes to the lower validation loss: on a few hundred validation
    images many epochs share the top accuracy, and the later, better-fitted one is usually the better model."""

    def __init__(self, metric: str, save: Callable[[str], None]) -> None:
        self.metric, self.save = metric, save
        self.value: float | None = None
        self.key: tuple[float, float] | None = None
        self.epoch: int | None = None
        self.bad_epochs = 0  # epochs since the best one
        self.improved = False

    def after_epoch(self, learner: Learner, metrics: dict[str, float]) -> None:
        key = best_key(self.metric, metrics)
        self.improved = self.key is None or any(math.isnan(k) for k in (*key, *self.key)) or key > self.key
        if self.improved:
            self.key, self.epoch, self.bad_epochs, self.value = key, learner.epoch, 0, metrics[self.metric]
        else:
            self.bad_epochs += 1

    def after_decisions(self, learner: Learner, metrics: dict[str, float]) -> None:
        # best.pt first: a kill between the two writes leaves last.pt an epoch behind (resume redoes that epoch and
        # writes best.pt again), never last.pt naming a best epoch that best.pt does not hold.
        if self.improved:
            self.save("best")

    def after_restart(self, learner: Learner, event: Runaway) -> None:
        # The guard gave up before any epoch ended: the run ends at its start, and a finished run has a best.pt.
        if event.gave_up and self.epoch is None:
            self.save("best")

    def state(self) -> dict[str, Any]:
        return {"best_value": self.value, "best_key": self.key, "best_epoch": self.epoch, "bad_epochs": self.bad_epochs}

    def load(self, state: dict[str, Any]) -> None:
        self.value, self.epoch, self.bad_epochs = state["best_value"], state["best_epoch"], state["bad_epochs"]
        self.key = tuple(state["best_key"]) if state["best_key"] is not None else None


class EarlyStop(Callback):
    """Ends the run after ``patience`` epochs without a better best epoch (0: never)."""

    def __init__(self, best: BestCheckpoint, patience: int) -> None:
        self.best, self.patience = best, patience

    def after_epoch(self, learner: Learner, metrics: dict[str, float]) -> None:
        if self.patience and self.best.bad_epochs >= self.patience:
            learner.stop = True


class LastCheckpoint(Callback):
    """Writes ``last.pt`` after every epoch (after ``best.pt``) and at the exact step of a cancel."""

    def __init__(self, save: Callable[[str], None]) -> None:
        self.save = save

    def after_decisions(self, learner: Learner, metrics: dict[str, float]) -> None:
        self.save("last")

    def after_cancel(self, learner: Learner) -> None:
        self.save("last")

    def after_restart(self, learner: Learner, event: Runaway) -> None:
        self.save("last")  # with the lower rate and the event: a crash now resumes from here, not before it


class EpochReport(Callback):
    """Reports each epoch (numbered from 1) with the run's length as now decided (``planned_epochs``)."""

    def __init__(self, report: Callable[[int, dict[str, float]], None]) -> None:
        self.report = report

    def after_decisions(self, learner: Learner, metrics: dict[str, float]) -> None:
        self.report(learner.epoch, {**metrics, "planned_epochs": learner.planned_epochs})


def best_key(metric: str, metrics: dict[str, float]) -> tuple[float, float]:
    """Larger is better: (accuracy, -loss) for ``val_acc``, (-loss, accuracy) for ``val_loss``."""
    if metric == "val_loss":
        return -metrics["val_loss"], metrics["val_acc"]
    return metrics["val_acc"], -metrics["val_loss"]


class RunawayReport(Callback):
    """Reports the divergence guard's events (every one so far) each time it steps in."""

    def __init__(self, report: Callable[[list[dict[str, Any]]], None]) -> None:
        self.report = report

    def after_restart(self, learner: Learner, event: Runaway) -> None:
        if learner.guard is not None:
            self.report([e.to_dict() for e in learner.guard.events])
