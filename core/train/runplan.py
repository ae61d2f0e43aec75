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

No torch at import (the architectures are imported when a plan is resolved).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from core.train.config import DEFAULT_LR, FIELD_META, LENET_UP_TO, TrainConfig, choice_words
from core.train.epochs import EpochPlan, epoch_plan


@dataclass(frozen=True)
class DataFacts:
    """What the automatic choices depend on: the median shorter side of the split's images (px) and whether they
    are mostly single-channel (``core.train.plan.image_facts``)."""

    typical_side: int
    grayscale: bool


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

    @property
    def optimizer(self) -> str:
        return self.config.optimizer

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

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
                       schedule=self.schedule, lr=self.lr,
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
                                                 "grayscale": self.facts.grayscale}  # fmt: skip
        return {"arch": self.arch, "image_size": self.image_size, "normalize": self.normalize, "augment": self.augment,
                "schedule": self.schedule, "epochs": self.epochs.to_dict(), "lr": self.lr, "optimizer": self.optimizer,
                "batch_size": self.batch_size, "threads": self.threads, "ranks": self.ranks, "facts": facts,
                "why": dict(self.why), "config": self.config.to_dict()}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunPlan:
        """The plan :meth:`to_dict` wrote (optimizer, batch and the like are read from ``config``)."""
        facts = values.get("facts")
        return cls(TrainConfig.from_dict(dict(values["config"])), str(values["arch"]), int(values["image_size"]),
                   str(values["normalize"]), str(values["augment"]), str(values["schedule"]),
                   EpochPlan.from_dict(values["epochs"]), float(values["lr"]),
                   DataFacts(int(facts["typical_side"]), bool(facts["grayscale"])) if facts else None,
                   _in_order({str(k): str(v) for k, v in dict(values.get("why") or {}).items()}))  # fmt: skip


def recorded_plan(config: TrainConfig, settings: TrainConfig) -> RunPlan:
    """The plan of a run recorded before plans were stored: its resolved ``settings`` taken as they are (nothing is
    decided again; ``core.train.checkpoints`` reads the old records into them)."""
    epochs = epoch_plan(settings.schedule, settings.epochs)
    return RunPlan(config, settings.arch, settings.image_size, settings.normalize, settings.augment,
                   _decided_schedule(settings.schedule, epochs), epochs, settings.lr)  # fmt: skip


def resolve(config: TrainConfig, facts: DataFacts) -> RunPlan:
    """Decide every ``auto``/0 choice of ``config`` (validated) for data with these ``facts``; see the rules in
    ``core.train.config``'s docstring. Call it once per run: everything after reads the plan."""
    from core.train.archs import arch_label, choose_image_size

    pretrained = config.weights != "none" or config.from_run > 0  # trained weights of any origin: a smaller lr
    side = max(1, facts.typical_side)
    why: dict[str, str] = {}
    arch = config.arch
    if arch == "auto":
        arch = "lenet" if side <= LENET_UP_TO and not pretrained else "resnet18"
        why["arch"] = _arch_why(arch, side, pretrained)
    image_size = config.image_size or choose_image_size(arch, side)
    if not config.image_size:
        why["image_size"] = f"From the images' median side ({side} px), for {arch_label(arch)}."
    epochs = epoch_plan(config.schedule, config.epochs)
    schedule = _decided_schedule(config.schedule, epochs)
    if config.schedule == "auto":
        why["schedule"] = ("Cycles: the number of epochs is left to the data." if schedule == "cycles"
                           else f"One cycle over the {epochs.count} asked for.")  # fmt: skip
    lr = config.lr or DEFAULT_LR[config.optimizer] * (0.1 if pretrained else 1.0)
    if not config.lr:
        usual = f"the usual rate for {choice_words('optimizer').get(config.optimizer, config.optimizer)}"
        why["lr"] = (
            f"A tenth of {usual}: it starts from trained weights." if pretrained else f"{usual[0].upper()}{usual[1:]}."
        )
    augment, normalize = _augment(config, facts, why), _normalize(config, pretrained, why)
    if not config.threads:
        why["threads"] = "All cores while it trains alone; shared fairly when several runs train."
    return RunPlan(config, arch, image_size, normalize, augment, schedule, epochs, lr, facts, _in_order(why))


def _in_order(why: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The reasons in the options' order (a stored plan's JSON keeps its keys sorted: both read back equal)."""
    return tuple((name, why[name]) for name in FIELD_META if name in why)


def _decided_schedule(schedule: str, epochs: EpochPlan) -> str:
    """``auto`` as :func:`~core.train.epochs.epoch_plan` decided it (cycles, or one-cycle for a fixed length)."""
    if schedule != "auto":
        return schedule
    return epochs.kind if epochs.until_converged else "onecycle"


def _arch_why(arch: str, side: int, pretrained: bool) -> str:
    if arch == "lenet":
        return f"The images' median side is {side} px (up to {LENET_UP_TO}) and it learns from scratch."
    if pretrained:
        return "It starts from trained weights, which the small CNN has none of."
    return f"The images' median side is {side} px (over {LENET_UP_TO}): the usual first choice on a CPU."


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
