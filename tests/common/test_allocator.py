"""core.common.allocator: a training step stops faulting its memory in again once freed blocks are kept (a fresh
Python each, since the setting is for the whole process and permanent)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT

# The child: LeNet at 160 px, batch 16 (a case measured in the module), 3 steps after 2: minor faults a step.
CHILD = """
import resource, sys, torch
torch.set_num_threads(1)
from core.common.allocator import keep_freed_memory
from core.train.archs import bare_model
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # once, then already in force
model = bare_model("lenet", 4, 3)
x, y = torch.randn(16, 3, 160, 160), torch.randint(0, 4, (16,))
def step():
    torch.nn.functional.cross_entropy(model(x), y).backward()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


def _faults_a_step(way: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, way], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.slow  # two fresh Pythons training LeNet at 160 px: 7 s; the default suite is at its 6 minutes
def test_a_step_stops_faulting_its_memory_in_again() -> None:
    default, kept = _faults_a_step("default"), _faults_a_step("keep")
    assert kept < default / 3, (kept, default)
