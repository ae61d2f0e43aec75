"""The verbs of training, as in torchvision's references: ``train_step``, ``train_one_epoch`` and ``evaluate``.

``train_step`` is the one training step: the run's epochs (``core.train.learner``), the learning-rate finder
(``core.train.lr_find``) and the time estimate (``core.train.estimate``) all take their steps through it. The
epoch and the evaluation keep their sums on the device; the only waits for a GPU are the progress reports.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.train.batches import Batches
from core.train.kept import KeptRows
from core.train.optim import Precision


@dataclass
class Tally:
    """Running sums of a stretch of steps, kept on the device: reading them is the only sync with the GPU."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0

    @classmethod
    def zero(cls, device: torch.device) -> Tally:
        return cls(
            torch.zeros((), device=device, dtype=torch.float64), torch.zeros((), device=device, dtype=torch.long)
        )

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(targets)
        self.correct += (logits.argmax(1) == targets).sum()
        self.seen += len(targets)

    def read(self) -> tuple[float, float]:
        """(mean loss, accuracy); NaN when nothing was added."""
        if not self.seen:
            return math.nan, math.nan
        return self.loss_sum.item() / self.seen, self.correct.item() / self.seen

    def sums(self) -> torch.Tensor:
        """(loss sum, correct, seen) as one float64 tensor on the device: what ranks add up."""
        return torch.stack([self.loss_sum.double(), self.correct.double(),
                            torch.tensor(float(self.seen), dtype=torch.float64, device=self.loss_sum.device)])  # fmt: skip

    def load_sums(self, sums: torch.Tensor) -> None:
        self.loss_sum.fill_(float(sums[0]))
        self.correct.fill_(int(sums[1]))
        self.seen = int(sums[2])

    def state(self) -> dict[str, float]:
        return {"loss_sum": float(self.loss_sum), "correct": int(self.correct), "seen": self.seen}

    def load(self, state: dict[str, float]) -> None:
        self.loss_sum.fill_(state["loss_sum"])
        self.correct.fill_(int(state["correct"]))
        self.seen = int(state["seen"])


@dataclass
class StepLog:
    """What ``train_one_epoch`` needs to report progress every ``every`` steps."""

    every: int
    report: Callable[[int, dict[str, float]], None] | None  # (global step, metrics)
    window: Tally
    since: float = field(default_factory=time.perf_counter)
    # Also report when this long has passed: a ResNet-152 step on a CPU can take seconds, and the page (and
    # the run's heartbeat) should not wait log_every of them.
    max_seconds: float = 10.0

    def due(self, step: int) -> bool:
        return step % self.every == 0 or time.perf_counter() - self.since > self.max_seconds


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               criterion: nn.Module, precision: Precision) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One optimizer step on the batch ``(x, y)``: the forward under the run's precision, the (scaled) backward,
    the step. Returns (loss, logits), still on the device: nothing here waits for it."""
    with precision.autocast():
        logits = model(x)
        loss = criterion(logits, y)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return loss, logits


def train_one_epoch(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: nn.Module,
    precision: Precision,
    *,
    tally: Tally,
    step: int,
    log: StepLog | None = None,
    cancel: threading.Event | None = None,
    after_step: Callable[[int, torch.Tensor], bool] | None = None,
) -> int:
    """Train on ``batches`` until they run out, ``cancel`` is set (checked before every step) or ``after_step``
    (called with the global step and the loss) returns True.

    The loss and accuracy are summed into ``tally`` on the device; nothing here waits for the device except
    a report every ``log.every`` steps. Returns the global step count after the last step taken.
    """
    for x, y in batches:
        if cancel is not None and cancel.is_set():
            break
        loss, logits = train_step(model, x, y, optimizer, criterion, precision)
        scheduler.step()
        step += 1
        tally.add(loss, logits, y)
        if log is not None:
            log.window.add(loss, logits, y)
            if log.due(step):
                _report_window(log, step, scheduler)
        if after_step is not None and after_step(step, loss):
            break
    return step


def _report_window(log: StepLog, step: int, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    loss, acc = log.window.read()
    now = time.perf_counter()
    metrics = {"train_loss": loss, "train_acc": acc, "lr": scheduler.get_last_lr()[-1],
               "images_per_s": log.window.seen / max(now - log.since, 1e-9)}  # fmt: skip
    if log.report is not None:
        log.report(step, metrics)
    log.window = Tally.zero(log.window.loss_sum.device)
    log.since = now


def evaluate(
    model: nn.Module,
    batches: Batches,
    *,
    precision: Precision | None = None,
    keep_predictions: bool = False,
    cancel: threading.Event | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Loss (plain cross-entropy), accuracy and top-5 accuracy of ``model`` on ``batches``, in eval mode.

    ``reduce`` combines the sums (loss, correct, top-5, images) of every process under torch.distributed, each of
    which evaluated its shard (``core.train.distributed.all_reduce_sum``).

    With ``keep_predictions`` the result also holds ``targets``, ``predicted`` (class indices) and ``probs``
    (``N x classes`` softmax) as numpy arrays, in the batches' order, for confusion matrices and the like.
    An empty split gives NaN metrics and ``n`` 0; a cancelled evaluation gives ``cancelled: True``.
    """
    was_training = model.training
    model.eval()
    outputs, targets = KeptRows(), KeptRows()  # one buffer each, not a tensor per batch (see core.train.kept)
    with torch.inference_mode():
        sums = torch.zeros(4, dtype=torch.float64, device=batches.device)
        for x, y in batches:
            if cancel is not None and cancel.is_set():
                model.train(was_training)
                return {"cancelled": True}
            with precision.autocast() if precision else nullcontext():
                logits = model(x).float()
            k = min(5, logits.shape[1])
            hits = logits.topk(k, dim=1).indices == y[:, None]
            sums += torch.stack([nn.functional.cross_entropy(logits, y, reduction="sum"),
                                 hits[:, 0].sum(), hits.any(1).sum(), torch.tensor(len(y), device=y.device)]).double()  # fmt: skip
            if keep_predictions:
                outputs.add(logits.softmax(1))
                targets.add(y)
        if reduce is not None:
            sums = reduce(sums)
        loss_sum, correct, top5, n_float = sums.tolist()
        n = int(n_float)
    model.train(was_training)
    result: dict[str, Any] = {
        "loss": _ratio(loss_sum, n),
        "accuracy": _ratio(correct, n),
        "top5": _ratio(top5, n),
        "n": n,
    }
    if keep_predictions:
        kept_probs, kept_targets = outputs.tensor(), targets.tensor()
        probs = kept_probs.numpy() if kept_probs is not None else np.zeros((0, 0), np.float32)
        result.update(targets=kept_targets.numpy() if kept_targets is not None else np.zeros(0, np.int64), probs=probs,
                      predicted=probs.argmax(1) if len(probs) else np.zeros(0, np.int64))  # fmt: skip
    return result


def _ratio(total: float, n: int) -> float:
    return total / n if n else math.nan
