"""What a run will do before it starts: its ``auto`` choices resolved from the scanned images, how many images
each split will hold, and what to warn about. No image is decoded: the Train page shows it at once, and the
command line prints the warnings before it trains."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.common.errors import CoreError, DatasetError
from core.common.workspace import Workspace
from core.train.archs import arch_info
from core.train.config import ConfigError, TrainConfig, label_of, resolve_config
from core.train.memory import MemoryEstimate, RunTooBigError, cores_problem, estimate_memory, memory_problem
from core.train.splits import SPLITS, make_splits

# Below this many images a split's accuracy moves in steps of 5 points or more and says little.
SMALL_SPLIT = 20
# A network with millions of weights trained from scratch memorises fewer images than this instead of learning
# the classes (the small CNN, about 0.1 M weights, is fine with far fewer).
FROM_SCRATCH_MIN_IMAGES = 500
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass
class RunPlan:
    config: TrainConfig  # every auto choice resolved
    splits: dict[str, int]  # images per split (train, val, test), as the run will make them
    n_classes: int
    memory: MemoryEstimate  # what the run will take (core.train.memory)
    warnings: list[str] = field(default_factory=list)  # sentences for people, most important first


def plan_run(config: TrainConfig, manifest: pd.DataFrame) -> RunPlan:
    """The run ``config`` would make of a scanned dataset (``ScanResult.manifest``)."""
    splits = make_splits(manifest, config.val_fraction, config.test_fraction, config.seed)
    side, gray = image_facts(manifest, splits)
    resolved = resolve_config(config.validate(), side, gray)
    counts = {s: int((splits["split"] == s).sum()) for s in SPLITS}
    n_classes = int(splits["label"].nunique())
    memory = estimate_memory(resolved, sum(counts.values()), counts["train"], n_classes)
    refusals = [cores_problem(resolved, name=label_of("ranks")), memory_problem(memory)]
    return RunPlan(resolved, counts, n_classes, memory,
                   [p[0].upper() + p[1:] for p in refusals if p] + _warnings(resolved, counts))  # fmt: skip


def check_run(config: TrainConfig, ws: Workspace, nodes: int = 1) -> RunPlan | None:
    """Refuse ``config`` (validated) before it queues, new or resumed: more processes than this machine's cores
    (one machine), or more memory than is free, in words with the estimate (``core.train.memory``).

    Reads the dataset's scan from the manifest cache (a first scan of a new dataset reads its headers, which the
    run would do anyway). Returns the plan; None when the data cannot be read (the run then fails with the
    dataset's own reason, as before).

    Raises:
        RunTooBigError: too many processes, or not enough memory.
    """
    from core.datasets.scan import scan_dataset
    from core.datasets.sources import resolve_dataset

    problem = cores_problem(config, nodes)
    if problem:
        raise RunTooBigError(problem)
    try:
        plan = plan_run(config, scan_dataset(resolve_dataset(config.dataset, ws), ws.cache).manifest)
    except ConfigError:  # settings this data cannot train with (an input too small for the network)
        raise
    except CoreError:
        return None
    problem = memory_problem(plan.memory)
    if problem:
        raise RunTooBigError(problem)
    return plan


def image_facts(manifest: pd.DataFrame, splits: pd.DataFrame) -> tuple[int, bool]:
    """(median shorter side, mostly single-channel) of the images in the split."""
    rows = manifest[manifest["path"].isin(set(splits["path"]))]
    if rows.empty:
        raise DatasetError("none of the split's images is in the dataset any more")
    side = int(np.median(np.minimum(rows["width"], rows["height"])))
    return side, bool(rows["mode"].isin(GRAY_MODES).mean() > 0.5)


def _warnings(config: TrainConfig, counts: dict[str, int]) -> list[str]:
    out = []
    info = arch_info(config.arch)
    if config.weights == "none" and info.builder is not None and counts["train"] < FROM_SCRATCH_MIN_IMAGES:
        out.append(f"{info.label} would learn from scratch on {_images(counts['train'])}: a network this large "
                   "memorises so few images instead of learning the classes. Start from pretrained weights "
                   "(ImageNet), choose the small CNN, or add images.")  # fmt: skip
    for split, what in (("val", "validation"), ("test", "test")):
        n = counts[split]
        if n == 0:
            out.append(f"No {what} images: the run will have no {what} score.")
        elif n < SMALL_SPLIT:
            step = 100 / n
            out.append(f"Only {_images(n)} for {what}: its accuracy moves in steps of {step:.0f} points, so it "
                       "says little about new images. Give it a larger share, or add images.")  # fmt: skip
    return out


def _images(n: int) -> str:
    return f"{n:,} image" + ("" if n == 1 else "s")
