"""Training: the run configuration, data preparation, the loop, checkpoints, resume, cancel and early stopping.

Shape (torchvision ``references/classification`` + minGPT): :class:`TrainConfig` is a plain dataclass whose
fields carry their own help text; :func:`prepare` turns a config into decoded tensors (scan, split, decode
once); :func:`fit` trains and reports through :class:`TrainCallbacks`, never printing; ``train_one_epoch``
and :func:`evaluate` are the two verbs inside it. The command line and background jobs call the same three.

The default recipe (a config with only ``dataset`` set) and why it is the default:

* ``arch="auto"``: LeNet (3 conv blocks, 32/64/128 channels) when the images' median shorter side is at most
  64 px and no pretrained weights are asked for, else ResNet-18. On tiny images (digits, icons, CIFAR-size
  crops) the ImageNet stem of a ResNet throws away 3/4 of the pixels in its first two layers, and a ResNet
  needs a 96 px input for a usable Grad-CAM map, which costs 10-20x LeNet's compute on a 2-core CPU for no
  accuracy gain (research/cpu-training.md section 6: a 3-layer CNN reaches 98-99% on the digits). Ordinary
  photos get ResNet-18, the usual first choice for a CPU.
  Measured on coloured shapes over textures (64 px, 1,600 images, from scratch, same epochs): ResNet-18 at
  96 px 43% test accuracy in 6.5 min, LeNet at 32 px 96.7% in 72 s.
* ``image_size=0``: :func:`core.models.choose_image_size` from the median side (16 px for the 8 px digits,
  LeNet's 32 px cap for 64 px images).
* SGD with Nesterov momentum, one-cycle learning rates (linear rise over the first quarter of the steps,
  cosine decay to zero, stepped per batch), label smoothing 0.1, weight decay 5e-4: the ingredients of the
  fast CIFAR recipes (airbench, Page's ResNet series) that carry over to a CPU.
* ``epochs=0`` with ``schedule="auto"``: as many epochs as the data needs (:class:`Cycles`): a 12-epoch
  one-cycle run, then 24, then 48 epochs, each cycle only while the network still underfits its training
  images and the last cycle raised validation accuracy. The digits stop after 12 epochs; data that takes
  longer to learn gets it (the shapes above: 54% after 12 epochs, 99.6% after 84). A fixed ``epochs``
  gives one one-cycle run of that length, as before.
* ``augment="auto"``: random shifts of up to 1/8 of the side (pad + crop), plus left-right flips only for
  colour images. Grey-scale data is mostly scans of digits, letters and documents (or X-rays), where a
  mirror image is another class or no class at all; photos of things keep their meaning when mirrored.
* ``normalize="auto"``: the training set's own mean/std from scratch, ImageNet's with pretrained weights.
* ``weights="none"``: the studio works offline; ImageNet weights are one option away (``weights="imagenet"``).

Checkpoints (``last.pt`` every epoch and on cancel, ``best.pt`` by ``best_metric``) hold everything to
continue: model, optimizer, scheduler, AMP scaler, RNG states, the metric history and the partial sums of
an unfinished epoch. Every batch's order and augmentation come from seeds of (seed, epoch, batch)
(``core.data.batch_seed``), so a run cancelled in the middle of an epoch resumes at the next batch and
goes on exactly as if it had never stopped.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from core import data as D
from core.checkpoints import CHECKPOINT_FORMAT, capture_rng, device_for, load_checkpoint, restore_rng, save_checkpoint
from core.errors import CoreError, DatasetError
from core.sources import DatasetRef
from core.workspace import Workspace

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta", "rmsprop")
SCHEDULES = ("auto", "cycles", "plateau", "onecycle", "cosine", "step", "none")
AUGMENT_CHOICES = ("auto", *D.AUGMENTS)
NORMALIZE_CHOICES = ("auto", "dataset", "imagenet")
BEST_METRICS = ("val_acc", "val_loss")
DEVICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("auto", "off", "fp16", "bf16")
# The usual learning rate of each optimizer when ``lr`` is 0 (from scratch; a tenth with pretrained weights).
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3, "adadelta": 1.0, "rmsprop": 1e-3}
LENET_UP_TO = 64  # median image side (px) up to which arch="auto" picks LeNet (from scratch)
AUTO_MAX_EPOCHS = 100  # epochs=0 with an open-ended schedule (cycles, plateau): the cap
FIXED_EPOCHS = 12  # epochs=0 with a fixed-length schedule (onecycle, cosine, step, none)
FIRST_CYCLE = 12  # cycles: epochs of the first one-cycle run; each next one is twice as long
FITTED_TRAIN_ACC = 0.98  # cycles: a network at this training accuracy fits its data; more epochs cannot help
CYCLE_MIN_GAIN = 0.01  # cycles: a cycle that raised validation accuracy less than this was the last useful one
OPEN_ENDED = ("cycles", "plateau")  # schedules that end a run when it has converged (epochs is only a cap)
PLATEAU_DROPS = 2  # plateau: the rate drops twice (x gamma each), and the third plateau ends the run
# plateau: a loss must be this much lower (relative) to count as better; torch's default is 1e-4, but the
# validation loss of a few hundred images moves more than that by chance.
PLATEAU_MIN_CHANGE = 1e-3
ONECYCLE_RISE = 0.25  # share of the steps over which "onecycle" rises when warmup_epochs is 0


class ConfigError(CoreError):
    """A training option with a value that is not allowed; the message names the value and the allowed ones."""


class ResumeError(CoreError):
    """A checkpoint that cannot continue on the data given (other classes, image size or split)."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field whose ``metadata["help"]`` is the one line the page shows next to the widget."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything that defines a training run. JSON-safe; stored with the run and in every checkpoint."""

    dataset: str = _f("", "The data: a folder, a .csv of labels, a .zip, or sample:digits.")
    arch: str = _f("auto", "Network. auto: LeNet for images up to 64 px (from scratch), ResNet-18 otherwise.")
    weights: str = _f("none", "Starting weights: none (random), imagenet (pretrained), or a .pth file path.")
    freeze: str = _f("none", "Layers kept fixed: none, backbone (train only the head), all-but-last.")
    backbone_lr_factor: float = _f(1.0, "Backbone learning rate = lr x this; 0.1 is usual when fine-tuning.")
    image_size: int = _f(0, "Square input side in px; 0 picks it from the images' median size and the network.")
    epochs: int = _f(
        0,
        "Passes over the training images; 0 = auto: as many as the data needs (cycles or plateau "
        f"schedule, at most {AUTO_MAX_EPOCHS}), or {FIXED_EPOCHS} with a fixed-length schedule.",
    )
    batch_size: int = _f(64, "Images per step: larger is faster per image, needs more memory.")
    optimizer: str = _f("sgd", "sgd (momentum), adam, adamw, adadelta or rmsprop.")
    lr: float = _f(0.0, "Peak learning rate; 0 uses the optimizer's usual value (sgd 0.1, adam 0.001, ...).")
    momentum: float = _f(0.9, "Momentum for sgd and rmsprop.")
    nesterov: bool = _f(True, "Nesterov momentum for sgd (usually a little better).")
    weight_decay: float = _f(5e-4, "L2 penalty on the weights; keeps them small against overfitting.")
    schedule: str = _f(
        "auto",
        "Learning-rate schedule: auto (cycles when epochs is 0, else onecycle); cycles (one-cycle runs of "
        f"{FIRST_CYCLE}, {2 * FIRST_CYCLE}, {4 * FIRST_CYCLE}... epochs while the network still underfits); "
        "plateau (x gamma when validation stops improving); onecycle, cosine, step (at milestones), none.",
    )
    plateau_patience: int = _f(3, "plateau schedule: epochs without a lower validation loss before the rate drops.")
    milestones: list[int] = _f([], "step schedule: epochs after which the rate is multiplied by gamma.")
    gamma: float = _f(0.1, "step schedule: the factor applied at each milestone.")
    warmup_epochs: float = _f(0.0, "Epochs of linear warm-up from zero (onecycle: its rise, default 1/4 of the run).")
    label_smoothing: float = _f(0.1, "Share of each target spread over the other classes; curbs overconfidence.")
    augment: str = _f("auto", "auto (shifts; flips only for colour), none, flip, crop, crop-flip, strong.")
    normalize: str = _f("auto", "Input scaling: dataset (its mean/std), imagenet, auto (imagenet if pretrained).")
    oversample: bool = _f(False, "Repeat images of rare classes so each has at least rare_threshold per epoch.")
    rare_threshold: int = _f(10, "A class with fewer training images than this is rare (oversampled).")
    early_stop_patience: int = _f(0, "Stop after this many epochs without a better best_metric; 0 = never.")
    best_metric: str = _f("val_acc", "What best.pt is chosen by: val_acc (higher) or val_loss (lower).")
    val_fraction: float = _f(0.15, "Share of each class for validation, when the data has no val folder.")
    test_fraction: float = _f(0.15, "Share of each class for the test, when the data has no test folder.")
    seed: int = _f(0, "Seed of the split, the initial weights, shuffling and augmentation.")
    threads: int = _f(0, "CPU threads for this process; 0 leaves the setting to the app (one run: all cores).")
    device: str = _f("auto", "auto (GPU when there is one), cpu or cuda.")
    amp: str = _f("auto", "Mixed precision: auto (on for GPUs), off, fp16, bf16 (bf16 is ~40x slower on CPUs).")
    log_every: int = _f(20, "Steps between progress reports (each report waits for the device once).")

    def validate(self) -> TrainConfig:
        """Check every value; returns self. Raises ConfigError naming the bad value and the allowed ones."""
        from core.models import ARCHS, FREEZE_MODES

        _one_of("arch", self.arch, ("auto", *ARCHS))
        _one_of("freeze", self.freeze, FREEZE_MODES)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("augment", self.augment, AUGMENT_CHOICES)
        _one_of("normalize", self.normalize, NORMALIZE_CHOICES)
        _one_of("best_metric", self.best_metric, BEST_METRICS)
        _one_of("device", self.device, DEVICES)
        _one_of("amp", self.amp, AMP_CHOICES)
        self._check_numbers()
        return self

    def _check_numbers(self) -> None:
        _at_least("epochs", self.epochs, 0)
        _at_least("plateau_patience", self.plateau_patience, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("image_size", self.image_size, 0)
        _at_least("lr", self.lr, 0)
        _at_least("backbone_lr_factor", self.backbone_lr_factor, 0)
        _at_least("weight_decay", self.weight_decay, 0)
        _at_least("warmup_epochs", self.warmup_epochs, 0)
        _at_least("rare_threshold", self.rare_threshold, 1)
        _at_least("early_stop_patience", self.early_stop_patience, 0)
        _at_least("threads", self.threads, 0)
        _at_least("log_every", self.log_every, 1)
        _between("momentum", self.momentum, 0, 1)
        _between("label_smoothing", self.label_smoothing, 0, 1)
        _between("gamma", self.gamma, 0, 1)
        if (
            not 0 <= self.val_fraction < 1
            or not 0 <= self.test_fraction < 1
            or self.val_fraction + self.test_fraction >= 1
        ):
            raise ConfigError(f"val_fraction {self.val_fraction} and test_fraction {self.test_fraction}: each in [0, 1) "
                              "and together under 1")  # fmt: skip
        if not all(isinstance(m, int) and m >= 1 for m in self.milestones):
            raise ConfigError(f"milestones {self.milestones}: expected whole epoch numbers >= 1")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (stored with the run and in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config from :meth:`to_dict`'s output; unknown keys raise ConfigError (naming the known ones)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> one line of help text (for the page)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _at_least(name: str, value: float, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise ConfigError(f"{name} {value!r}: expected a number >= {low}")


def _between(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < high:
        raise ConfigError(f"{name} {value!r}: expected a number in [{low}, {high})")


def resolve_config(config: TrainConfig, typical_side: int, grayscale: bool) -> TrainConfig:
    """Replace every ``auto``/0 choice that depends on the data by its value (see the module docstring)."""
    from core.models import choose_image_size

    pretrained = config.weights != "none"
    arch = config.arch
    if arch == "auto":
        arch = "lenet" if typical_side <= LENET_UP_TO and not pretrained else "resnet18"
    epochs, until_converged = planned_epochs(config)
    return replace(
        config,
        arch=arch,
        schedule=config.schedule if config.schedule != "auto" else ("cycles" if until_converged else "onecycle"),
        epochs=config.epochs if until_converged else epochs,  # open-ended keeps 0 = auto (the cap, AUTO_MAX_EPOCHS)
        image_size=config.image_size or choose_image_size(arch, max(1, typical_side)),
        augment=config.augment if config.augment != "auto" else ("crop" if grayscale else "crop-flip"),
        normalize=config.normalize if config.normalize != "auto" else ("imagenet" if pretrained else "dataset"),
        lr=config.lr or DEFAULT_LR[config.optimizer] * (0.1 if pretrained else 1.0),
    )


def planned_epochs(config: TrainConfig) -> tuple[int, bool]:
    """(epochs, until_converged): the epochs a run of ``config`` will do, and whether that is only a cap
    because an open-ended schedule (cycles, plateau) ends the run when it has converged."""
    schedule = config.schedule if config.schedule != "auto" else ("cycles" if config.epochs == 0 else "onecycle")
    if schedule in OPEN_ENDED:
        return config.epochs or AUTO_MAX_EPOCHS, True
    return config.epochs or FIXED_EPOCHS, False


def apply_thread_budget(threads: int = 0) -> int:
    """Set the calling thread's torch thread count (0: every usable core); returns the count set.

    Measured on torch 2.14.1: once a thread has used torch, ``torch.set_num_threads`` changes only that
    thread's OpenMP team size (plus the default for threads started later), not other running threads'. So
    ``fit`` calls this in the training thread when ``config.threads`` is set, and background jobs follow the
    registry's shared budget through ``JobContext.sync_threads`` (core/jobs.py) otherwise.
    """
    from core.cpu import usable_cores

    n = threads if threads > 0 else usable_cores()
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------------------------------------------------------
# Data preparation


@dataclass
class PreparedData:
    """A dataset ready to train on: the split, the decoded images and what was dropped, with the config that
    made them (its ``auto`` choices resolved)."""

    config: TrainConfig
    dataset: str
    root: Path
    splits: pd.DataFrame  # path, label, split: store it with the run so a resume uses exactly this split
    classes: list[str]
    tensors: D.TensorSet
    labels: torch.Tensor  # class index of each decoded image
    indices: dict[str, np.ndarray]  # split -> positions in tensors
    mean: list[float]  # of the training images, 0..1 units
    std: list[float]
    typical_side: int
    grayscale: bool
    dropped: pd.DataFrame  # path, reason: unreadable at scan time or at decode time
    seconds: float

    @property
    def image_size(self) -> int:
        return self.tensors.image_size

    def counts(self) -> dict[str, int]:
        return {s: len(i) for s, i in self.indices.items()}


GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def prepare(
    config: TrainConfig,
    ws: Workspace,
    *,
    progress: D.Progress | None = None,
    splits: pd.DataFrame | None = None,
    workers: int | None = None,
) -> PreparedData:
    """Scan ``config.dataset``, split it (or take ``splits``, e.g. a stored run's), and decode it once.

    Args:
        config: the run's config (validated here).
        ws: the workspace (its cache, and the folders the dataset may be read from).
        progress: called with (decoded, to decode) while images are decoded.
        splits: the ``path, label, split`` frame of an earlier run to reuse exactly (resume).
        workers: decoding threads (default: usable cores).

    Raises:
        DatasetError: the dataset cannot be read, has fewer than two classes or no training image.
    """
    from core.scan import scan_dataset
    from core.sources import resolve_dataset

    started = time.perf_counter()
    config.validate()
    ref = resolve_dataset(config.dataset, ws)
    scan = scan_dataset(ref, ws.cache, workers=workers)
    if splits is None:
        splits = D.make_splits(scan.manifest, config.val_fraction, config.test_fraction, config.seed)
    side, gray = _image_facts(scan.manifest, splits)
    resolved = resolve_config(config, side, gray)
    tensors = D.load_tensors(ref.root, list(splits["path"]), resolved.image_size, progress=progress,
                             workers=workers, cache_dir=ws.cache)  # fmt: skip
    return _assemble_prepared(resolved, ref, splits, tensors, scan.unreadable, side, gray, started)


def _image_facts(manifest: pd.DataFrame, splits: pd.DataFrame) -> tuple[int, bool]:
    """(median shorter side, mostly single-channel) of the images in the split."""
    rows = manifest[manifest["path"].isin(set(splits["path"]))]
    if rows.empty:
        raise DatasetError("none of the split's images is in the dataset any more")
    side = int(np.median(np.minimum(rows["width"], rows["height"])))
    return side, bool(rows["mode"].isin(GRAY_MODES).mean() > 0.5)


def _assemble_prepared(
    config: TrainConfig,
    ref: DatasetRef,
    splits: pd.DataFrame,
    tensors: D.TensorSet,
    unreadable: pd.DataFrame,
    side: int,
    gray: bool,
    started: float,
) -> PreparedData:
    classes = D.class_names(splits)
    if len(classes) < 2:
        raise DatasetError(f"{config.dataset}: a classifier needs at least 2 classes, found {classes}")
    index_of = {c: i for i, c in enumerate(classes)}
    label_of = dict(zip(splits["path"], splits["label"], strict=True))
    labels = torch.tensor([index_of[label_of[p]] for p in tensors.paths], dtype=torch.long)
    indices = D.split_indices(splits, tensors.paths)
    if len(indices["train"]) < 2:
        raise DatasetError(f"{config.dataset}: {len(indices['train'])} readable training images; at least 2 needed")
    mean, std = D.channel_stats(tensors.images, indices["train"])
    dropped = pd.concat([unreadable, tensors.dropped], ignore_index=True).drop_duplicates("path", keep="last")
    return PreparedData(config, config.dataset, ref.root, splits, classes, tensors, labels, indices, mean, std,
                        side, gray, dropped, time.perf_counter() - started)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Optimizer, schedule, precision


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over the trainable parameters (backbone/head groups)."""
    from core.models import param_groups

    groups = param_groups(model, config.arch, config.lr, config.backbone_lr_factor)
    wd = config.weight_decay
    if config.optimizer == "sgd":
        nesterov = config.nesterov and config.momentum > 0  # torch refuses Nesterov without momentum
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=nesterov, weight_decay=wd)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=wd)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=wd)
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(groups, lr=config.lr, weight_decay=wd)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr, momentum=config.momentum, weight_decay=wd)
    raise ConfigError(f"optimizer {config.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")


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
    """The learning-rate multiplier at each step: warm-up, then the schedule (``LambdaLR`` steps it per batch)."""
    epochs, until_converged = planned_epochs(config)
    schedule = config.schedule if config.schedule != "auto" else ("cycles" if until_converged else "onecycle")
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


