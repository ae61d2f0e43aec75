"""core.common.cpu: the core budget follows the process's CPU affinity, not the machine's total."""

import os
import subprocess
import sys

from core.common.cpu import usable_cores
from tests.support import ROOT


def test_usable_cores_matches_this_process_affinity() -> None:
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_usable_cores_shrinks_when_the_process_is_pinned_to_one_core() -> None:
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from core.common.cpu import usable_cores; print(usable_cores())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == "1"
