"""The training configuration: every option with its help line, its validation, and the default recipe.

Shape (torchvision ``references/classification`` + minGPT + fastai): :class:`TrainConfig` is a plain dataclass of
what a person asks for, whose fields carry their own help text, label and place on the page;
:func:`core.train.runplan.resolve` makes it the run's :class:`~core.train.runplan.RunPlan` once (every ``auto``
choice decided from the data); :func:`~core.train.prepare.prepare` decodes the data for that plan once;
:func:`~core.train.fit.fit` trains it and reports through callbacks, never printing. The command line and
background jobs call the same three.

The default recipe (a config with only ``dataset`` set) and why it is the default:

* ``arch="auto"``: LeNet (3 conv blocks, 32/64/128 channels) when the images' median shorter side is at most
  64 px and no pretrained weights are asked for, else ResNet-18. On tiny images (digits, icons, CIFAR-size
  crops) the ImageNet stem of a ResNet throws away 3/4 of the pixels in its first two layers, and a ResNet
  needs a 112 px input for a usable Grad-CAM map (layer3 7x7), which costs 10-20x LeNet's compute on a 2-core
  CPU for no accuracy gain (bench/README.md: LeNet at 16 px reaches 98.9% on the digits).
  Ordinary photos get ResNet-18, the usual first choice for a CPU, except from scratch on fewer than
  ``SMALL_SET`` training images, which get LeNet too (``core.train.runplan``: measured there).
  Measured on coloured shapes over textures (64 px, 1,600 images, from scratch, same epochs): ResNet-18 at
  96 px (its smallest input then) 43% test accuracy in 6.5 min, LeNet at 32 px 96.7% in 72 s.
* ``batch_size=0``: 64 images a step, or fewer for a small set, so that an epoch still has ``MIN_STEPS`` steps
  (never under ``MIN_BATCH``), and ``lr=0`` the optimizer's usual rate scaled to that batch (``core.train.runplan``:
  the rule, its words and what it measured). A typed batch is kept, with the usual rate.
* ``image_size=0``: :func:`core.train.archs.choose_image_size` from the median side (16 px for the 8 px digits,
  LeNet's 32 px cap for 64 px images).
* SGD with Nesterov momentum, one-cycle learning rates (linear rise over the first quarter of the steps,
  cosine decay to zero, stepped per batch), label smoothing 0.1, weight decay 5e-4: the ingredients of the
  fast CIFAR recipes (airbench, Page's ResNet series) that carry over to a CPU.
* ``epochs=0`` with ``schedule="auto"``: as many epochs as the data needs (``core.train.epochs``, the one place
  that rule lives). The digits stop after 12 epochs; data that takes longer to learn gets it (the shapes above:
  54% after 12 epochs, 99.6% after 84).
* ``augment="auto"``: random shifts of up to 1/8 of the side (pad + crop), plus left-right flips only for
  colour images. Grey-scale data is mostly scans of digits, letters and documents (or X-rays), where a
  mirror image is another class or no class at all; photos of things keep their meaning when mirrored.
* ``normalize="auto"``: the training set's own mean/std from scratch and for a child run (``from_run``),
  ImageNet's with pretrained weights.
* ``weights="none"``: the studio works offline; ImageNet weights are one option away (``weights="imagenet"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral, Real
from typing import Any

from core.common.errors import CoreError, check_choice
from core.common.words import CHOICE_WORDS
from core.train.epochs import AUTO_MAX_EPOCHS, FIRST_CYCLE, FIXED_EPOCHS

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
# The small-data recipe (the rules: core.train.runplan; what they measured: below). batch_size=0 picks
# RECIPE_BATCH when the training images give at least MIN_STEPS steps an epoch at it, else halves it until they do
# (never under MIN_BATCH); the automatic rate is the optimizer's usual one scaled to that batch.
RECIPE_BATCH = 64  # the recipe's batch, for which DEFAULT_LR's rates are the usual ones (the digits: 20 steps)
MIN_STEPS = 10  # steps per epoch an automatic batch aims at
# ... and for the small CNN, whose steps cost little: it learns from the number of steps. Measured (bench.bench_recipe,
# 2026-12-07, LeNet at 32 px, 84 epochs of cycles): 1,200 coloured shapes of 64 px (840 to train), 64 a step at 0.1
# (13 steps an epoch): 81.7% / 76.1%, 32 at 0.1: 98.3%, 16 at 0.1: 100%, 16 at 0.025: 97.2%; 20 classes x 60 photo crops
# of 32 px, 64: 78.3%, 32: 81.7%, 16: 82.8%; the digits (1,257 to train) 64: 98.9%, 32 and 16: 98.5% (270 test images:
# one image is 0.4 points), every one of them in 3-4 s.
# Not under 16 a step for that reason alone: 10 classes x 30 photo crops (200 to train) at 8 a step gave 96/96/96%
# over three seeds, at 16 98/98/98% (50 test images: one is 2 points).
MIN_STEPS_SMALL_CNN, SMALL_CNN_BATCH_FLOOR = 50, 16
MIN_BATCH = 8  # the smallest automatic batch: BatchNorm's statistics of fewer images are mostly noise
SMALL_SET = 500  # fewer training images than this, from scratch: arch="auto" picks LeNet whatever their side
# Measured (issue 24; test accuracy over seeds 0/1/2, 15 test images each, default recipe otherwise): 3 colour
# classes x 30 textured images of 96 px (60 to train): ResNet-18 at 112 px, 64 a step at 0.1 (the recipe before):
# 93.3/100/66.7%, its loss ran away every time; ResNet-18 at 112 or 96 px, 8 at 0.0125: 100% x3; LeNet at 32 px, 8
# at 0.0125 or 0.1, or 64 at 0.1: 100% x3. 3 classes x 30 real-photo crops of 96 px (tests.realphotos): LeNet at 32
# px, 8 at 0.0125: 100/100/93.3% (1-3 s a run); 8 at 0.1: 86.7/100/100%; 64 at 0.1: 100/100/66.7%; LeNet at 96 px:
# 100/100/86.7%; ResNet-18 at 96 px, 8 at 0.0125: 93.3/80/93.3% (two runaways), at 112 px 100/93.3/100% (105-975 s
# a run). The small batch and its rate end the runaways; LeNet learns such sets as well as ResNet-18, 30-300x faster.
# Share of each class kept for validation and for the test when the data has no split folders: the defaults of
# the options below, of core.train.splits and of the preparation sweeps (70/15/15 keeps >= 26 test images per
# class for the digits, enough for per-class accuracy).
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
# Where each option appears on the Train page: the essentials on top, the others in these groups under Advanced.
ESSENTIAL = "essential"
GROUPS = ("Data", "Model", "Optimisation", "Augmentation and device")


class ConfigError(CoreError):
    """A training option with a value that is not allowed; the message names the value and the allowed ones."""


class OptionError(ConfigError):
    """Options whose values are refused, alone or together: ``options`` ((name, value), ...) and ``expected`` (what
    is allowed, in words that do not name the options). The command line prints ``name value: expected``; a page
    words it from the fields (:meth:`worded` with each option's label), never from the message."""

    def __init__(self, expected: str, *options: tuple[str, object]) -> None:
        self.expected, self.options = expected, tuple(options)
        super().__init__(self.worded(lambda name: name))

    @property
    def field(self) -> str:
        """The (first) option concerned."""
        return self.options[0][0]

    def worded(self, name_of: Callable[[str], str]) -> str:
        """The message with each option named by ``name_of`` (e.g. :func:`label_of`)."""
        named = " and ".join(f"{name_of(name)} {value!r}" for name, value in self.options)
        return f"{named}: {self.expected}"


class ResumeError(CoreError):
    """A checkpoint that cannot continue on the data given (other classes, image size or split)."""


def _f(default: Any, help: str, label: str, group: str | None, *, zero_is_auto: bool = False) -> Any:
    """A dataclass field with what the page and the command line need to show it: ``help`` (the one line next to
    the widget and the ``--help`` text), ``label`` (its name in words), ``group`` (:data:`ESSENTIAL`, one of
    :data:`GROUPS`, or None for no widget) and ``zero_is_auto`` (0 lets the studio choose: the page shows a
    checkbox "automatic"). A choice's values in words are :func:`choice_words`."""
    meta = {"help": help, "label": label, "group": group, "zero_is_auto": zero_is_auto}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def label_of(name: str) -> str:
    """The option's name in words ("Learning rate" for ``lr``)."""
    return LABELS.get(name, name.replace("_", " ").capitalize())


def is_automatic(name: str, value: object) -> bool:
    """Whether ``value`` of option ``name`` leaves the choice to the studio: ``auto``, or 0 where 0 means automatic."""
    return value == "auto" or (value == 0 and not isinstance(value, bool) and FIELD_META[name]["zero_is_auto"])


def choice_words(name: str) -> dict[str, str]:
    """The values of the choice option ``name`` in words (``{"sgd": "SGD (momentum)", ...}``: the studio's words,
    ``core.common.words``; networks by their names in ``core.train.archs``); a value missing here is shown as it is."""
    if name == "arch":
        from core.train.archs import ARCHS, arch_label  # here: the architectures need torch, the config does not

        return {key: arch_label(key) for key in ARCHS}
    return dict(CHOICE_WORDS.get(name, {}))


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
    "batch_size": Bound(0, MAX_BATCH),  # 0 = automatic (RECIPE_BATCH or fewer for a small set)
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
    "memory_budget": Bound(0, 1024 * 1024),  # MB: up to a terabyte
}
MILESTONE_BOUND = Bound(1, MAX_EPOCHS)  # each step-schedule milestone is an epoch of the longest run


