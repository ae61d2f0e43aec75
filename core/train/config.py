"""The training configuration: every option with its help line, its validation, and the default recipe.

Shape (torchvision ``references/classification`` + minGPT): :class:`TrainConfig` is a plain dataclass whose
fields carry their own help text; :func:`prepare` turns a config into decoded tensors (scan, split, decode
once); :func:`fit` trains and reports through :class:`TrainCallbacks`, never printing; ``train_one_epoch``
and :func:`evaluate` are the two verbs inside it. The command line and background jobs call the same three.

The default recipe (a config with only ``dataset`` set) and why it is the default:

* ``arch="auto"``: LeNet (3 conv blocks, 32/64/128 channels) when the images' median shorter side is at most
  64 px and no pretrained weights are asked for, else ResNet-18. On tiny images (digits, icons, CIFAR-size
  crops) the ImageNet stem of a ResNet throws away 3/4 of the pixels in its first two layers, and a ResNet
  needs a 112 px input for a usable Grad-CAM map (layer3 7x7), which costs 10-20x LeNet's compute on a 2-core
  CPU for no accuracy gain (bench/README.md: LeNet at 16 px reaches 98.9% on the digits).
  Ordinary photos get ResNet-18, the usual first choice for a CPU.
  Measured on coloured shapes over textures (64 px, 1,600 images, from scratch, same epochs): ResNet-18 at
  96 px (its smallest input then) 43% test accuracy in 6.5 min, LeNet at 32 px 96.7% in 72 s.
* ``image_size=0``: :func:`core.train.archs.choose_image_size` from the median side (16 px for the 8 px digits,
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
* ``normalize="auto"``: the training set's own mean/std from scratch and for a child run (``from_run``),
  ImageNet's with pretrained weights.
* ``weights="none"``: the studio works offline; ImageNet weights are one option away (``weights="imagenet"``).

Checkpoints (``last.pt`` every epoch and on cancel, ``best.pt`` by ``best_metric``) hold everything to
continue: model, optimizer, scheduler, AMP scaler, RNG states, the metric history and the partial sums of
an unfinished epoch. Every batch's order and augmentation come from seeds of (seed, epoch, batch)
(``core.train.batches.batch_seed``), so a run cancelled in the middle of an epoch resumes at the next batch and
goes on exactly as if it had never stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any

from core.common.errors import CoreError

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta", "rmsprop")
SCHEDULES = ("auto", "cycles", "plateau", "onecycle", "cosine", "step", "none")
AUGMENTS = ("none", "flip", "crop", "crop-flip", "strong")  # presets core.train.batches applies on the tensors
AUGMENT_CHOICES = ("auto", *AUGMENTS)
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
OPEN_ENDED = ("cycles", "plateau")  # schedules that end a run when it has converged (epochs is only a cap)


class ConfigError(CoreError):
    """A training option with a value that is not allowed; the message names the value and the allowed ones."""


class ResumeError(CoreError):
    """A checkpoint that cannot continue on the data given (other classes, image size or split)."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field whose ``metadata["help"]`` is the one line the page shows next to the widget (and
    ``metadata["label"]`` its name in words, from ``LABELS``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def label_of(name: str) -> str:
    """The option's name in words ("Learning rate" for ``lr``)."""
    return LABELS.get(name, name.replace("_", " ").capitalize())


# What each option is called on the page (the field names are the command line's and the JSON's).
LABELS = {
    "dataset": "Dataset",
    "arch": "Network",
    "weights": "Starting weights",
    "from_run": "Start from run",
    "freeze": "Frozen layers",
    "backbone_lr_factor": "Backbone learning-rate factor",
    "image_size": "Input size (px)",
    "epochs": "Epochs",
    "batch_size": "Images per step",
    "optimizer": "Optimizer",
    "lr": "Learning rate",
    "momentum": "Momentum",
    "nesterov": "Nesterov momentum",
    "weight_decay": "Weight decay",
    "schedule": "Learning-rate schedule",
    "plateau_patience": "Plateau patience (epochs)",
    "milestones": "Step schedule: epochs",
    "gamma": "Step schedule: factor",
    "warmup_epochs": "Warm-up epochs",
    "label_smoothing": "Label smoothing",
    "augment": "Augmentation",
    "normalize": "Input scaling",
    "oversample": "Oversample rare classes",
    "rare_threshold": "Rare below (images)",
    "early_stop_patience": "Stop after epochs without gain",
    "best_metric": "Best checkpoint by",
    "val_fraction": "Validation share",
    "test_fraction": "Test share",
    "seed": "Random seed",
    "threads": "CPU threads",
    "ranks": "Processes (distributed)",
    "device": "Device",
    "amp": "Mixed precision",
    "log_every": "Report every (steps)",
}


@dataclass(frozen=True)
class Bound:
    """The values a numeric option may take: ``low <= value <= high`` (``< high`` when ``below``), finite."""

    low: float
    high: float
    below: bool = False  # high itself is not allowed (a share, or a factor that must stay under 1)


MAX_IMAGE_SIDE = 1024
MAX_EPOCHS = 1000
MAX_BATCH = 4096
MAX_RANKS = 64
MAX_THREADS = 256

