"""One plan per run: :func:`resolve` decides every automatic choice of a :class:`TrainConfig` once, from facts about
the data, and says why.

A :class:`RunPlan` is what a run will do: the network, the input size, which mean/std scale its inputs, the
augmentation, the schedule and how many epochs (:class:`~core.train.epochs.EpochPlan`), the learning rate, and the
options as asked (batch, optimizer, threads, ranks...). Where it goes:

* made once per run: by the Train page's preview (``core.train.plan.preview``), whose plan the Start button hands
  on, or by ``core.train.runner.submit_training`` for the command line; a resumed run reads its stored plan and
  decides nothing again;
* stored once: the run's ``plan`` param (``core.train.runner``); the run row keeps the config as asked; every
  checkpoint carries the same plan (``core.train.checkpoints.Checkpoint``), and every reader (Compare, predict,
  resume, evaluate) reads it through ``core.train.checkpoints.stored_plan``;
* carried by ``PreparedData.plan`` (``core.train.prepare``) into ``core.train.fit``, which reads nothing else;
* shown: the Train page's "Automatic: ..." captions and ``python -m core train ... --dry-run --json`` print
  :meth:`RunPlan.to_dict` and :meth:`RunPlan.explain`.

The choices follow the data's facts (:class:`DataFacts`): the images' side and colour, and how many training images
there are. A small set gets a batch that still gives ``MIN_STEPS`` steps an epoch (so the schedule's rise, the first
3 epochs of a 12-epoch cycle, takes that many steps times 3), the usual rate scaled to that batch, and, from scratch
under ``SMALL_SET`` images, the small CNN (the measurements behind them: ``core.train.config``). The digits' 1,257
training images keep the recipe's 64 images a step at 0.1.

No torch at import (the architectures are imported when a plan is resolved).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from core.train.config import (
    DEFAULT_LR,
    FIELD_META,
    LENET_UP_TO,
    MIN_BATCH,
    MIN_STEPS,
    MIN_STEPS_SMALL_CNN,
    RECIPE_BATCH,
    SMALL_CNN_BATCH_FLOOR,
    SMALL_SET,
    TrainConfig,
    choice_words,
)
from core.train.epochs import EpochPlan, epoch_plan

# The warm-up is the schedule's own rise, a quarter of each cycle (of the run, for one-cycle): the automatic batch is
# what makes it long enough. The 180 images at 64 a step rose to the peak in 6 steps and ran away; at the
# automatic 8, a 60-image set rises over 24. A floor of 20 rising steps for short fixed runs was measured and left out
# (seeds 0/1/2, 3 x 30 images of 96 px, 8 a step): LeNet for 3 epochs on photos 93.3/73.3/66.7% with it against
# 86.7/66.7/66.7% without, ResNet-18 for 6 epochs 80/66.7/86.7% against 93.3/86.7/93.3%.
# Optimizers whose rate scales with the square root of the batch (adaptive ones: Malladi et al. 2022, "On the SDEs
# and scaling rules for adaptive gradient algorithms"); SGD's scales linearly (Goyal et al. 2017).
ADAPTIVE = frozenset({"adam", "adamw", "adadelta", "rmsprop"})


@dataclass(frozen=True)
class DataFacts:
    """What the automatic choices depend on: the median shorter side of the split's images (px), whether they are
    mostly single-channel, and how many training images the split holds (``core.train.plan.image_facts``; 0 for a
    plan stored before it was counted: the batch is then the recipe's)."""

    typical_side: int
    grayscale: bool
    train_images: int = 0


@dataclass(frozen=True)
class RunPlan:
    """A run's every setting with its automatic choices decided (see the module docstring). Frozen: made once."""

    config: TrainConfig  # as asked: auto and 0 where the studio chooses (the run row's config)
    arch: str
    image_size: int
    normalize: str  # "dataset" (the training images' own mean/std) or "imagenet"
    augment: str
    schedule: str  # the schedule itself: "auto" decided
    epochs: EpochPlan
    lr: float
    facts: DataFacts | None = None  # what it was resolved from; None for a run recorded before plans were stored
    why: tuple[tuple[str, str], ...] = ()  # (option, words) for each automatic choice, in the options' order
    batch: int = 0  # images per step as decided; 0 in a plan stored before the batch was automatic: the config's
    warmup_steps: int = 0  # steps over which the rate first rises (the schedule's, or the typed warm-up); 0: unknown

    @property
    def optimizer(self) -> str:
        return self.config.optimizer

    @property
    def batch_size(self) -> int:
        return self.batch or self.config.batch_size

    @property
    def threads(self) -> int:
        """Threads per process; 0 leaves them to the job registry (every core while it trains alone)."""
        return self.config.threads

    @property
    def ranks(self) -> int:
        return self.config.ranks

    @property
    def settings(self) -> TrainConfig:
        """The config with every automatic choice replaced by this plan's (what a run of it actually uses; the
        optimizer, memory estimate and launcher take a ``TrainConfig``). Open-ended epochs stay 0: the cap is
        ``epochs.epochs``."""
        c = self.config
        return replace(c, arch=self.arch, image_size=self.image_size, normalize=self.normalize, augment=self.augment,
                       schedule=self.schedule, lr=self.lr, batch_size=self.batch_size,
                       epochs=c.epochs if self.epochs.until_converged else self.epochs.epochs)  # fmt: skip

    def explain(self) -> dict[str, str]:
        """Option -> why it has this value, in words, for every automatic choice (and always the epochs)."""
        return {"epochs": self.epochs.words(), **dict(self.why)}

    def scaling(self, dataset_mean: list[float], dataset_std: list[float]) -> tuple[list[float], list[float]]:
        """(mean, std) the inputs are scaled by: the training images' own, or ImageNet's. The one place that rule
        lives: the trainer, the learning-rate finder and a child run's new head all ask here."""
        from core.train.archs import IMAGENET_MEAN, IMAGENET_STD

        if self.normalize == "dataset":
            return [float(m) for m in dataset_mean], [float(s) for s in dataset_std]
        return list(IMAGENET_MEAN), list(IMAGENET_STD)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the run's ``plan`` param, a checkpoint's ``plan``, the dry run's ``plan``."""
        facts = None if self.facts is None else {"typical_side": self.facts.typical_side,
                                                 "grayscale": self.facts.grayscale,
                                                 "train_images": self.facts.train_images}  # fmt: skip
        return {"arch": self.arch, "image_size": self.image_size, "normalize": self.normalize, "augment": self.augment,
                "schedule": self.schedule, "epochs": self.epochs.to_dict(), "lr": self.lr, "optimizer": self.optimizer,
                "batch_size": self.batch_size, "warmup_steps": self.warmup_steps, "threads": self.threads,
                "ranks": self.ranks, "facts": facts, "why": dict(self.why),
                "config": self.config.to_dict()}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunPlan:
        """The plan :meth:`to_dict` wrote (optimizer, threads and the like are read from ``config``). A plan stored
        before the batch was decided reads it from its config, as that run used it."""
        facts, config = values.get("facts"), TrainConfig.from_dict(dict(values["config"]))
        return cls(config, str(values["arch"]), int(values["image_size"]),
                   str(values["normalize"]), str(values["augment"]), str(values["schedule"]),
                   EpochPlan.from_dict(values["epochs"]), float(values["lr"]),
                   DataFacts(int(facts["typical_side"]), bool(facts["grayscale"]),
                             int(facts.get("train_images", 0))) if facts else None,
                   _in_order({str(k): str(v) for k, v in dict(values.get("why") or {}).items()}),
                   int(values.get("batch_size", config.batch_size)), int(values.get("warmup_steps", 0)))  # fmt: skip


def recorded_plan(config: TrainConfig, settings: TrainConfig) -> RunPlan:
    """The plan of a run recorded before plans were stored: its resolved ``settings`` taken as they are (nothing is
    decided again; ``core.train.checkpoints`` reads the old records into them)."""
    epochs = epoch_plan(settings.schedule, settings.epochs)
    return RunPlan(config, settings.arch, settings.image_size, settings.normalize, settings.augment,
                   _decided_schedule(settings.schedule, epochs), epochs, settings.lr,
                   batch=settings.batch_size)  # fmt: skip


PRETRAINED_SHARE = 0.1  # from trained weights (of any origin) the usual rate is a tenth: the features need tuning only


def starts_trained(config: TrainConfig) -> bool:
    """Whether a run of ``config`` starts from trained weights (ImageNet's, a file's or another run's)."""
    return config.weights != "none" or config.from_run > 0


def usual_rate(optimizer: str, pretrained: bool = False) -> float:
    """The optimizer's usual peak rate (``DEFAULT_LR``), a tenth of it from trained weights: a run's automatic rate
    before any batch scaling, and the centre of a search's rate range (``core.experiments.rates``)."""
    return DEFAULT_LR[optimizer] * (PRETRAINED_SHARE if pretrained else 1.0)


def resolve(config: TrainConfig, facts: DataFacts) -> RunPlan:
    """Decide every ``auto``/0 choice of ``config`` (validated) for data with these ``facts``; see the rules in
    ``core.train.config``'s docstring. Call it once per run: everything after reads the plan."""
    from core.train.archs import arch_label, choose_image_size

    pretrained = starts_trained(config)  # trained weights of any origin: a smaller lr
    side = max(1, facts.typical_side)
    why: dict[str, str] = {}
    arch = config.arch
    if arch == "auto":
        arch = _arch(side, facts.train_images, pretrained)
        why["arch"] = _arch_why(arch, side, facts.train_images, pretrained)
    image_size = config.image_size or choose_image_size(arch, side)
    if not config.image_size:
        why["image_size"] = _size_why(side, image_size, arch_label(arch))
    epochs = epoch_plan(config.schedule, config.epochs)
    schedule = _decided_schedule(config.schedule, epochs)
    if config.schedule == "auto":
        why["schedule"] = ("Cycles: the number of epochs is left to the data." if schedule == "cycles"
                           else f"One cycle over the {epochs.count} asked for.")  # fmt: skip
    # The small CNN's extra steps come with a rate scaled to them: a typed rate was chosen for the recipe's batch
    # (the digits at a typed 10: at 64 a step the guard catches it once and the run ends at 97%; at 16, at chance).
    batch = _batch(config, facts.train_images, why, small_cnn=arch == "lenet" and not config.lr)
    lr = _rate(config, batch, pretrained, why)
    warmup = _warmup(config, schedule, epochs, steps_per_epoch(facts.train_images, batch), why)
    augment, normalize = _augment(config, facts, why), _normalize(config, pretrained, why)
    if not config.threads:
        why["threads"] = "All cores while it trains alone; shared fairly when several runs train."
    if not config.memory_budget:
        why["memory_budget"] = ("An eighth of the memory free when the run starts, 64 to 512 MB: decoding and "
                                "statistics hold that much of the images at once.")  # fmt: skip
    return RunPlan(config, arch, image_size, normalize, augment, schedule, epochs, lr, facts, _in_order(why), batch,
                   warmup)  # fmt: skip


def steps_per_epoch(train_images: int, batch: int) -> int:
    """Training steps an epoch of ``train_images`` takes at ``batch`` (as ``core.train.batches.Batches`` cuts a
    shuffled epoch: a last batch of a single image is left out); 0 when the count is not known."""
    return train_images // batch + (1 if train_images % batch > 1 else 0)


def _batch(config: TrainConfig, train_images: int, why: dict[str, str], *, small_cnn: bool = False) -> int:
    """The batch as typed, or the recipe's 64 halved until the training images give ``MIN_STEPS`` steps an epoch
    (for LeNet, whose steps cost little, on to ``MIN_STEPS_SMALL_CNN`` while the batch stays at least
    ``SMALL_CNN_BATCH_FLOOR``)
    (never under ``MIN_BATCH``, nor under 2 images per process). Why: 114 training images at 64 are 2 steps an
    epoch, and the first 12-epoch cycle rose to its peak rate in 6 steps: ResNet-18 from scratch ran away (see
    ``SMALL_SET`` in ``core.train.config`` for what smaller batches measured)."""
    if config.batch_size:
        return config.batch_size
    if not train_images:
        why["batch_size"] = f"The recipe's {RECIPE_BATCH}."
        return RECIPE_BATCH
    batch, floor = RECIPE_BATCH, max(MIN_BATCH, 2 * config.ranks)
    while batch // 2 >= floor and steps_per_epoch(train_images, batch) < MIN_STEPS:
        batch //= 2
    enough = batch
    while (
        small_cnn
        and batch // 2 >= max(floor, SMALL_CNN_BATCH_FLOOR)
        and (steps_per_epoch(train_images, batch) < MIN_STEPS_SMALL_CNN)
    ):
        batch //= 2
    steps = steps_per_epoch(train_images, batch)
    if batch == RECIPE_BATCH:
        why["batch_size"] = f"The recipe's {batch}: {train_images:,} training images give {_steps(steps)} an epoch."
    else:
        why["batch_size"] = (f"{train_images:,} training images give {_steps(steps)} an epoch at {batch} "
                             f"({_steps(steps_per_epoch(train_images, RECIPE_BATCH))} at the recipe's {RECIPE_BATCH}): "
                             + ("the small CNN learns from the number of its steps, which cost little." if batch < enough
                                else "a small set learns from more, smaller steps."))  # fmt: skip
    return batch


def _rate(config: TrainConfig, batch: int, pretrained: bool, why: dict[str, str]) -> float:
    """The rate as typed, or the optimizer's usual one (a tenth from trained weights), scaled to an automatic batch
    below the recipe's: linearly for SGD, by the square root for the adaptive optimizers (see ``ADAPTIVE``).

    Measured with LeNet (seeds 0/1/2): 3 classes x 30 real-photo crops of 96 px at 8 a step, 0.0125 gave
    100/100/93.3% and 0.1 86.7/100/100%; 10 classes x 30 (200 training images) at 16 a step, 0.025 gave 98/98/98% and
    0.1 96/96/98% (ResNet-18 at 112 px, 64 a step at 0.1, the recipe before: 96/94/92%, a runaway on every seed).
    A typed batch keeps the usual rate, as other tools do: the person chose the step, the rate is left as it was."""
    if config.lr:
        return config.lr
    usual = usual_rate(config.optimizer, pretrained)
    name = choice_words("optimizer").get(config.optimizer, config.optimizer)
    start = f"A tenth of the usual rate for {name}: it starts from trained weights" if pretrained else (
        f"The usual rate for {name}")  # fmt: skip
    if config.batch_size or batch >= RECIPE_BATCH:
        why["lr"] = f"{start}."
        return usual
    adaptive = config.optimizer in ADAPTIVE
    lr = usual * (batch / RECIPE_BATCH) ** (0.5 if adaptive else 1.0)
    why["lr"] = (f"{start}, {usual:g} at {RECIPE_BATCH} images a step, scaled to the batch of {batch}: x "
                 f"{'the square root of ' if adaptive else ''}{batch}/{RECIPE_BATCH} = {lr:.3g}.")  # fmt: skip
    return lr


def _warmup(config: TrainConfig, schedule: str, epochs: EpochPlan, steps: int, why: dict[str, str]) -> int:
    """The steps over which the rate first rises (0 when the training images are not counted): the typed warm-up
    epochs, else the schedule's own rise, a quarter of the first cycle or of the run (``ONECYCLE_RISE`` in
    ``core.train.schedules``, which needs torch; this module does not). Said when the studio chose it."""
    if not steps:
        return 0
    if schedule != "cycles" and (config.warmup_epochs or schedule != "onecycle"):
        return round(config.warmup_epochs * steps)
    total = (epochs.first if schedule == "cycles" else epochs.epochs) * steps  # cycles have no other warm-up
    rise = min(total - 1, round(0.25 * total))
    if config.warmup_epochs:
        return rise
    where = f"each cycle: {_steps(rise)} in the first, at {_steps(steps)} an epoch" if schedule == "cycles" else (
        f"the run: {_steps(rise)} of {total}")  # fmt: skip
    why["warmup_epochs"] = f"The rate rises over the first quarter of {where}."
    return rise


def _steps(n: int) -> str:
    return f"{n:,} step" + ("" if n == 1 else "s")


def _in_order(why: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The reasons in the options' order (a stored plan's JSON keeps its keys sorted: both read back equal)."""
    return tuple((name, why[name]) for name in FIELD_META if name in why)


def _decided_schedule(schedule: str, epochs: EpochPlan) -> str:
    """``auto`` as :func:`~core.train.epochs.epoch_plan` decided it (cycles, or one-cycle for a fixed length)."""
    if schedule != "auto":
        return schedule
    return epochs.kind if epochs.until_converged else "onecycle"


def _arch(side: int, train_images: int, pretrained: bool) -> str:
    """LeNet from scratch for small images or a small set (``LENET_UP_TO``, ``SMALL_SET``), else ResNet-18."""
    if pretrained:
        return "resnet18"
    return "lenet" if side <= LENET_UP_TO or 0 < train_images < SMALL_SET else "resnet18"


def _arch_why(arch: str, side: int, train_images: int, pretrained: bool) -> str:
    if pretrained:
        return "It starts from trained weights, which the small CNN has none of."
    if arch == "lenet" and side <= LENET_UP_TO:
        return f"The images' median side is {side} px (up to {LENET_UP_TO}) and it learns from scratch."
    if arch == "lenet":
        return (f"{train_images:,} training images (under {SMALL_SET:,}), from scratch: the small CNN learns so few "
                "reliably, where ResNet-18's 11 million weights often run away or memorise them.")  # fmt: skip
    return f"The images' median side is {side} px (over {LENET_UP_TO}): the usual first choice on a CPU."


def _size_why(side: int, image_size: int, network: str) -> str:
    if image_size < side:
        return f"From the images' median side ({side} px), scaled down to the largest input {network} takes."
    return f"From the images' median side ({side} px), for {network}."


def _augment(config: TrainConfig, facts: DataFacts, why: dict[str, str]) -> str:
    if config.augment != "auto":
        return config.augment
    if facts.grayscale:  # digits, letters, scans: a mirror image is another class or none
        why["augment"] = "Shifts only: the images are mostly grey-scale, where a mirror image can mean another thing."
        return "crop"
    why["augment"] = "Shifts and flips: colour photos keep their meaning when mirrored."
    return "crop-flip"


def _normalize(config: TrainConfig, pretrained: bool, why: dict[str, str]) -> str:
    if config.normalize != "auto":
        return config.normalize
    if pretrained and not config.from_run:  # a parent run learned on its own data's statistics, not ImageNet's
        why["normalize"] = "ImageNet's mean and spread: the pretrained weights expect them."
        return "imagenet"
    why["normalize"] = ("The training images' own mean and spread, as the parent run learned on its own."
                        if config.from_run else "The training images' own mean and spread (trained from scratch).")  # fmt: skip
    return "dataset"
