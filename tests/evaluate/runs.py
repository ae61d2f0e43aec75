"""Datasets and real training runs for the evaluation tests (the page and browser tests use them too).

``colour_folders``: 3 colour classes in train/val/test folders, with two deliberately mislabelled test images
(a red square filed under blue and green), so every trained model makes at least those two mistakes.
``leaky_photos``: photo-like pictures whose classes carry no visual rule, with some test pictures planted as
copies (re-encoded, resized, brightened) of training pictures: a model can only get the copies right by
remembering them, so the score with and without them differs.
"""

from __future__ import annotations

from pathlib import Path

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from tests import imagefactory as fx

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SPLIT_SIZES = {"train": 16, "val": 4, "test": 6}
MISLABELLED = ("test/blue/red-looking.png", "test/green/red-looking.png")


def colour_folders(root: Path) -> Path:
    """``root/{train,val,test}/{red,green,blue}/<i>.png`` (12x12 px) plus the two mislabelled test images."""
    for offset, (split, n) in enumerate(SPLIT_SIZES.items()):
        for label, colour in COLOURS.items():
            for i in range(n):
                fx.write_rgb(root / split / label / f"{i}.png", size=(12, 12), color=colour, seed=100 * offset + i)
    for rel in MISLABELLED:
        fx.write_rgb(root / rel, size=(12, 12), color=COLOURS["red"], seed=77)
    return root


LEAK_CLASSES = ("alpha", "beta", "gamma")
N_TRAIN, N_VAL, N_FRESH_TEST, N_COPIES = 10, 2, 4, 3  # per class
COPY_STYLES = ({"quality": 85}, {"scale": 0.75}, {"brightness": 1.1})


def leaky_photos(root: Path) -> tuple[Path, set[str]]:
    """``root/{train,val,test}/<class>/*.jpg`` photo-like pictures; returns the root and the planted test copies
    (paths relative to the root): per class ``N_COPIES`` test pictures are copies of that class's training ones."""
    planted: set[str] = set()
    seed = 0
    for label in LEAK_CLASSES:
        for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_FRESH_TEST)):
            for i in range(n):
                seed += 1
                fx.write_photo(root / split / label / f"{label}-{split}-{i}.jpg", seed=seed)
        for i, style in zip(range(N_COPIES), COPY_STYLES, strict=True):
            rel = f"test/{label}/{label}-copy-{i}.jpg"
            fx.write_copy(root / "train" / label / f"{label}-train-{i}.jpg", root / rel, **style)
            planted.add(rel)
    return root, planted


def train(ws: Workspace, dataset: Path, **config) -> int:
    """A real training run to its end through the job registry (as the page and the CLI run them)."""
    registry = JobRegistry(RunStore(ws.runs_db))
    settings = {"dataset": str(dataset), "arch": "lenet", "epochs": 2, "batch_size": 16, **config}
    run_id = train_run.submit_training(registry, ws, TrainConfig(**settings))
    job = registry.wait(run_id, timeout=300)
    assert job.status == "completed", job.error
    return run_id
