"""How many cores this process may use, so parallel work never oversubscribes them.

On the 2-core machines this product targets, processes x threads above the core count made training
2-3x slower (see shared/research/cpu-training.md), so every parallel part asks here first.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
