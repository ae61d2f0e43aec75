"""``fit``: a whole training run, epoch by epoch, with checkpoints, cancel, resume and early stopping.

Checkpoints (``last.pt`` every epoch and on cancel, ``best.pt`` by ``best_metric``) hold everything to
continue: model, optimizer, scheduler, AMP scaler, RNG states, the metric history and the partial sums of
an unfinished epoch. Every batch's order and augmentation come from seeds of (seed, epoch, batch)
(``core.train.batches.batch_seed``), so a run cancelled in the middle of an epoch resumes at the next batch and
goes on exactly as if it had never stopped. The trainer reports through :class:`TrainCallbacks`, never
printing: the command line prints, the background job stores, the page polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.common.cpu import set_torch_threads
from core.train.batches import TRAINING_LAYOUT, Batches, weighted_sampler
from core.train.checkpoints import Checkpoint, device_for, load_checkpoint, restore_rng, save_checkpoint
from core.train.config import ResumeError
from core.train.distributed import DistContext, all_reduce_sum, broadcast_object, wrap
from core.train.guard import Guard
from core.train.learner import (
    BestCheckpoint,
    EarlyStop,
    EpochReport,
    LastCheckpoint,
    Learner,
    RunawayReport,
    ScheduleEnd,
)
from core.train.loop import StepLog, Tally, evaluate
from core.train.optim import build_optimizer, choose_precision
from core.train.prepare import PreparedData
from core.train.runplan import RunPlan
from core.train.schedules import build_scheduler
from core.train.verdict import Verdict, judge


@dataclass
class TrainCallbacks:
    """Optional functions the trainer calls (from its own thread): the CLI prints, the job stores, the page polls.

    * ``on_start(info)``: once, before the first step; ``info`` holds epochs, steps_per_epoch, total_steps,
      start_epoch, start_step, n_train, n_val, n_test (the whole splits), samples_per_epoch (with oversampling's
      repeats, all ranks together), classes, image_size, arch, device, parameters.
    * ``on_step(step, epoch, metrics)``: every ``log_every`` steps (and at least every 10 s); train_loss,
      train_acc (over the steps since the last report), lr, images_per_s.
    * ``on_epoch(epoch, metrics)``: after each epoch (numbered from 1); train_loss, train_acc, val_loss,
      val_acc, val_top5, lr, seconds, images_per_s.
    * ``on_checkpoint(path, kind)``: after ``last.pt`` or ``best.pt`` was written (kind "last" / "best").
    * ``on_runaway(events)``: after the divergence guard stepped in (``core.train.guard``): every event of the run
      so far, as dicts with their ``words``.
    """

    on_start: Callable[[dict[str, Any]], None] | None = None
    on_step: Callable[[int, int, dict[str, float]], None] | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    on_checkpoint: Callable[[Path, str], None] | None = None
    on_runaway: Callable[[list[dict[str, Any]]], None] | None = None


@dataclass
class FitResult:
    """How a run ended. ``status`` is ``completed`` (early stopping included) or ``cancelled``; a completed run's
    ``verdict`` says whether it learned (``core.train.verdict``)."""

    status: str
    epochs: list[dict[str, float]]  # every epoch, those before an interruption too
    test: dict[str, float]  # loss, accuracy, top5, n, epoch (of best.pt); empty when cancelled or no test split
    test_predictions: dict[str, Any] | None  # targets, predicted, probs, paths (numpy), for evaluation pages
    best_epoch: int | None
    best_value: float | None
    stopped_early: bool
    steps: int
    wall_s: float
    plan: RunPlan  # what the run did: its settings, every automatic choice decided
    device: str
    checkpoint_dir: Path
    dropped: pd.DataFrame  # images left out, with reasons
    runaways: list[dict[str, Any]]  # the divergence guard's events, with their words
    verdict: Verdict | None  # None unless completed
    familiar: dict[str, Any] | None = None  # the "not sure" checks' thresholds and false-alarm rates, when made

    @property
    def epochs_trained(self) -> int:
        """Epochs completed, those before an interruption too."""
        return len(self.epochs)

    @property
    def config(self) -> dict[str, Any]:
        """The settings the run used (the plan's config with every automatic choice decided), as a dict."""
        return self.plan.settings.to_dict()

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"


def fit(
    data: PreparedData,
    *,
    callbacks: TrainCallbacks | None = None,
    cancel: threading.Event | None = None,
    checkpoint_dir: Path,
    resume_from: Path | None = None,
    dist: DistContext | None = None,
    start_weights: str | None = None,
) -> FitResult:
    """Train on ``data`` as its plan (``data.plan``) says, writing ``last.pt``/``best.pt`` into ``checkpoint_dir``.

    Args:
        data: from :func:`prepare`, which carries the run's plan (on resume: the stored plan and split).
        callbacks: progress reports (see :class:`TrainCallbacks`).
        cancel: when set, the run stops before its next step, writes ``last.pt`` (that exact step: a resume
            goes on from there, mid-epoch included) and returns status ``cancelled``.
        checkpoint_dir: where the checkpoints go (created).
        resume_from: a ``last.pt`` to continue from.
        dist: this process's place under torch.distributed (``core.train.distributed``): it trains its shard of
            every epoch; only rank 0 reads ``resume_from``, writes checkpoints and calls ``callbacks``.
        start_weights: the weights file the network starts from instead of the plan's (a child run's parent
            weights made ready for its classes, ``core.train.transfer.starting_weights``).

    Raises:
        ResumeError: the checkpoint does not fit ``data`` (classes or image size differ).
    """
    started = time.perf_counter()
    checkpoint = load_checkpoint(resume_from) if resume_from is not None and (dist is None or dist.main) else None
    if dist is not None:  # rank 0 read it; the others may be on machines without the file
        checkpoint = broadcast_object(checkpoint, dist)
    if checkpoint is not None:
        _check_resumable(checkpoint, data)
    if data.plan.threads:
        set_torch_threads(data.plan.threads)
    run = _Run(data, Path(checkpoint_dir), checkpoint, dist, start_weights)
    callbacks = callbacks or TrainCallbacks()
    _call(callbacks.on_start, run.info())
    status = run.train(callbacks, cancel)
    test, predictions = run.test() if status == "completed" else ({}, None)
    familiar = run.familiarity() if status == "completed" else None
    return run.result(status, test, predictions, time.perf_counter() - started, familiar)


def _call(fn: Callable[..., None] | None, *args: Any) -> None:
    if fn is not None:
        fn(*args)


def _check_resumable(checkpoint: Checkpoint, data: PreparedData) -> None:
    if checkpoint.classes != data.classes:
        raise ResumeError(f"the checkpoint was trained on classes {checkpoint.classes}, the data has {data.classes}")
    if checkpoint.image_size != data.image_size:
        raise ResumeError(f"the checkpoint uses {checkpoint.image_size} px images, the data was prepared at "
                          f"{data.image_size} px (prepare it with the run's stored plan)")  # fmt: skip


class _Run:
    """One run's moving parts: the network, its batches and optimizer, and the :class:`Learner` that loops."""

    def __init__(self, data: PreparedData, folder: Path, checkpoint: Checkpoint | None, dist: DistContext | None,
                 start_weights: str | None) -> None:  # fmt: skip
        from core.train.models import build_model, set_train_mode

        plan = data.plan
        self.plan, self.settings, self.data, self.folder, self.dist = plan, plan.settings, data, folder, dist
        folder.mkdir(parents=True, exist_ok=True)
        self.device = device_for(self.settings.device)
        if dist is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)
        self.precision = choose_precision(self.settings.amp, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
        torch.manual_seed(self.settings.seed)
        # A resumed run gets its weights from the checkpoint: no need for (possibly offline) ImageNet files.
        weights = (start_weights or self.settings.weights) if checkpoint is None else "none"
        self.net = build_model(plan.arch, len(data.classes), weights=weights, freeze=self.settings.freeze)
        self.net.to(self.device, memory_format=TRAINING_LAYOUT)
        self.mean, self.std = data.scaling()
        train, val, self.test_batches = self._batches()
        self._best_loaded = False
        optimizer = build_optimizer(self.net, self.settings)
        scheduler = build_scheduler(optimizer, self.settings, len(train))
        self.best = BestCheckpoint(self.settings.best_metric, self._save)
        self.guard = Guard(
            len(data.classes), self.settings.lr, self.device, all_reduce_sum if dist is not None else None
        )
        self.learner = Learner(self.net, self.net, train, val, optimizer, scheduler,
                               nn.CrossEntropyLoss(label_smoothing=self.settings.label_smoothing), self.precision,
                               max_epochs=plan.epochs.epochs, set_mode=lambda m: set_train_mode(m, self.settings.freeze),
                               reduce=all_reduce_sum if dist is not None else None,
                               callbacks=[self.best, EarlyStop(self.best, self.settings.early_stop_patience),
                                          ScheduleEnd(), LastCheckpoint(self._save)], guard=self.guard)  # fmt: skip
        self.callbacks = TrainCallbacks()
        if checkpoint is not None:
            self._restore(checkpoint)
        if dist is not None:
            self.learner.model = wrap(self.net, dist, self.device)

    def _batches(self) -> tuple[Batches, Batches, Batches]:
        d, c = self.data, self.settings
        common = {"mean": self.mean, "std": self.std, "device": self.device, "seed": c.seed}
        train_labels = d.labels[torch.as_tensor(d.indices["train"], dtype=torch.long)]
        sampler = weighted_sampler(train_labels, c.rare_threshold) if c.oversample else None
        shard = (self.dist.rank, self.dist.world) if self.dist is not None else (0, 1)
        # batch_size is the global batch: each rank takes its share, so 1 and N ranks take the same steps.
        per_rank = max(2, c.batch_size // shard[1])
        train = Batches(d.tensors.images, d.labels, d.indices["train"], batch_size=per_rank, augment=c.augment,
                        shuffle=True, sampler=sampler, shard=shard, **common)  # fmt: skip
        # Evaluation keeps no activations for backward: twice the batch fits and runs faster per image.
        val = Batches(d.tensors.images, d.labels, d.indices["val"], batch_size=2 * per_rank, shard=shard, **common)
        test = Batches(d.tensors.images, d.labels, d.indices["test"], batch_size=2 * c.batch_size, **common)
        return train, val, test

    def info(self) -> dict[str, Any]:
        from core.train.models import count_parameters

        lr, per_epoch = self.learner, len(self.learner.train_batches)
        # Open-ended schedules ("until_converged"): "epochs" is the current cycle's end (cycles) or the cap.
        # The split sizes are the whole splits', not this rank's shard: what the run learned from and was tested on.
        return {"epochs": lr.planned_epochs, "max_epochs": lr.max_epochs, "until_converged": self.plan.epochs.until_converged,
                "steps_per_epoch": per_epoch, "total_steps": per_epoch * lr.planned_epochs, "start_epoch": lr.epoch,
                "start_step": lr.step, "n_train": len(self.data.indices["train"]),
                "samples_per_epoch": lr.train_batches.n_samples * (self.dist.world if self.dist else 1),
                "n_val": len(self.data.indices["val"]), "n_test": len(self.data.indices["test"]),
                "classes": self.data.classes, "image_size": self.data.image_size, "arch": self.plan.arch,
                "device": str(self.device), "parameters": count_parameters(self.net)[0]}  # fmt: skip

    # -- the loop ------------------------------------------------------------------------------

    def train(self, callbacks: TrainCallbacks, cancel: threading.Event | None) -> str:
        """Epochs until the plan's end, early stopping or cancel; returns the status."""
        self.callbacks = callbacks
        if callbacks.on_epoch is not None:
            self.learner.callbacks.append(EpochReport(callbacks.on_epoch))
        if callbacks.on_runaway is not None:
            self.learner.callbacks.append(RunawayReport(callbacks.on_runaway))
        log = None
        if callbacks.on_step is not None:
            on_step = callbacks.on_step
            log = StepLog(self.settings.log_every, lambda step, m: on_step(step, self.learner.epoch + 1, m),
                          Tally.zero(self.device))  # fmt: skip
        return self.learner.fit(cancel, log)

    # -- checkpoints ---------------------------------------------------------------------------

    def _save(self, kind: str) -> None:
        if self.dist is not None and not self.dist.main:
            return  # rank 0 writes; the others hold the same weights
        lr = self.learner
        path = self.folder / f"{kind}.pt"
        save_checkpoint(path, Checkpoint.of(self.net, self.plan, self.data.classes, self.mean, self.std,
                                            optimizer=lr.optimizer, scheduler=lr.scheduler,
                                            scaler=self.precision.scaler, epoch=lr.epoch, step=lr.step,
                                            metrics=lr.state()))  # fmt: skip
        _call(self.callbacks.on_checkpoint, path, kind)

    def _restore(self, checkpoint: Checkpoint) -> None:
        lr = self.learner
        self.net.load_state_dict(checkpoint.weights)
        lr.optimizer.load_state_dict(checkpoint.optimizer)
        lr.scheduler.load_state_dict(checkpoint.scheduler)
        self.precision.scaler.load_state_dict(checkpoint.scaler)
        restore_rng(checkpoint.rng)
        lr.load(checkpoint.metrics, checkpoint.epoch, checkpoint.step)

    # -- the end -------------------------------------------------------------------------------

    def test(self) -> tuple[dict[str, float], dict[str, Any] | None]:
        """Test metrics of the best checkpoint (and its per-image predictions); empty without a test split."""
        if not len(self.test_batches.indices) or (self.dist is not None and not self.dist.main):
            return {}, None  # under torch.distributed rank 0 tests alone, once, on every test image
        self._load_best()
        out = evaluate(self.net, self.test_batches, precision=self.precision, keep_predictions=True)
        paths = self.data.tensors.path_at(self.data.indices["test"])
        predictions = {"paths": paths, "targets": out.pop("targets"), "predicted": out.pop("predicted"),
                       "probs": out.pop("probs"), "classes": list(self.data.classes)}  # fmt: skip
        return {**out, "epoch": self.best.epoch or self.learner.epoch}, predictions

    def _load_best(self) -> None:
        best = self.folder / "best.pt"
        if best.is_file() and not self._best_loaded:
            self.net.load_state_dict(load_checkpoint(best).weights)
            self._best_loaded = True

    def familiarity(self) -> dict[str, Any] | None:
        """The best model's "not sure" checks (``core.train.familiar``), calibrated on the validation images and
        saved beside the checkpoints; their parameters, or None (too few validation images, or not rank 0)."""
        from core.train.familiar import BANK_MAX, fit_familiarity

        if self.dist is not None and not self.dist.main:
            return None
        self._load_best()
        d, c = self.data, self.settings
        common = {"mean": self.mean, "std": self.std, "device": self.device, "batch_size": 2 * c.batch_size}
        kept = np.asarray(d.indices["train"])
        if len(kept) > BANK_MAX:  # a fixed subset: the same run gives the same checks
            kept = np.sort(np.random.default_rng(c.seed).choice(kept, BANK_MAX, replace=False))
        train = Batches(d.tensors.images, d.labels, kept, **common)
        val = Batches(d.tensors.images, d.labels, d.indices["val"], **common)
        found = fit_familiarity(self.net, train, val)
        if found is None:
            return None
        found.save(self.folder)
        return found.params()

    def result(self, status: str, test: dict, predictions: dict | None, wall_s: float,
               familiar: dict[str, Any] | None = None) -> FitResult:  # fmt: skip
        lr = self.learner
        return FitResult(status, list(lr.history), test, predictions, self.best.epoch, self.best.value, lr.stop,
                         lr.step, wall_s, self.plan, str(self.device), self.folder, self.data.dropped,
                         [e.to_dict() for e in self.guard.events],
                         self.verdict() if status == "completed" else None, familiar)  # fmt: skip

    def verdict(self) -> Verdict:
        """Whether the run learned (``core.train.verdict``): the guard's give-up, chance on the validation images,
        a training loss that did not fall."""
        val = self.data.labels[torch.as_tensor(self.data.indices["val"], dtype=torch.long)]
        counts = {c: int((val == i).sum()) for i, c in enumerate(self.data.classes)}
        given_up = self.guard.events[-1].words() if self.guard.gave_up else None
        return judge(gave_up=given_up, epochs=self.learner.history, first_loss=self.guard.first, val_counts=counts)