# Every numeric option's bounds, read by validation, the Train form (number_input min/max), the command line
# (argparse) and search spaces. The upper bounds are set where no real run goes, so that a typo or a hostile
# value is refused before it costs memory or days; why each is where it is:
BOUNDS: dict[str, Bound] = {
    # A run number (0 = none): past 2**31 SQLite still counts, but no workspace holds that many runs.
    "from_run": Bound(0, 2**31 - 1),
    # 0.1 is usual when fine-tuning and 1 trains the backbone like the head; a backbone 10x faster has no use.
    "backbone_lr_factor": Bound(0, 10),
    # 0 = automatic (at most 224). 1024 px is 4.6x ImageNet's training side: 3 MB per decoded image (1,000
    # images are 3 GB of cache) and 21x the compute of 224 px; no classifier the studio trains gains from more.
    "image_size": Bound(0, MAX_IMAGE_SIDE),
    # 0 = automatic (at most AUTO_MAX_EPOCHS). Published CIFAR/ImageNet schedules stop at a few hundred; 1,000
    # epochs of the 1,800 digits are already hours on a 2-core CPU.
    "epochs": Bound(0, MAX_EPOCHS),
    # 32-256 is usual on a CPU; 4096 is the large-batch ImageNet recipes' size, spread there over many GPUs.
    "batch_size": Bound(1, MAX_BATCH),
    # 0 = the optimizer's usual. The highest usual rate is Adadelta's 1.0 (SGD's large-batch peaks stay under
    # 10); 10 only diverges.
    "lr": Bound(0, 10),
    "momentum": Bound(0, 1, below=True),  # 1 would never forget a gradient
    # Usual values are 1e-5 to 0.1 (AdamW 0.05); at 1 the penalty outweighs the data.
    "weight_decay": Bound(0, 1),
    "plateau_patience": Bound(1, MAX_EPOCHS),  # a patience longer than the longest run never acts
    "gamma": Bound(0, 1, below=True),  # a factor that lowers the rate
    "warmup_epochs": Bound(0, MAX_EPOCHS),  # no warm-up is longer than the longest run
    "label_smoothing": Bound(0, 1, below=True),  # 1 would spread the whole target over the other classes
    # A class is topped up to this many draws per epoch: 10,000 images is a large class already, and every
    # class below it would be repeated up to it (epochs of classes x 10,000 images).
    "rare_threshold": Bound(1, 10_000),
    "early_stop_patience": Bound(0, MAX_EPOCHS),  # as plateau_patience (0 = never stop early)
    "val_fraction": Bound(0, 1, below=True),  # shares; together under 1 (checked in validate)
    "test_fraction": Bound(0, 1, below=True),
    # numpy's seeds are 32-bit; every seed in range is as good as any other.
    "seed": Bound(0, 2**32 - 1),
    # Threads per training process (0 = automatic): the largest CPU servers have 256 cores; above the cores
    # threads only slow a run down, and each OpenMP thread takes its own stack.
    "threads": Bound(0, MAX_THREADS),
    # Processes on one machine: at most one per usable core there (checked when the run is submitted:
    # core.train.memory.cores_problem), never more than 64 (each loads its own torch, about 0.9 GB).
    "ranks": Bound(1, MAX_RANKS),
    # Steps between progress reports: past a million the run reports nothing at all.
    "log_every": Bound(1, 1_000_000),
}
MILESTONE_BOUND = Bound(1, MAX_EPOCHS)  # each step-schedule milestone is an epoch of the longest run


def bound_error(name: str, value: object, whole: bool) -> str | None:
    """Why ``value`` is not allowed for the option ``name`` (a finite number within ``BOUNDS[name]``), or None.

    The check behind :meth:`TrainConfig.validate`, so behind search spaces too; the command line's option types
    (``core.cli.train.bounded``) read the same ``BOUNDS``.
    """
    b = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, Real):
        return f"{name} {value!r}: expected a number"
    if not math.isfinite(value):
        return f"{name} {value!r}: expected a finite number"
    if whole and not isinstance(value, Integral):
        return f"{name} {value!r}: expected a whole number"
    if value < b.low:
        return f"{name} {value!r}: expected a number >= {_num(b.low)}"
    if value > b.high or (b.below and value >= b.high):
        return f"{name} {value!r}: expected a number " + (f"in [{_num(b.low)}, {_num(b.high)})" if b.below
                                                         else f"<= {_num(b.high)}")  # fmt: skip
    return None


def limits(name: str) -> tuple[float, float]:
    """(lowest, highest) value of the option ``name`` on this machine, for the page's widgets: its bounds, and
    for ``ranks`` at most the usable cores (as ``core.train.memory.cores_problem`` checks for one machine)."""
    from core.common.cpu import usable_cores

    bound = BOUNDS[name]
    return bound.low, min(bound.high, usable_cores()) if name == "ranks" else bound.high


def whole_number(name: str) -> bool:
    """Whether the option ``name`` takes whole numbers (its default is an int)."""
    default = next(f.default for f in fields(TrainConfig) if f.name == name)
    return isinstance(default, int) and not isinstance(default, bool)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass
class TrainConfig:
    """Everything that defines a training run. JSON-safe; stored with the run and in every checkpoint."""

    dataset: str = _f("", "The data: a folder, a .csv of labels, a .zip, or sample:digits.")
    arch: str = _f("auto", "Network. auto: LeNet for images up to 64 px (from scratch), ResNet-18 otherwise.")
    weights: str = _f("none", "Starting weights: none (random), imagenet (pretrained), or a .pth file path.")
    from_run: int = _f(
        0,
        "Start from another run's best checkpoint (its run number; 0 = no): its network and weights, the head "
        "replaced when the classes differ (core.train.transfer).",
    )
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
    ranks: int = _f(
        1,
        "Training processes on this machine (torch.distributed ranks); 1 trains in one process. "
        "Each takes an equal share of every batch; threads per process = cores / processes.",
    )
    device: str = _f("auto", "auto (GPU when there is one), cpu or cuda.")
    amp: str = _f("auto", "Mixed precision: auto (on for GPUs), off, fp16, bf16 (bf16 is ~40x slower on CPUs).")
    log_every: int = _f(20, "Steps between progress reports (each report waits for the device once).")

    def validate(self) -> TrainConfig:
        """Check every value; returns self. Raises ConfigError naming the bad value and the allowed ones."""
        for name, allowed in choices().items():
            _one_of(name, getattr(self, name), allowed)
        self._check_numbers()
        return self

    def _check_numbers(self) -> None:
        for name in BOUNDS:
            problem = bound_error(name, getattr(self, name), whole_number(name))
            if problem:
                raise ConfigError(problem)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"val_fraction {self.val_fraction} and test_fraction {self.test_fraction}: each in [0, 1) "
                              "and together under 1")  # fmt: skip
        self._check_milestones()

    def _check_milestones(self) -> None:
        m = self.milestones
        if not isinstance(m, list) or len(m) > MAX_EPOCHS:
            raise ConfigError(f"milestones: a list of at most {MAX_EPOCHS} milestones (epochs)")
        low, high = int(MILESTONE_BOUND.low), int(MILESTONE_BOUND.high)
        if not all(isinstance(e, Integral) and not isinstance(e, bool) and low <= e <= high for e in m):
            raise ConfigError(f"milestones {m}: expected whole epoch numbers from {low} to {high}")

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


def choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of every option that is a choice: validation, the page's selectboxes and the CLI's
    ``choices`` all read them here."""
    from core.train.archs import ARCHS
    from core.train.models import FREEZE_MODES  # here: the architectures need torch, the config does not

    return {"arch": ("auto", *ARCHS), "freeze": FREEZE_MODES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
            "augment": AUGMENT_CHOICES, "normalize": NORMALIZE_CHOICES, "best_metric": BEST_METRICS,
            "device": DEVICES, "amp": AMP_CHOICES}  # fmt: skip


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not allowed; choose one of: {', '.join(allowed)}")


def resolve_config(config: TrainConfig, typical_side: int, grayscale: bool) -> TrainConfig:
    """Replace every ``auto``/0 choice that depends on the data by its value (see the module docstring)."""
    from core.train.archs import choose_image_size

    pretrained = config.weights != "none" or config.from_run > 0  # trained weights of any origin: a smaller lr
    imagenet_like = pretrained and not config.from_run  # a parent run learned on its own data's statistics
    arch = config.arch
    if arch == "auto":
        arch = "lenet" if typical_side <= LENET_UP_TO and not pretrained else "resnet18"
    epochs, until_converged = planned_epochs(config)
    return replace(
        config,
        arch=arch,
        schedule=effective_schedule(config),
        epochs=config.epochs if until_converged else epochs,  # open-ended keeps 0 = auto (the cap, AUTO_MAX_EPOCHS)
        image_size=config.image_size or choose_image_size(arch, max(1, typical_side)),
        augment=config.augment if config.augment != "auto" else ("crop" if grayscale else "crop-flip"),
        normalize=config.normalize if config.normalize != "auto" else ("imagenet" if imagenet_like else "dataset"),
        lr=config.lr or DEFAULT_LR[config.optimizer] * (0.1 if pretrained else 1.0),
    )


def effective_schedule(config: TrainConfig) -> str:
    """The schedule a run of ``config`` uses: ``auto`` means cycles when epochs is 0 (auto), else one-cycle.

    The one place that rule lives: the config's resolution, the schedules, the page's estimate and the
    progress line all ask here.
    """
    if config.schedule != "auto":
        return config.schedule
    return "cycles" if config.epochs == 0 else "onecycle"


def planned_epochs(config: TrainConfig) -> tuple[int, bool]:
    """(epochs, until_converged): the epochs a run of ``config`` will do, and whether that is only a cap
    because an open-ended schedule (cycles, plateau) ends the run when it has converged."""
    if effective_schedule(config) in OPEN_ENDED:
        return config.epochs or AUTO_MAX_EPOCHS, True
    return config.epochs or FIXED_EPOCHS, False