@dataclass
class Precision:
    """How the forward pass runs: float32, or autocast to fp16 (with a gradient scaler) or bf16."""

    device: torch.device
    dtype: torch.dtype | None  # None: float32
    scaler: torch.amp.GradScaler

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def choose_precision(amp: str, device: torch.device) -> Precision:
    """``auto``: bf16 on GPUs that have it, else fp16 with a scaler; float32 on the CPU (bf16 there ran 40-50x
    slower without AVX512-BF16/AMX, research/cpu-training.md section 4, so only an explicit ``bf16`` uses it)."""
    if amp == "auto":
        amp = "off" if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    dtype = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return Precision(device, dtype, scaler)


# ---------------------------------------------------------------------------------------------------------------
# The two verbs: train one epoch, evaluate


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
) -> int:
    """Train on ``batches`` until they run out or ``cancel`` is set (checked before every step).

    The loss and accuracy are summed into ``tally`` on the device; nothing here waits for the device except
    a report every ``log.every`` steps. Returns the global step count after the last step taken.
    """
    for x, y in batches:
        if cancel is not None and cancel.is_set():
            break
        with precision.autocast():
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        scheduler.step()
        step += 1
        tally.add(loss, logits, y)
        if log is not None:
            log.window.add(loss, logits, y)
            if log.due(step):
                _report_window(log, step, scheduler)
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
    batches: D.Batches,
    *,
    precision: Precision | None = None,
    keep_predictions: bool = False,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Loss (plain cross-entropy), accuracy and top-5 accuracy of ``model`` on ``batches``, in eval mode.

    With ``keep_predictions`` the result also holds ``targets``, ``predicted`` (class indices) and ``probs``
    (``N x classes`` softmax) as numpy arrays, in the batches' order, for confusion matrices and the like.
    An empty split gives NaN metrics and ``n`` 0; a cancelled evaluation gives ``cancelled: True``.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, top5, n = 0.0, 0, 0, 0
    outputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    with torch.inference_mode():
        sums = torch.zeros(3, dtype=torch.float64, device=batches.device)
        for x, y in batches:
            if cancel is not None and cancel.is_set():
                model.train(was_training)
                return {"cancelled": True}
            with precision.autocast() if precision else nullcontext():
                logits = model(x).float()
            k = min(5, logits.shape[1])
            hits = logits.topk(k, dim=1).indices == y[:, None]
            sums += torch.stack([nn.functional.cross_entropy(logits, y, reduction="sum"),
                                 hits[:, 0].sum(), hits.any(1).sum()]).double()  # fmt: skip
            n += len(y)
            if keep_predictions:
                outputs.append(logits.softmax(1).cpu())
                targets.append(y.cpu())
        loss_sum, correct, top5 = sums.tolist()
    model.train(was_training)
    result: dict[str, Any] = {
        "loss": _ratio(loss_sum, n),
        "accuracy": _ratio(correct, n),
        "top5": _ratio(top5, n),
        "n": n,
    }
    if keep_predictions:
        probs = torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), np.float32)
        result.update(targets=torch.cat(targets).numpy() if targets else np.zeros(0, np.int64), probs=probs,
                      predicted=probs.argmax(1) if len(probs) else np.zeros(0, np.int64))  # fmt: skip
    return result


