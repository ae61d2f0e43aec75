"""How close the Classify page's Score-/Ablation-CAM estimate (core.explain.cost) comes to the real run.

Prints, per model and method: the estimate, the measured time, and their ratio (1.0 = exact).
Run: .venv/bin/python bench/bench_slow_cam.py
"""

from __future__ import annotations

import time

import torch

from core.common.cpu import set_torch_threads
from core.explain.cam import explain
from core.explain.cost import slow_cam_cost
from core.train.archs import default_mean_std
from core.train.checkpoints import InferenceModel
from core.train.models import bare_model

CASES = [("lenet", 16), ("resnet18", 64), ("resnet18", 224), ("mobilenet_v3_small", 224)]


def main() -> None:
    set_torch_threads(0)
    print(f"{'model':<22}{'px':>5}{'method':>13}{'estimate s':>12}{'measured s':>12}{'ratio':>8}")
    for arch, side in CASES:
        mean, std = default_mean_std(3)
        inference = InferenceModel(bare_model(arch, 10, 3).eval(), arch, [str(i) for i in range(10)], side, mean, std)
        cost = slow_cam_cost(inference)
        x = torch.rand(1, 3, side, side)
        for method in ("scorecam", "ablationcam"):
            started = time.perf_counter()
            explain(inference.model, x, method=method, arch=arch)
            took = time.perf_counter() - started
            print(f"{arch:<22}{side:>5}{method:>13}{cost.seconds:>12.2f}{took:>12.2f}{took / cost.seconds:>8.2f}")


if __name__ == "__main__":
    main()
