"""How long an epoch will take, measured before starting: a few real training steps on random pixels."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from core.train.batches import TRAINING_LAYOUT
from core.train.checkpoints import device_for
from core.train.config import TrainConfig
from core.train.loop import train_step
from core.train.memory import RunTooBigError, memory_problem
from core.train.optim import Precision, build_optimizer, choose_precision
from core.train.plan import RunPreview
from core.train.prepare import PreparedData


def estimate_epoch_seconds(source: RunPreview | PreparedData, *, steps: int = 3) -> float:
    """Seconds one epoch will take (training steps + validation), from ``steps`` real steps timed here.

    Args:
        source: the run before it starts (its preview: random pixels of the plan's size are used), or its
            prepared data.
        steps: timed steps, after one untimed warm-up step.

    Raises:
        RunTooBigError: given a preview, a run of it would not fit in the free memory (nothing is built).
    """
    config, n_train, n_val, _ = _estimate_inputs(source)
    return epoch_seconds(step_seconds(source, steps=steps), n_train, n_val, min(config.batch_size, max(2, n_train)))


def step_seconds(source: RunPreview | PreparedData, *, steps: int = 3) -> float:
    """Seconds one training step of the run takes: the median of ``steps`` real steps (after one untimed warm-up)
    of its network at its batch size on random pixels of its input size. The epoch estimate and the
    learning-rate finder's (``core.train.lr_find``) multiply it.

    Raises:
        RunTooBigError: given a preview, a run of it would not fit in the free memory (nothing is built).
    """
    from core.train.models import build_model

    config, n_train, _, n_classes = _estimate_inputs(source)
    device = device_for(config.device)
    precision = choose_precision(config.amp, device)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random streams untouched
        model = build_model(config.arch, n_classes, weights="none", freeze=config.freeze)
        model.to(device, memory_format=TRAINING_LAYOUT)
        optimizer = build_optimizer(model, replace(config, lr=config.lr or 0.01))
        batch = min(config.batch_size, max(2, n_train))
        x = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
        x = x.contiguous(memory_format=TRAINING_LAYOUT)
        y = torch.randint(0, n_classes, (batch,), device=device)
        return _time_steps(model, optimizer, precision, x, y, steps)


def epoch_seconds(per_step: float, n_train: int, n_val: int, batch: int) -> float:
    """One epoch from the time of one training step: every training batch, plus validation at twice the batch
    (no backward, no optimizer: a forward is about a third of a step)."""
    return per_step * math.ceil(n_train / batch) + per_step / 3 * n_val / batch


def _estimate_inputs(source: RunPreview | PreparedData) -> tuple[TrainConfig, int, int, int]:
    """(settings, training images, validation images, classes)."""
    if isinstance(source, PreparedData):
        return source.config, len(source.indices["train"]), len(source.indices["val"]), len(source.classes)
    problem = memory_problem(source.memory)
    if problem:  # the timed steps take a real batch of the run's size: what the run cannot hold, neither can they
        raise RunTooBigError(problem)
    return source.plan.settings, source.splits["train"], source.splits["val"], max(2, source.n_classes)


def _time_steps(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, x, y, steps: int) -> float:
    """The median time of ``steps`` training steps (the run's own step, ``core.train.loop.train_step``)."""
    criterion = nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 1):
        began = time.perf_counter()
        loss, _ = train_step(model, x, y, optimizer, criterion, precision)
        loss.item()  # waits for the device: the time is the step's, not its launch's
        if i:
            times.append(time.perf_counter() - began)
    return float(np.median(times))
