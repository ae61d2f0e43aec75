"""What a run will do before it starts: its plan (``core.train.runplan``: every ``auto`` choice decided from the
scanned images), how many images each split will hold, the memory it takes, and what to warn about. No image is
decoded: the Train page shows it at once (and hands its plan to the run it starts), the command line prints the
warnings before it trains, and ``--dry-run`` prints it all."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.common.errors import ChoiceError, CoreError, DatasetError
from core.common.workspace import Workspace
from core.train import runplan
from core.train.archs import arch_info
from core.train.config import SMALL_SET, ConfigError, TrainConfig, label_of
from core.train.epochs import FIRST_CYCLE
from core.train.memory import (
    MemoryEstimate,
    RunTooBigError,
    cores_problem,
    disk_bound,
    estimate_memory,
    free_bytes,
    memory_problem,
    size_words,
    total_bytes,
)
from core.train.runplan import DataFacts, RunPlan, starts_trained
from core.train.splits import SPLITS, make_splits

# Below this many images a split's accuracy moves in steps of 5 points or more and says little.
SMALL_SPLIT = 20
# A network with millions of weights trained from scratch memorises fewer images than this instead of learning
# the classes (the small CNN, about 0.1 M weights, is fine with far fewer): the automatic network's threshold too.
FROM_SCRATCH_MIN_IMAGES = SMALL_SET
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass(frozen=True)
class RunPreview:
    """A run before it starts: its plan, and what the page and the dry run say about it."""

    plan: RunPlan
    splits: dict[str, int]  # images per split (train, val, test), as the run will make them
    n_classes: int
    memory: MemoryEstimate  # what the run will take (core.train.memory)
    warnings: tuple[str, ...] = ()  # sentences for people, most important first


def preview(source: TrainConfig | RunPlan, manifest: pd.DataFrame) -> RunPreview:
    """The run ``source`` would make of a scanned dataset (``ScanResult.manifest``): a config is resolved into its
    plan here (:func:`core.train.runplan.resolve`), a plan is taken as it is."""
    config = source.config if isinstance(source, RunPlan) else source.validate()
    splits = make_splits(manifest, config.val_fraction, config.test_fraction, config.seed)
    plan = source if isinstance(source, RunPlan) else runplan.resolve(config, image_facts(manifest, splits))
    counts = {s: int((splits["split"] == s).sum()) for s in SPLITS}
    n_classes = int(splits["label"].nunique())
    memory = estimate_memory(plan.settings, sum(counts.values()), counts["train"], n_classes)
    refusals = [cores_problem(plan.settings, name=label_of("ranks")), memory_problem(memory), _from_disk(memory)]
    return RunPreview(plan, counts, n_classes, memory,
                      tuple(p[0].upper() + p[1:] for p in refusals if p) + _warnings(plan, counts))  # fmt: skip


def _from_disk(memory: MemoryEstimate) -> str | None:
    """Words when the decoded images outgrow the machine's memory: the run trains, but every epoch reads them from
    the disk (``core.train.memory.disk_bound``)."""
    if not disk_bound(memory):
        return None
    return (f"the decoded images ({size_words(memory.cache_file)}) are larger than this machine's memory "
            f"({size_words(total_bytes() or 0)}): the run trains, reading them from the disk a batch at a time, so "
            "each epoch waits on the disk and takes longer than on a dataset that fits. A smaller input size, or "
            "several machines (each reads its share), keeps them in memory.")  # fmt: skip


def memory_words(memory: MemoryEstimate) -> str:
    """The plan's memory line: what the run takes, what is free, where the images are."""
    free = free_bytes()
    free_part = f", of {size_words(free)} free" if free is not None else ""
    chunks = (f"; decoding and statistics go through them {size_words(memory.working)} at a time (Memory, under "
              "Advanced)" if memory.cache_file > memory.working else "")  # fmt: skip
    return (f"Memory: about {size_words(memory.total)} for this run{free_part}. The decoded images "
            f"({size_words(memory.cache_file)}) stay on the disk, read a batch at a time{chunks}.")  # fmt: skip