def _ratio(total: float, n: int) -> float:
    return total / n if n else math.nan


# ---------------------------------------------------------------------------------------------------------------
# fit: the whole run


@dataclass
class TrainCallbacks:
    """Optional functions the trainer calls (from its own thread): the CLI prints, the job stores, the page polls.

    * ``on_start(info)``: once, before the first step; ``info`` holds epochs, steps_per_epoch, total_steps,
      start_epoch, start_step, n_train, n_val, n_test, classes, image_size, arch, device, parameters.
    * ``on_step(step, epoch, metrics)``: every ``log_every`` steps (and at least every 10 s); train_loss,
      train_acc (over the steps since the last report), lr, images_per_s.
    * ``on_epoch(epoch, metrics)``: after each epoch (numbered from 1); train_loss, train_acc, val_loss,
      val_acc, val_top5, lr, seconds, images_per_s.
    * ``on_checkpoint(path, kind)``: after ``last.pt`` or ``best.pt`` was written (kind "last" / "best").
    """

    on_start: Callable[[dict[str, Any]], None] | None = None
    on_step: Callable[[int, int, dict[str, float]], None] | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    on_checkpoint: Callable[[Path, str], None] | None = None


@dataclass
class FitResult:
    """How a run ended. ``status`` is ``completed`` (early stopping included) or ``cancelled``."""

    status: str
    epochs: list[dict[str, float]]  # every epoch, those before an interruption too
    test: dict[str, float]  # loss, accuracy, top5, n, epoch (of best.pt); empty when cancelled or no test split
    test_predictions: dict[str, Any] | None  # targets, predicted, probs, paths (numpy), for evaluation pages
    best_epoch: int | None
    best_value: float | None
    stopped_early: bool
    steps: int
    wall_s: float
    config: dict[str, Any]  # the resolved config the run used
    device: str
    checkpoint_dir: Path
    dropped: pd.DataFrame  # images left out, with reasons

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"


