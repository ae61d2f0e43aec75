"""Benchmark: a training step with glibc's default allocator thresholds against the studio's kept freed memory
(``core.common.allocator``), each in a fresh Python (the setting is per process and permanent).

``.venv/bin/python -m bench.bench_allocator [--steps 20] [--threads 2]``: per network, input side and batch, ms an
image, minor page faults a step and peak RSS, both ways, and the ratio kept/default.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [("lenet", 160, 64), ("lenet", 160, 16), ("resnet18", 112, 64), ("lenet", 16, 16)]

CHILD = """
import resource, sys, time, torch
arch, side, batch, steps, threads, way = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(threads)
if way == "kept":
    from core.common.allocator import keep_freed_memory
    assert keep_freed_memory()
from core.train.archs import bare_model
from core.train.batches import TRAINING_LAYOUT
model = bare_model(arch, 4, 3).to(memory_format=TRAINING_LAYOUT)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(batch, 3, side, side).contiguous(memory_format=TRAINING_LAYOUT)
y = torch.randint(0, 4, (batch,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
for _ in range(3):
    step()
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
print(1000 * seconds / steps / batch, (after.ru_minflt - before.ru_minflt) / steps, after.ru_maxrss / 1024)
"""


def measure(case: tuple[str, int, int], steps: int, threads: int, way: str) -> tuple[float, float, float]:
    arch, side, batch = case
    done = subprocess.run([sys.executable, "-c", CHILD, arch, str(side), str(batch), str(steps), str(threads), way],
                          capture_output=True, text=True, cwd=ROOT, check=True)  # fmt: skip
    ms, faults, peak = (float(v) for v in done.stdout.split())
    return ms, faults, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"{'network':<10}{'side':>5}{'batch':>6}  {'default ms/img':>14}{'kept ms/img':>12}{'ratio':>7}"
          f"{'faults/step default':>21}{'kept':>9}{'peak MB default':>17}{'kept':>7}")  # fmt: skip
    for case in CASES:
        base = measure(case, args.steps, args.threads, "default")
        kept = measure(case, args.steps, args.threads, "kept")
        print(f"{case[0]:<10}{case[1]:>5}{case[2]:>6}  {base[0]:>14.2f}{kept[0]:>12.2f}{kept[0] / base[0]:>7.2f}"
              f"{base[1]:>21,.0f}{kept[1]:>9,.0f}{base[2]:>17,.0f}{kept[2]:>7,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
