"""Timing a fixed number of training steps: the unit of the thread sweep (throughput, not a whole run)."""

from __future__ import annotations

import itertools
import time

import torch

from core.train.batches import Batches
from core.train.loop import Tally, train_one_epoch
from core.train.models import build_model
from core.train.optim import build_optimizer, choose_precision
from core.train.prepare import PreparedData
from core.train.schedules import build_scheduler

WARMUP_STEPS = 3  # untimed: the first steps allocate buffers and pick kernels


def time_steps(data: PreparedData, steps: int) -> tuple[float, int]:
    """(seconds, images) of ``steps`` training steps of the run's network on its prepared data, on the CPU or
    the GPU the config names, with the calling thread's torch thread count. Cycles through the training images
    as often as needed; the model starts fresh each call (seeded), so every point does the same work."""
    config = data.config
    torch.manual_seed(config.seed)
    model = build_model(config.arch, len(data.classes), freeze=config.freeze).train()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, max(1, steps))
    precision = choose_precision("off", torch.device("cpu"))
    criterion = torch.nn.CrossEntropyLoss()
    mean, std = data.scaling()  # as the run scales its inputs (core.train.runplan.RunPlan.scaling)
    batches = Batches(data.tensors.images, data.labels, data.indices["train"], batch_size=config.batch_size,
                      mean=mean, std=std, augment=config.augment, shuffle=True, seed=config.seed)  # fmt: skip
    stream = itertools.chain.from_iterable(batches.epoch(e) for e in itertools.count())
    _run(model, itertools.islice(stream, WARMUP_STEPS), optimizer, scheduler, criterion, precision)
    began = time.perf_counter()
    images = _run(model, itertools.islice(stream, steps), optimizer, scheduler, criterion, precision)
    return time.perf_counter() - began, images


def _run(model, batches, optimizer, scheduler, criterion, precision) -> int:
    tally = Tally.zero(torch.device("cpu"))
    train_one_epoch(model, batches, optimizer, scheduler, criterion, precision, tally=tally, step=0)
    tally.read()  # waits for the last step: its work is inside the timing
    return tally.seen