def fit(
    config: TrainConfig,
    data: PreparedData,
    *,
    callbacks: TrainCallbacks | None = None,
    cancel: threading.Event | None = None,
    checkpoint_dir: Path,
    resume_from: Path | None = None,
) -> FitResult:
    """Train on ``data`` as ``config`` says, writing ``last.pt``/``best.pt`` into ``checkpoint_dir``.

    Args:
        config: the run's config; its ``auto`` choices are resolved against ``data``. On resume the config
            stored in the checkpoint is used (it is the resolved one), so the run goes on unchanged.
        data: from :func:`prepare` (on resume: with the run's stored split).
        callbacks: progress reports (see :class:`TrainCallbacks`).
        cancel: when set, the run stops before its next step, writes ``last.pt`` (that exact step: a resume
            goes on from there, mid-epoch included) and returns status ``cancelled``.
        checkpoint_dir: where the checkpoints go (created).
        resume_from: a ``last.pt`` to continue from.

    Raises:
        ResumeError: the checkpoint does not fit ``data`` (classes or image size differ).
    """
    started = time.perf_counter()
    checkpoint = _load(resume_from) if resume_from is not None else None
    config = _config_for(config, data, checkpoint)
    if config.threads:
        apply_thread_budget(config.threads)
    run = _Run(config, data, Path(checkpoint_dir), checkpoint)
    callbacks = callbacks or TrainCallbacks()
    _call(callbacks.on_start, run.info())
    status = run.train(callbacks, cancel)
    test, predictions = run.test() if status == "completed" else ({}, None)
    return run.result(status, test, predictions, time.perf_counter() - started)


