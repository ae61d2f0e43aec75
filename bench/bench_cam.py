"""Benchmark: classification + Grad-CAM with ``core.explain.cam`` against a plain forward and the grad-cam library.

    .venv/bin/python -m bench.bench_cam [--repeats 10] [--threads 2] [--models resnet18,resnet50,mobilenet_v2]
                                        [--side 224]

For each model (torchvision, random weights, 1000 classes, eval mode), one 224x224 image, batch 1, times:

* plain: ``model(x)`` under ``torch.inference_mode()`` (classification only, the baseline);
* ours: ``core.explain.explain(copy, x)`` on an inference copy (frozen, eval): the forward with the network cut
  at the target layer, the backward through the head only, and the Grad-CAM map at 224x224;
* library: grad-cam's default path, as its README shows it: ``with GradCAM(model, [layer]) as cam``, then
  ``cam(x, targets=None)`` and the probabilities from ``cam.outputs`` (classification from the same forward).

Ratios are medians over ``--repeats`` runs (ours/plain, library/plain). The maps of ours and the library are
compared for the same class (max abs difference). The CPU ms column (median process CPU time, all threads) is
less sensitive than wall time to other processes on a shared machine. Every method runs twice untimed first; then models and
methods are interleaved (plain, ours, library, plain, ...) so a slow spell of the shared machine hits them
alike. The load average is printed before and after and a busy start is flagged.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from bench.bench_scan import cpu_model, load_average
from bench.checks import check
from core.common.cpu import usable_cores
from core.explain.cam import explain, find_target_layer, inference_copy
from core.train.archs import cam_layer_for

SIDE = 224
DEFAULT_MODELS = ("resnet18", "resnet50", "mobilenet_v2")


@dataclass
class Method:
    label: str
    run: Callable[[], object]
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # this process's CPU time, all threads

    def timed(self, *, warmup: bool = False) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        self.run()
        if not warmup:
            self.times_ms.append((time.perf_counter() - started) * 1000.0)
            self.cpu_ms.append((time.process_time() - cpu_started) * 1000.0)

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)


@dataclass
class Contestants:
    """The three ways of getting one image classified (and explained) for one model."""

    name: str
    model: nn.Module  # trainable, as the library needs
    frozen: nn.Module  # our inference copy
    x: torch.Tensor
    methods: list[Method] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.methods = [
            Method("plain forward (inference_mode)", self.plain),
            Method("ours: explain() gradcam", self.ours),
            Method("library: GradCAM default path", self.library),
        ]

    def plain(self) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(self.model(self.x), dim=1).numpy()

    def ours(self) -> np.ndarray:
        return explain(self.frozen, self.x, arch=self.name).heatmap

    def library(self, class_index: int | None = None) -> np.ndarray:
        targets = None if class_index is None else [ClassifierOutputTarget(class_index)]
        # The layer ours explains at this size (the registry's choice: layer3 below 224 px for a ResNet).
        with GradCAM(self.model, [find_target_layer(self.model, self.name, SIDE)]) as cam:
            maps = cam(self.x, targets=targets)
            cam.outputs.detach().softmax(-1)  # the classification, from the same forward
        return maps[0]


def make_contestants(name: str, seed: int) -> Contestants:
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, num_classes=1000).eval()
    x = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))  # SIDE: set by --side
    return Contestants(name, model, inference_copy(model), x)


def agreement(c: Contestants) -> tuple[float, bool, int]:
    """(max |ours - library| for the same class, whether ours found evidence, the class)."""
    ours = explain(c.frozen, c.x, arch=c.name)
    reference = c.library(ours.class_index)
    check(ours.heatmap.shape == reference.shape == (SIDE, SIDE), f"{c.name}: maps of different shapes")
    return float(np.abs(ours.heatmap - reference).max()), ours.has_evidence, ours.class_index


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cam", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each method (default 10)")
    parser.add_argument("--threads", type=int, default=min(2, usable_cores()), help="torch threads (default 2)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated torchvision names")
    parser.add_argument("--side", type=int, default=SIDE, help="input side in px (default 224); below 224 a ResNet "
                        "explains layer3 (core.train.archs.cam_layer_for)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    return args


def run_rounds(all_contestants: list[Contestants], repeats: int) -> None:
    for _ in range(2):
        for c in all_contestants:
            for method in c.methods:
                method.timed(warmup=True)
    for _ in range(repeats):
        for c in all_contestants:
            for method in c.methods:
                method.timed()


def print_results(all_contestants: list[Contestants], agreements: dict[str, tuple[float, bool, int]]) -> None:
    print(f"{'model':<14} {'method':<34} {'median ms':>10} {'min ms':>8} {'vs plain':>9} {'CPU ms':>8}")
    for c in all_contestants:
        base = c.methods[0].median
        for m in c.methods:
            print(f"{c.name:<14} {m.label:<34} {m.median:>10.1f} {min(m.times_ms):>8.1f} {m.median / base:>8.2f}x "
                  f"{statistics.median(m.cpu_ms):>8.1f}")  # fmt: skip
    print("\nratios (medians) and agreement of the maps:")
    for c in all_contestants:
        plain, ours, library = (m.median for m in c.methods)
        diff, evidence, class_index = agreements[c.name]
        print(f"  {c.name:<14} ours/plain = {ours / plain:.2f}x   library/plain = {library / plain:.2f}x   "
              f"library/ours = {library / ours:.2f}x   max |ours - library| = {diff:.2e} "
              f"(class {class_index}{'' if evidence else ', no evidence: both maps empty'})")  # fmt: skip
    print("\nall runs (ms, in order):")
    for c in all_contestants:
        for m in c.methods:
            print(f"  {c.name:<14} {m.label:<34} " + " ".join(f"{t:.0f}" for t in m.times_ms))


def main(argv: list[str] | None = None) -> int:
    global SIDE
    args = parse_args(argv)
    SIDE = args.side
    torch.set_num_threads(args.threads)
    load_before = load_average()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    all_contestants = [make_contestants(name, seed) for seed, name in enumerate(names)]
    agreements = {c.name: agreement(c) for c in all_contestants}
    run_rounds(all_contestants, args.repeats)
    load_after = load_average()

    print(f"Grad-CAM benchmark: {SIDE}x{SIDE}, batch 1, random weights, eval mode, {args.threads} torch threads")
    for c in all_contestants:
        layer, cells = cam_layer_for(c.name, SIDE)
        print(f"  {c.name}: explains {layer} ({cells}x{cells} map)")
    print(f"machine: {usable_cores()} usable cores, CPU {cpu_model()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, Python {platform.python_version()}")  # fmt: skip
    busy = load_before[0] > usable_cores()
    print(f"load average 1/5/15 min: before {' '.join(map(str, load_before))}, after {' '.join(map(str, load_after))}"
          + (f"  ** BUSY MACHINE: 1-min load {load_before[0]} > {usable_cores()} cores at the start; timings "
             "unreliable **" if busy else ""))  # fmt: skip
    print(f"2 untimed warm-up rounds, then {args.repeats} repeats, models and methods interleaved\n")
    print_results(all_contestants, agreements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