def bound_error(name: str, value: object, whole: bool) -> OptionError | None:
    """Why ``value`` is not allowed for the option ``name`` (a finite number within ``BOUNDS[name]``), or None.

    The check behind :meth:`TrainConfig.validate`, so behind search spaces too; the command line's option types
    (``core.cli.train.bounded``) read the same ``BOUNDS``.
    """
    b = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, Real):
        expected = "expected a number"
    elif not math.isfinite(value):
        expected = "expected a finite number"
    elif whole and not isinstance(value, Integral):
        expected = "expected a whole number"
    elif value < b.low:
        expected = f"expected a number >= {_num(b.low)}"
    elif value > b.high or (b.below and value >= b.high):
        expected = "expected a number " + (f"in [{_num(b.low)}, {_num(b.high)})" if b.below else f"<= {_num(b.high)}")
    else:
        return None
    return OptionError(expected, (name, value))


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
    """Everything that defines a training run, as a person asks for it (``auto`` and 0 where the studio chooses;
    :func:`core.train.runplan.resolve` makes the run's plan of it). JSON-safe; stored with the run.

    Each field carries its help line, its label, its place on the Train page and its choices in words (:func:`_f`):
    the page's form and the command line's options are made from them.
    """

    dataset: str = _f("", "The data: a folder, a .csv of labels, a .zip, or sample:digits.", "Dataset", None)
    arch: str = _f("auto", f"Network. auto: LeNet from scratch for images up to {LENET_UP_TO} px or fewer than "
                           f"{SMALL_SET} training images, ResNet-18 otherwise.", "Network", ESSENTIAL)  # fmt: skip
    weights: str = _f("none", "Starting weights: none (random), imagenet (pretrained), or a .pth file path.",
                      "Starting weights", ESSENTIAL)  # fmt: skip
    from_run: int = _f(
        0,
        "Start from another run's best checkpoint (its run number; 0 = no): its network and weights, the head "
        "replaced when the classes differ (core.train.transfer).",
        "Start from run", "Model",
    )  # fmt: skip
    freeze: str = _f("none", "Layers kept fixed: none, backbone (train only the head), all-but-last.", "Frozen layers",
                     "Model")  # fmt: skip
    backbone_lr_factor: float = _f(1.0, "Backbone learning rate = lr x this; 0.1 is usual when fine-tuning.",
                                   "Backbone learning-rate factor", "Model")  # fmt: skip
    image_size: int = _f(0, "Square input side in px; 0 picks it from the images' median size and the network.",
                         "Input size (px)", "Model", zero_is_auto=True)  # fmt: skip
    epochs: int = _f(
        0,
        "Passes over the training images; 0 = auto: as many as the data needs (cycles or plateau "
        f"schedule, at most {AUTO_MAX_EPOCHS}), or {FIXED_EPOCHS} with a fixed-length schedule.",
        "Epochs", ESSENTIAL, zero_is_auto=True,
    )  # fmt: skip
    batch_size: int = _f(
        0,
        f"Images per step; 0 = auto: {RECIPE_BATCH}, or fewer (down to {MIN_BATCH}) so that a small set still "
        f"gets {MIN_STEPS} steps an epoch. Larger is faster per image, needs more memory.",
        "Images per step", "Optimisation", zero_is_auto=True,
    )  # fmt: skip
    optimizer: str = _f("sgd", "sgd (momentum), adam, adamw, adadelta or rmsprop.", "Optimizer", "Optimisation")  # fmt: skip
    lr: float = _f(0.0, f"Peak learning rate; 0 uses the optimizer's usual value (sgd 0.1, adam 0.001, ...) at "
                        f"{RECIPE_BATCH} images a step, scaled to an automatic batch.", "Learning rate",
                   "Optimisation", zero_is_auto=True)  # fmt: skip
    momentum: float = _f(0.9, "Momentum for sgd and rmsprop.", "Momentum", "Optimisation")
    nesterov: bool = _f(True, "Nesterov momentum for sgd (usually a little better).", "Nesterov momentum",
                        "Optimisation")  # fmt: skip
    weight_decay: float = _f(5e-4, "L2 penalty on the weights; keeps them small against overfitting.", "Weight decay",
                             "Optimisation")  # fmt: skip
    schedule: str = _f(
        "auto",
        "Learning-rate schedule: auto (cycles when epochs is 0, else onecycle); cycles (one-cycle runs of "
        f"{FIRST_CYCLE}, {2 * FIRST_CYCLE}, {4 * FIRST_CYCLE}... epochs while the network still underfits); "
        "plateau (x gamma when validation stops improving); onecycle, cosine, step (at milestones), none.",
        "Learning-rate schedule", "Optimisation",
    )  # fmt: skip
    plateau_patience: int = _f(3, "plateau schedule: epochs without a lower validation loss before the rate drops.",
                               "Plateau patience (epochs)", "Optimisation")  # fmt: skip
    milestones: list[int] = _f([], "step schedule: epochs after which the rate is multiplied by gamma.",
                               "Step schedule: epochs", "Optimisation")  # fmt: skip
    gamma: float = _f(0.1, "step schedule: the factor applied at each milestone.", "Step schedule: factor",
                      "Optimisation")  # fmt: skip
    warmup_epochs: float = _f(0.0, "Epochs of linear warm-up from zero (onecycle: its rise, default 1/4 of the run).",
                              "Warm-up epochs", "Optimisation")  # fmt: skip
    label_smoothing: float = _f(0.1, "Share of each target spread over the other classes; curbs overconfidence.",
                                "Label smoothing", "Optimisation")  # fmt: skip
    augment: str = _f("auto", "auto (shifts; flips only for colour), none, flip, crop, crop-flip, strong.",
                      "Augmentation", "Augmentation and device")  # fmt: skip
    normalize: str = _f("auto", "Input scaling: dataset (its mean/std), imagenet, auto (imagenet if pretrained).",
                        "Input scaling", "Augmentation and device")  # fmt: skip
    oversample: bool = _f(False, "Repeat images of rare classes so each has at least rare_threshold per epoch.",
                          "Oversample rare classes", "Data")  # fmt: skip
    rare_threshold: int = _f(10, "A class with fewer training images than this is rare (oversampled).",
                             "Rare below (images)", "Data")  # fmt: skip
    early_stop_patience: int = _f(0, "Stop after this many epochs without a better best_metric; 0 = never.",
                                  "Stop after epochs without gain", "Optimisation")  # fmt: skip
    best_metric: str = _f("val_acc", "What best.pt is chosen by: val_acc (higher) or val_loss (lower).",
                          "Best checkpoint by", "Optimisation")  # fmt: skip
    val_fraction: float = _f(VAL_FRACTION, "Share of each class for validation, when the data has no val folder.",
                             "Validation share", "Data")  # fmt: skip
    test_fraction: float = _f(TEST_FRACTION, "Share of each class for the test, when the data has no test folder.",
                              "Test share", "Data")  # fmt: skip
    seed: int = _f(0, "Seed of the split, the initial weights, shuffling and augmentation.", "Random seed", "Data")
    threads: int = _f(0, "CPU threads for this process; 0 leaves the setting to the app (one run: all cores).",
                      "CPU threads", "Augmentation and device", zero_is_auto=True)  # fmt: skip
    ranks: int = _f(
        1,
        "Training processes on this machine (torch.distributed ranks); 1 trains in one process. "
        "Each takes an equal share of every batch; threads per process = cores / processes.",
        "Processes (distributed)", "Augmentation and device",
    )  # fmt: skip
    device: str = _f("auto", "auto (GPU when there is one), cpu or cuda.", "Device", "Augmentation and device")  # fmt: skip
    amp: str = _f("auto", "Mixed precision: auto (on for GPUs), off, fp16, bf16 (bf16 is ~40x slower on CPUs).",
                  "Mixed precision", "Augmentation and device")  # fmt: skip
    log_every: int = _f(20, "Steps between progress reports (each report waits for the device once).",
                        "Report every (steps)", "Augmentation and device")  # fmt: skip
    memory_budget: int = _f(0, "Memory (MB) for images handled at once while decoding and summing them; 0: an "
                            "eighth of what is free when the run starts, 64 to 512 MB.", "Memory (MB)",
                            "Augmentation and device", zero_is_auto=True)  # fmt: skip

    def validate(self) -> TrainConfig:
        """Check every value; returns self.

        Raises:
            ChoiceError: a choice that is not one of ``choices()`` (field, value and the allowed values).
            OptionError: a number outside its bounds, shares that add up to 1 or more, bad milestones.
        """
        for name, allowed in choices().items():
            check_choice(name, getattr(self, name), allowed)
        self._check_numbers()
        return self

    def _check_numbers(self) -> None:
        for name in BOUNDS:
            problem = bound_error(name, getattr(self, name), whole_number(name))
            if problem:
                raise problem
        if self.val_fraction + self.test_fraction >= 1:
            raise OptionError("each in [0, 1) and together under 1", ("val_fraction", self.val_fraction),
                              ("test_fraction", self.test_fraction))  # fmt: skip
        self._check_milestones()

    def _check_milestones(self) -> None:
        m = self.milestones
        if not isinstance(m, list) or len(m) > MAX_EPOCHS:
            raise OptionError(f"a list of at most {MAX_EPOCHS} milestones (epochs)", ("milestones", m))
        low, high = int(MILESTONE_BOUND.low), int(MILESTONE_BOUND.high)
        if not all(isinstance(e, Integral) and not isinstance(e, bool) and low <= e <= high for e in m):
            raise OptionError(f"expected whole epoch numbers from {low} to {high}", ("milestones", m))

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


# Every option's metadata (help, label, group, words, zero_is_auto) by name, and its label: read by the page's form,
# the command line, error words and search spaces.
FIELD_META: dict[str, Any] = {f.name: f.metadata for f in fields(TrainConfig)}
LABELS: dict[str, str] = {name: meta["label"] for name, meta in FIELD_META.items()}