def _call(fn: Callable[..., None] | None, *args: Any) -> None:
    if fn is not None:
        fn(*args)


def _load(path: Path) -> dict[str, Any]:
    return load_checkpoint(path, map_location="cpu")


def _config_for(config: TrainConfig, data: PreparedData, checkpoint: dict[str, Any] | None) -> TrainConfig:
    if checkpoint is None:
        resolved = resolve_config(config.validate(), data.typical_side, data.grayscale)
        if resolved.image_size != data.image_size:
            raise ConfigError(f"the config asks for {resolved.image_size} px images but the data was prepared at "
                              f"{data.image_size} px; prepare it with this config")  # fmt: skip
        return resolved
    stored = TrainConfig.from_dict(checkpoint["config"]).validate()
    if list(checkpoint["classes"]) != data.classes:
        raise ResumeError(f"the checkpoint was trained on classes {checkpoint['classes']}, the data has {data.classes}")
    if checkpoint["image_size"] != data.image_size:
        raise ResumeError(f"the checkpoint uses {checkpoint['image_size']} px images, the data was prepared at "
                          f"{data.image_size} px (prepare it with the run's stored config)")  # fmt: skip
    return stored


class _Run:
    """One run's moving parts and counters; ``fit`` drives it epoch by epoch."""

    def __init__(self, config: TrainConfig, data: PreparedData, folder: Path, checkpoint: dict | None) -> None:
        from core.models import IMAGENET_MEAN, IMAGENET_STD, build_model

        self.config, self.data, self.folder = config, data, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.device = device_for(config.device)
        self.precision = choose_precision(config.amp, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
        torch.manual_seed(config.seed)
        # A resumed run gets its weights from the checkpoint: no need for (possibly offline) ImageNet files.
        weights = config.weights if checkpoint is None else "none"
        self.model = build_model(config.arch, len(data.classes), weights=weights, freeze=config.freeze)
        self.model.to(self.device, memory_format=_memory_format(self.device))
        dataset_stats = config.normalize == "dataset"
        self.mean = data.mean if dataset_stats else list(IMAGENET_MEAN)
        self.std = data.std if dataset_stats else list(IMAGENET_STD)
        self.train_batches, self.val_batches, self.test_batches = self._batches()
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config, len(self.train_batches))
        factor = self.scheduler.lr_lambdas[0]
        self.adaptive = factor if isinstance(factor, Cycles | Plateau) else None  # decides when the run ends
        self.max_epochs = config.epochs or AUTO_MAX_EPOCHS  # 0 only with an open-ended schedule
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.history: list[dict[str, float]] = []
        self.epoch = self.step = self.batch = self.bad_epochs = 0  # epochs completed, steps, batches into epoch
        self.best_value: float | None = None
        self.best_key: tuple[float, float] | None = None
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.tally, self.partial_seconds = Tally.zero(self.device), 0.0
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- set-up --------------------------------------------------------------------------------

    def _batches(self) -> tuple[D.Batches, D.Batches, D.Batches]:
        d, c = self.data, self.config
        common = {"mean": self.mean, "std": self.std, "device": self.device, "seed": c.seed}
        train_labels = d.labels[torch.as_tensor(d.indices["train"], dtype=torch.long)]
        sampler = D.weighted_sampler(train_labels, c.rare_threshold) if c.oversample else None
        train = D.Batches(d.tensors.images, d.labels, d.indices["train"], batch_size=c.batch_size, augment=c.augment,
                          shuffle=True, sampler=sampler, **common)  # fmt: skip
        # Evaluation keeps no activations for backward: twice the batch fits and runs faster per image.
        val, test = (D.Batches(d.tensors.images, d.labels, d.indices[s], batch_size=2 * c.batch_size, **common)
                     for s in ("val", "test"))  # fmt: skip
        return train, val, test

    def _planned_epochs(self) -> int:
        return self.adaptive.planned_epochs if isinstance(self.adaptive, Cycles) else self.max_epochs

    def info(self) -> dict[str, Any]:
        from core.models import count_parameters

        per_epoch = len(self.train_batches)
        # Open-ended schedules ("until_converged"): "epochs" is the current cycle's end (cycles) or the cap.
        return {"epochs": self._planned_epochs(), "max_epochs": self.max_epochs,
                "until_converged": self.adaptive is not None, "steps_per_epoch": per_epoch,
                "total_steps": per_epoch * self._planned_epochs(),
                "start_epoch": self.epoch, "start_step": self.step, "n_train": self.train_batches.n_samples,
                "n_val": len(self.val_batches.indices), "n_test": len(self.test_batches.indices),
                "classes": self.data.classes, "image_size": self.data.image_size, "arch": self.config.arch,
                "device": str(self.device), "parameters": count_parameters(self.model)[0]}  # fmt: skip

    # -- the loop ------------------------------------------------------------------------------

    def train(self, callbacks: TrainCallbacks, cancel: threading.Event | None) -> str:
        """Epochs until the configured number, early stopping or cancel; returns the status."""
        from core.models import set_train_mode

        while self.epoch < self.max_epochs and not self.stopped_early:
            set_train_mode(self.model, self.config.freeze)
            began = time.perf_counter()
            self._train_epoch(callbacks, cancel)
            self.partial_seconds += time.perf_counter() - began
            if self.batch < len(self.train_batches):  # cancelled mid-epoch
                return self._cancelled(callbacks)
            began = time.perf_counter()
            val = evaluate(self.model, self.val_batches, precision=self.precision, cancel=cancel)
            self.partial_seconds += time.perf_counter() - began
            if val.get("cancelled"):
                return self._cancelled(callbacks)
            self._end_epoch(val, callbacks)
        return "completed"

    def _train_epoch(self, callbacks: TrainCallbacks, cancel: threading.Event | None) -> None:
        epoch_number = self.epoch + 1

        def report(step: int, metrics: dict[str, float]) -> None:
            _call(callbacks.on_step, step, epoch_number, metrics)

        log = StepLog(self.config.log_every, report if callbacks.on_step else None, Tally.zero(self.device))
        batches = self.train_batches.epoch(self.epoch, start_batch=self.batch)
        step = train_one_epoch(self.model, batches, self.optimizer, self.scheduler, self.criterion, self.precision,
                               tally=self.tally, step=self.step, log=log, cancel=cancel)  # fmt: skip
        self.batch += step - self.step
        self.step = step

    def _end_epoch(self, val: dict[str, Any], callbacks: TrainCallbacks) -> None:
        train_loss, train_acc = self.tally.read()
        seconds = self.partial_seconds
        metrics = {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val["loss"], "val_acc": val["accuracy"],
                   "val_top5": val["top5"], "lr": self.scheduler.get_last_lr()[-1], "seconds": seconds,
                   "images_per_s": self.tally.seen / max(seconds, 1e-9)}  # fmt: skip
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **metrics})
        self.batch, self.partial_seconds, self.tally = 0, 0.0, Tally.zero(self.device)
        improved = self._update_best(metrics)
        if self.adaptive is not None:
            self.stopped_early = self.adaptive.end_epoch(self.epoch, metrics) or self.stopped_early
        self._save("last", callbacks)
        if improved:
            self._save("best", callbacks)
        # planned_epochs: how long the run is now known to be (it grows when the cycles schedule adds a cycle).
        _call(callbacks.on_epoch, self.epoch, {**metrics, "planned_epochs": self._planned_epochs()})

    def _update_best(self, metrics: dict[str, float]) -> bool:
        """Record the epoch just ended; True when it is the best so far (always, without validation images).

        With ``val_acc`` a tie goes to the lower validation loss: on a few hundred validation images many
        epochs share the top accuracy, and the later, better-fitted one is usually the better model.
        """
        key = _best_key(self.config.best_metric, metrics)
        better = self.best_key is None or any(math.isnan(k) for k in (*key, *self.best_key)) or key > self.best_key
        if better:
            self.best_key, self.best_epoch, self.bad_epochs = key, self.epoch, 0
            self.best_value = metrics[self.config.best_metric]
        else:
            self.bad_epochs += 1
            patience = self.config.early_stop_patience
            self.stopped_early = bool(patience) and self.bad_epochs >= patience
        return better

    def _cancelled(self, callbacks: TrainCallbacks) -> str:
        self._save("last", callbacks)
        return "cancelled"

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        c = self.config
        partial = {"batch": self.batch, "seconds": self.partial_seconds, **self.tally.state()}
        metrics = {"history": self.history, "best_value": self.best_value, "best_key": self.best_key, "best_epoch": self.best_epoch,
                   "bad_epochs": self.bad_epochs, "stopped_early": self.stopped_early, "partial": partial}  # fmt: skip
        return {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(), "arch": c.arch,
                "num_classes": len(self.data.classes), "classes": list(self.data.classes),
                "image_size": self.data.image_size, "mean": list(self.mean), "std": list(self.std), "freeze": c.freeze,
                "epoch": self.epoch, "step": self.step, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.precision.scaler.state_dict(),
                "rng": capture_rng(), "metrics": metrics, "config": c.to_dict()}  # fmt: skip

    def _save(self, kind: str, callbacks: TrainCallbacks) -> None:
        path = self.folder / f"{kind}.pt"
        save_checkpoint(path, self._state())
        _call(callbacks.on_checkpoint, path, kind)

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.precision.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"])
        m = checkpoint["metrics"]
        self.history, self.best_value, self.best_epoch = list(m["history"]), m["best_value"], m["best_epoch"]
        self.best_key = tuple(m["best_key"]) if m["best_key"] is not None else None
        self.bad_epochs, self.stopped_early = m["bad_epochs"], m["stopped_early"]
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.batch, self.partial_seconds = m["partial"]["batch"], m["partial"]["seconds"]
        self.tally.load(m["partial"])

    # -- the end -------------------------------------------------------------------------------

    def test(self) -> tuple[dict[str, float], dict[str, Any] | None]:
        """Test metrics of the best checkpoint (and its per-image predictions); empty without a test split."""
        if not len(self.test_batches.indices):
            return {}, None
        best = self.folder / "best.pt"
        if best.is_file():
            self.model.load_state_dict(_load(best)["model"])
        out = evaluate(self.model, self.test_batches, precision=self.precision, keep_predictions=True)
        paths = [self.data.tensors.paths[i] for i in self.data.indices["test"]]
        predictions = {"paths": paths, "targets": out.pop("targets"), "predicted": out.pop("predicted"),
                       "probs": out.pop("probs"), "classes": list(self.data.classes)}  # fmt: skip
        return {**out, "epoch": self.best_epoch or self.epoch}, predictions

    def result(self, status: str, test: dict, predictions: dict | None, wall_s: float) -> FitResult:
        return FitResult(status, list(self.history), test, predictions, self.best_epoch, self.best_value,
                         self.stopped_early, self.step, wall_s, self.config.to_dict(), str(self.device), self.folder,
                         self.data.dropped)  # fmt: skip


