"""Benchmark: the divergence guard (``core.train.guard``): where healthy runs' smoothed losses go, and what it costs.

.venv/bin/python -m bench.bench_guard measure [--quick] [--workspace DIR] .venv/bin/python -m bench.bench_guard cost
[--repeats 3] [--epochs 12] [--workspace DIR]

``measure`` trains healthy runs (the default recipe on the digits over three seeds and on 1,200 coloured shapes; and
the test suite's short recipes on tiny colour sets: every optimizer and schedule, LeNet, ResNet-18 and MobileNetV2)
and runs whose loss runs away (the issue's coloured textures of 30 images per class at 96 px under the recipe
before the small-data rules: ResNet-18, 64 images a step; and a rate of 10 on the digits; the textures under today's
default recipe are among the healthy runs), with the guard on, records every step's training loss, and prints per run
the largest ratio of the smoothed loss to its lowest so far: over all steps, and over the steps where the smoothed
loss was also above a blind guess's (the guard's two conditions). Healthy runs are watched with no bound (their
whole course is measured); ``RUNAWAY_RATIO`` must sit above every healthy run's second figure, and one that would
have tripped it is flagged TRIPPED.

``cost`` trains the default recipe on the digits for ``--epochs`` fixed epochs with the guard and without it,
interleaved, ``--repeats`` times each, in this process, one thread, and prints the seconds per epoch (whole ``fit``
wall time over epochs, the guard's copies of the state included) and the ratio of the medians.

The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from core.common.workspace import Workspace
from core.train import guard as guard_module
from core.train import learner as learner_module
from core.train.config import TrainConfig
from core.train.fit import fit
from core.train.prepare import prepare

SEEDS = (0, 1, 2)


def _traced() -> list[float]:
    """Every loss the guard sees from now on, appended to the returned list."""
    losses: list[float] = []
    watch = guard_module.Guard.watch

    def recording(self, step, loss):  # noqa: ANN001, ANN202
        losses.append(float(loss.detach()))
        return watch(self, step, loss)

    guard_module.Guard.watch = recording  # type: ignore[method-assign]
    return losses


def ratios(losses: list[float], classes: int) -> tuple[float, float]:
    """(largest smoothed / lowest-so-far, the same over the steps whose smoothed loss is above ln(classes))."""
    average, lowest, worst, worst_above = 0.0, math.inf, 0.0, 0.0
    for n, loss in enumerate(losses, 1):
        average = guard_module.SMOOTHING * average + (1 - guard_module.SMOOTHING) * loss
        smooth = average / (1 - guard_module.SMOOTHING**n)
        if math.isfinite(smooth) and lowest < math.inf:
            worst = max(worst, smooth / lowest)
            if smooth > math.log(classes):
                worst_above = max(worst_above, smooth / lowest)
        lowest = min(lowest, smooth) if math.isfinite(smooth) else lowest
    return worst, worst_above


def _datasets(base: Path) -> dict[str, Path]:
    from tests import imagefactory as f
    from tests.shapes import make_shapes_dataset

    out = {"digits": Path("sample:digits")}
    out["colours-96"] = base / "colours-96"
    if not out["colours-96"].is_dir():
        f.write_small_colour_set(out["colours-96"])
    out["tiny"] = base / "tiny"
    if not out["tiny"].is_dir():
        f.write_colour_classes(out["tiny"], 10, size=(16, 16), labels=("red", "green", "blue"))
    out["shapes"] = base / "shapes"
    if not out["shapes"].is_dir():
        make_shapes_dataset(out["shapes"], n_per_class=300, size=64, seed=20261124)
    return out


def _runs(sets: dict[str, Path], quick: bool) -> list[tuple[str, TrainConfig, bool]]:
    """(name, config, healthy) for ``measure``."""
    runs = [(f"digits default seed {s}", TrainConfig(dataset="sample:digits", seed=s), True) for s in SEEDS]
    # The small set under the recipe it had before the small-data rules (core.train.runplan): ResNet-18 at
    # 112 px and 64 images a step (one step an epoch), the loss runs away in the warm-up; and the default recipe now.
    old = {"arch": "resnet18", "batch_size": 64}
    for s in SEEDS[:1] if quick else SEEDS:
        runs.append((f"colours 3x30 96 px seed {s} old (runs away)",
                     TrainConfig(dataset=str(sets["colours-96"]), seed=s, **old), False))  # fmt: skip
        runs.append(
            (f"colours 3x30 96 px seed {s} default", TrainConfig(dataset=str(sets["colours-96"]), seed=s), True)
        )
    if not quick:
        runs.append(("shapes 1,200 default", TrainConfig(dataset=str(sets["shapes"])), True))
    tiny = TrainConfig(dataset=str(sets["tiny"]), epochs=3, batch_size=8, image_size=32, log_every=1)
    for optimizer in ("sgd", "adam", "adamw", "adadelta", "rmsprop"):
        runs.append((f"tiny {optimizer}", replace(tiny, optimizer=optimizer), True))
    for schedule in ("onecycle", "cosine", "step", "none", "plateau", "cycles"):
        runs.append((f"tiny {schedule}", replace(tiny, schedule=schedule, epochs=6), True))
    for arch in ("resnet18", "mobilenet_v2"):  # from scratch on 21 images, 3 steps: at chance, the loss runs away
        runs.append((f"tiny {arch} (runs away)", replace(tiny, arch=arch), False))
    runs.append(("digits lr 10 (runs away)", TrainConfig(dataset="sample:digits", lr=10), False))
    return runs


def measure(ws: Workspace, base: Path, quick: bool) -> None:
    sets = _datasets(base)
    bound = guard_module.RUNAWAY_RATIO
    print(f"{'run':<42} {'classes':>7} {'steps':>6} {'max ratio':>10} {'above blind':>12}  guard  test acc  verdict")
    for name, config, healthy in _runs(sets, quick):
        losses = _traced()
        data = prepare(config, ws)
        # A healthy run is watched, not stopped, so its whole course is measured: would the bound have tripped?
        guard_module.RUNAWAY_RATIO = math.inf if healthy else bound
        result = fit(data, checkpoint_dir=base / "checkpoints" / name.replace(" ", "_"))
        guard_module.RUNAWAY_RATIO = bound
        worst, above = ratios(losses, len(data.classes))
        events = len(result.runaways)
        flag = " TRIPPED" if healthy and (events or above > bound) else ""
        verdict = result.verdict.outcome if result.verdict is not None else "-"
        print(f"{name:<42} {len(data.classes):>7} {len(losses):>6} {worst:>10.2f} {above:>12.2f}  {events:>5}  "
              f"{result.test.get('accuracy', math.nan):>7.1%}  {verdict}{flag}", flush=True)  # fmt: skip


def cost(ws: Workspace, base: Path, repeats: int, epochs: int) -> None:
    """Seconds per epoch with and without the guard, interleaved."""
    data = prepare(TrainConfig(dataset="sample:digits", epochs=epochs), ws)
    init = learner_module.Learner.__init__

    def without(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return init(self, *args, **{**kwargs, "guard": None})

    times: dict[str, list[float]] = {"with": [], "without": []}
    for r in range(repeats):
        for side in ("with", "without"):
            learner_module.Learner.__init__ = init if side == "with" else without  # type: ignore[method-assign]
            began = time.perf_counter()
            result = fit(data, checkpoint_dir=base / "cost" / f"{side}-{r}")
            per_epoch = (time.perf_counter() - began) / len(result.epochs)
            times[side].append(per_epoch)
            print(f"repeat {r + 1} {side:<8} guard: {per_epoch:.3f} s/epoch ({len(result.epochs)} epochs, test "
                  f"{result.test['accuracy']:.1%})", flush=True)  # fmt: skip
    learner_module.Learner.__init__ = init  # type: ignore[method-assign]
    ratio = statistics.median(times["with"]) / statistics.median(times["without"])
    print(f"median s/epoch: with {statistics.median(times['with']):.3f}, without "
          f"{statistics.median(times['without']):.3f}; ratio with/without {ratio:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_guard")
    parser.add_argument("what", choices=("measure", "cost"))
    parser.add_argument("--quick", action="store_true", help="measure: one seed of the colours, no shapes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = args.workspace or Path(tempfile.mkdtemp(prefix="bench-guard-"))
    ws = Workspace.open(base / "ws").with_roots(base)
    print(f"load average before: {os.getloadavg()}; torch {torch.__version__}, 1 thread")
    if args.what == "measure":
        measure(ws, base, args.quick)
    else:
        cost(ws, base, args.repeats, args.epochs)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