def check_run(source: TrainConfig | RunPlan, ws: Workspace, nodes: int = 1) -> RunPreview | None:
    """Refuse a run (a validated config, or its plan) before it queues, new or resumed: more processes than this
    machine's cores (one machine), or more memory than is free, in words with the estimate (``core.train.memory``).

    Reads the dataset's scan from the manifest cache (a first scan of a new dataset reads its headers, which the
    run would do anyway). Returns the preview, whose plan the run uses; None when the data cannot be read (the
    run then fails with the dataset's own reason, as before).

    Raises:
        RunTooBigError: too many processes, or not enough memory.
    """
    from core.datasets.scan import scan_dataset
    from core.datasets.sources import resolve_dataset

    config = source.config if isinstance(source, RunPlan) else source
    problem = cores_problem(config, nodes)
    if problem:
        raise RunTooBigError(problem)
    try:
        seen = preview(source, scan_dataset(resolve_dataset(config.dataset, ws), ws.cache).manifest)
    except (ConfigError, ChoiceError):  # settings this data cannot train with (an input too small for the network)
        raise
    except CoreError:
        return None
    problem = memory_problem(seen.memory)
    if problem:
        raise RunTooBigError(problem)
    return seen


def image_facts(manifest: pd.DataFrame, splits: pd.DataFrame) -> DataFacts:
    """The median shorter side and whether they are mostly single-channel, of the images in the split, and how many
    of them are training images."""
    rows = manifest[manifest["path"].isin(set(splits["path"]))]
    if rows.empty:
        raise DatasetError("none of the split's images is in the dataset any more")
    side = int(np.median(np.minimum(rows["width"], rows["height"])))
    train = int(rows["path"].isin(set(splits.loc[splits["split"] == "train", "path"])).sum())
    return DataFacts(side, bool(rows["mode"].isin(GRAY_MODES).mean() > 0.5), train)


def _warnings(plan: RunPlan, counts: dict[str, int]) -> tuple[str, ...]:
    out = []
    info = arch_info(plan.arch)
    if plan.config.weights == "none" and info.builder is not None and counts["train"] < FROM_SCRATCH_MIN_IMAGES:
        out.append(f"{info.label} would learn from scratch on {_images(counts['train'])}: a network this large "
                   "memorises so few images instead of learning the classes. Start from pretrained weights "
                   "(ImageNet), choose the small CNN, or add images.")  # fmt: skip
    short = _short_from_scratch(plan)
    if short:
        out.append(short)
    for split, what in (("val", "validation"), ("test", "test")):
        n = counts[split]
        if n == 0:
            out.append(f"No {what} images: the run will have no {what} score.")
        elif n < SMALL_SPLIT:
            step = 100 / n
            out.append(f"Only {_images(n)} for {what}: its accuracy moves in steps of {step:.0f} points, so it "
                       "says little about new images. Give it a larger share, or add images.")  # fmt: skip
    return tuple(out)


def _short_from_scratch(plan: RunPlan) -> str:
    """Words when a fixed number of epochs is fewer than a network learning from random weights needs: fewer than
    the automatic length's first cycle (``FIRST_CYCLE``: the digits take those 12 epochs). Measured (issue 24, seeds
    0/1/2, 3 classes x 30 images of 96 px): MobileNetV2 for 3 epochs scored 33.3% (chance) on every seed, on textured
    colours and on real photos, where its automatic epochs reached 100/86.7/73.3%; LeNet for 3 epochs 93.3/73.3/66.7%
    on the photos against 100/100/93.3% (the issue itself saw MobileNetV2 end at 41% after 3 epochs)."""
    c = plan.config
    if starts_trained(c) or plan.epochs.until_converged or plan.epochs.epochs >= FIRST_CYCLE:
        return ""
    buy = "buys" if plan.epochs.epochs == 1 else "buy"
    return (
        f"{plan.epochs.count.capitalize()} of {arch_info(plan.arch).label} from random weights {buy} little: a "
        f"network learning from scratch needs more (the automatic length trains {FIRST_CYCLE}, then more while "
        "it still learns). Leave Epochs automatic, or start from pretrained weights."
    )


def _images(n: int) -> str:
    return f"{n:,} image" + ("" if n == 1 else "s")