def _best_key(best_metric: str, metrics: dict[str, float]) -> tuple[float, float]:
    """Larger is better: (accuracy, -loss) for ``val_acc``, (-loss, accuracy) for ``val_loss``."""
    if best_metric == "val_loss":
        return -metrics["val_loss"], metrics["val_acc"]
    return metrics["val_acc"], -metrics["val_loss"]


def _memory_format(device: torch.device) -> torch.memory_format:
    # channels_last pays on GPU tensor cores; on this CPU it changed nothing (research/cpu-training.md section 4).
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


# ---------------------------------------------------------------------------------------------------------------
# Time per epoch, before starting


def estimate_epoch_seconds(config: TrainConfig, data: PreparedData | pd.DataFrame, *, steps: int = 3) -> float:
    """Seconds one epoch will take (training steps + validation), from ``steps`` real steps timed here.

    Args:
        config: the run's config.
        data: the prepared data, or just a scan manifest (random pixels of the right size are used then).
        steps: timed steps, after one untimed warm-up step.
    """
    from core.models import build_model

    config, n_train, n_val = _estimate_inputs(config, data)
    device = device_for(config.device)
    precision = choose_precision(config.amp, device)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random streams untouched
        model = build_model(config.arch, _n_classes(data), weights="none", freeze=config.freeze)
        model.to(device, memory_format=_memory_format(device))
        optimizer = build_optimizer(model, replace(config, lr=config.lr or 0.01))
        batch = min(config.batch_size, max(2, n_train))
        x = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
        y = torch.randint(0, _n_classes(data), (batch,), device=device)
        per_step = _time_steps(model, optimizer, precision, x, y, steps)
    return epoch_seconds(per_step, n_train, n_val, batch)


