"""Benchmark: the default recipe on a zoo of datasets (issue 24), against a small grid given the same time.

.venv/bin/python -m bench.bench_recipe [--quick] [--grid quick|small|full] [--only NAME,...] [--threads 1] [--workspace DIR]

The zoo differs in size (60 to 3,000+ training images), image side (8 to 224 px), classes (2 to 20), colour and
grey, balanced and imbalanced; real photos among them (``tests.realphotos``: scikit-image's photos cut into classes),
the digits, the textured colours of issue 24 and the coloured shapes. Every set is made by its one writer in
``tests/`` (once, reused from ``--workspace``).

Per dataset: its facts, the chance level (the test split's majority share, ``core.train.outcome.chance_level``),
the default recipe's test accuracy, seconds of training (``fit``, the data already decoded) and the plan it chose
(network, input, batch, rate); then each point of a small grid (network x batch x rate) trained for as many
one-cycle epochs as fit in the default's seconds (its own epoch timed first, ``core.train.estimate``; at least one),
and the best of them. Flags: DEFAULT BELOW BEST (more than 3 points under the grid's best), AT CHANCE (the default
is about chance, ``core.train.outcome.about_chance``), LOSS ROSE (the default's last training loss is above its
first epoch's).

``--quick``: four small datasets (the colours and photos of 60 training images, 10 classes of photos, the digits) and
a grid of three points. The full zoo takes hours on a 2-core CPU. One training process at a time; the load average
is printed before and after (a shared machine slows the seconds, not the accuracies).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.common.workspace import Workspace
from core.train.config import TrainConfig
from core.train.estimate import estimate_epoch_seconds
from core.train.fit import FitResult, fit
from core.train.outcome import about_chance, chance_level
from core.train.prepare import PreparedData, prepare

GAP = 0.03  # the default may be this far under the grid's best (the bar)
MAX_GRID_EPOCHS = 100  # as the automatic epochs' cap


@dataclass(frozen=True)
class Zoo:
    """One dataset of the zoo: its name, what it is, and how it is written under a folder (``sample:`` needs none)."""

    name: str
    what: str
    write: Callable[[Path], Path] | None  # None: ``name`` is a sample spec
    quick: bool = False


def _photos(counts: list[int] | int, side: int, n_classes: int | None = None, gray: bool = False):
    def write(root: Path) -> Path:
        from tests.realphotos import write_photo_classes

        return write_photo_classes(root, counts, side, n_classes=n_classes, gray=gray)

    return write


def _colours(root: Path) -> Path:
    from tests.imagefactory import write_small_colour_set

    return write_small_colour_set(root)


def _shapes(root: Path) -> Path:
    from tests.shapes import make_shapes_dataset

    make_shapes_dataset(root, n_per_class=300, size=64, seed=20261124)
    return root


IMBALANCED = [300, 150, 75, 40, 20]
ZOO = (
    Zoo("colours-3x30-96", "textured colours, 3 classes x 30, 96 px (issue 24)", _colours, quick=True),
    Zoo("photos-3x30-96", "real photos, 3 classes x 30, 96 px", _photos(30, 96, 3), quick=True),
    Zoo("photos-10x30-96", "real photos, 10 classes x 30, 96 px", _photos(30, 96, 10), quick=True),
    Zoo("sample:digits", "the digits, 10 classes, 8 px, grey", None, quick=True),
    Zoo("photos-grey-4x100-64", "real photos, grey, 4 classes x 100, 64 px", _photos(100, 64, 4, gray=True)),
    Zoo("photos-imbalanced-5-100", f"real photos, 5 classes of {IMBALANCED}, 100 px", _photos(IMBALANCED, 100)),
    Zoo("shapes-4x300-64", "coloured shapes on textures, 4 classes x 300, 64 px", _shapes),
    Zoo("photos-20x60-32", "real photos, 20 classes x 60, 32 px", _photos(60, 32, 20)),
    Zoo("photos-4x1100-48", "real photos, 4 classes x 1,100, 48 px", _photos(1100, 48, 4)),
    Zoo("photos-2x150-224", "real photos, 2 classes x 150, 224 px", _photos(150, 224, 2)),
)
# (network, batch, rate): SGD's usual 0.1 at 64 and the linear-scaled 0.025 at 16, each also x3 and /3.
GRID = tuple((arch, batch, rate) for arch in ("lenet", "resnet18") for batch, usual in ((16, 0.025), (64, 0.1))
             for rate in (usual / 3, usual, usual * 3))  # fmt: skip
QUICK_GRID = (("lenet", 64, 0.1), ("lenet", 16, 0.075), ("resnet18", 16, 0.025))
# Five points for the larger sets, where twelve times the default's minutes do not fit a session: each network at
# the usual rate of each batch, and ResNet-18 at a third of it (the side the guard's restarts point to).
SMALL_GRID = (("lenet", 64, 0.1), ("lenet", 16, 0.025), ("resnet18", 64, 0.1), ("resnet18", 16, 0.025),
              ("resnet18", 64, 0.1 / 3))  # fmt: skip
GRIDS = {"quick": QUICK_GRID, "small": SMALL_GRID, "full": GRID}


def _dataset(zoo: Zoo, base: Path) -> str:
    if zoo.write is None:
        return zoo.name
    root = base / zoo.name
    if not root.is_dir():
        zoo.write(root)
    return str(root)


def _test_counts(data: PreparedData) -> dict[str, int]:
    labels = data.labels[torch.as_tensor(data.indices["test"], dtype=torch.long)]
    return {data.classes[int(k)]: int(n) for k, n in zip(*torch.unique(labels, return_counts=True), strict=True)}


def _timed_fit(data: PreparedData, where: Path) -> tuple[FitResult, float]:
    began = time.perf_counter()
    result = fit(data, checkpoint_dir=where)
    return result, time.perf_counter() - began


def _loss_rose(result: FitResult) -> bool:
    losses = [e["train_loss"] for e in result.epochs if math.isfinite(e.get("train_loss", math.nan))]
    return not losses or losses[-1] > losses[0]


def bench_one(zoo: Zoo, ws: Workspace, base: Path, grid: tuple[tuple[str, int, float], ...]) -> dict:
    """The default recipe and the grid on one dataset; returns the table row."""
    dataset = _dataset(zoo, base)
    data = prepare(TrainConfig(dataset=dataset), ws)
    default, seconds = _timed_fit(data, base / "checkpoints" / zoo.name / "default")
    p, counts = data.plan, data.counts()
    chance = chance_level(_test_counts(data))
    accuracy = default.test.get("accuracy", math.nan)
    row = {"name": zoo.name, "train": counts["train"], "test": counts["test"], "classes": len(data.classes),
           "side": p.facts.typical_side if p.facts else 0, "grey": bool(p.facts and p.facts.grayscale),
           "chance": chance, "default": accuracy, "seconds": seconds, "epochs": default.epochs_trained,
           "plan": f"{p.arch}@{p.image_size} b{p.batch_size} lr{p.lr:g}", "loss_rose": _loss_rose(default),
           "at_chance": about_chance(accuracy, chance, counts["test"]), "grid": []}  # fmt: skip
    for arch, batch, rate in grid:
        probe = prepare(TrainConfig(dataset=dataset, arch=arch, batch_size=batch, lr=rate, epochs=1), ws)
        epochs = max(1, min(MAX_GRID_EPOCHS, int(seconds / max(estimate_epoch_seconds(probe), 1e-6))))
        point = prepare(TrainConfig(dataset=dataset, arch=arch, batch_size=batch, lr=rate, epochs=epochs), ws)
        result, took = _timed_fit(point, base / "checkpoints" / zoo.name / f"{arch}-{batch}-{rate:g}")
        row["grid"].append((f"{arch} b{batch} lr{rate:g} x{epochs}", result.test.get("accuracy", math.nan), took))
        print(f"    grid {row['grid'][-1][0]:<32} test {row['grid'][-1][1]:6.1%} in {took:6.0f} s", flush=True)
    return row


def _flags(row: dict) -> str:
    best = max((acc for _, acc, _ in row["grid"]), default=math.nan)
    flags = ["DEFAULT BELOW BEST"] if row["default"] < best - GAP else []
    return " ".join(flags + ["AT CHANCE"] * row["at_chance"] + ["LOSS ROSE"] * row["loss_rose"]) or "ok"


def print_table(rows: list[dict]) -> None:
    print(f"\n{'dataset':<26} {'train':>6} {'side':>5} {'cls':>4} {'grey':>5} {'chance':>7} {'default plan':<30} "
          f"{'acc':>7} {'s':>6} {'ep':>4}  {'best of grid':<32} {'acc':>7} {'s':>6}  flags")  # fmt: skip
    for r in rows:
        name, acc, took = max(r["grid"], key=lambda g: g[1]) if r["grid"] else ("-", math.nan, math.nan)
        print(f"{r['name']:<26} {r['train']:>6,} {r['side']:>5} {r['classes']:>4} {'yes' if r['grey'] else 'no':>5} "
              f"{r['chance']:>7.1%} {r['plan']:<30} {r['default']:>7.1%} {r['seconds']:>6.0f} {r['epochs']:>4}  "
              f"{name:<32} {acc:>7.1%} {took:>6.0f}  {_flags(r)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_recipe")
    parser.add_argument("--quick", action="store_true", help="four small datasets and a grid of three points")
    parser.add_argument("--grid", choices=sorted(GRIDS), default=None, help="quick: 3 points, small: 5, full: 12")
    parser.add_argument("--only", default="", help="comma-separated dataset names (see ZOO)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--workspace", type=Path, default=None, help="where the datasets and runs are kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = args.workspace or Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    ws = Workspace.open(base / "ws").with_roots(base)
    only = {n for n in args.only.split(",") if n}
    zoo = [z for z in ZOO if (z.quick or not args.quick) and (not only or z.name in only)]
    print(f"load average before: {os.getloadavg()}; torch {torch.__version__}, {args.threads} thread(s); in {base}")
    rows = []
    for z in zoo:
        print(f"{z.name}: {z.what}", flush=True)
        rows.append(bench_one(z, ws, base, GRIDS[args.grid or ("quick" if args.quick else "full")]))
    print_table(rows)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