def epoch_seconds(per_step: float, n_train: int, n_val: int, batch: int) -> float:
    """One epoch from the time of one training step: every training batch, plus validation at twice the batch
    (no backward, no optimizer: a forward is about a third of a step)."""
    return per_step * math.ceil(n_train / batch) + per_step / 3 * n_val / batch


def _estimate_inputs(config: TrainConfig, data: PreparedData | pd.DataFrame) -> tuple[TrainConfig, int, int]:
    if isinstance(data, PreparedData):
        return data.config, len(data.indices["train"]), len(data.indices["val"])
    frame = data.assign(split=data["split"].replace("", "unsplit"))
    side, gray = _image_facts(frame, frame)
    resolved = resolve_config(config.validate(), side, gray)
    if frame["split"].isin(D.SPLITS).any():
        return resolved, int((frame["split"] == "train").sum()), int((frame["split"] == "val").sum())
    n = len(frame)
    return resolved, round(n * (1 - config.val_fraction - config.test_fraction)), round(n * config.val_fraction)


def _n_classes(data: PreparedData | pd.DataFrame) -> int:
    return max(2, len(data.classes) if isinstance(data, PreparedData) else data["label"].nunique())


def _time_steps(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, x, y, steps: int) -> float:
    criterion = nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 1):
        began = time.perf_counter()
        with precision.autocast():
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the device: the time is the step's, not its launch's
        if i:
            times.append(time.perf_counter() - began)
    return float(np.median(times))
