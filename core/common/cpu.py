"""How many cores this process may use, so parallel work never oversubscribes them.

On the 2-core machines this product targets, processes x threads above the core count made training
2-3x slower (measured: two 2-thread ResNet-18 trainings at once gave 84 img/s in all, one alone 130-202), so
every parallel part asks here first.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_torch_threads(threads: int = 0) -> int:
    """Set the calling thread's torch thread count (0: every usable core); returns the count set.

    Measured on torch 2.14.1: once a thread has used torch, ``torch.set_num_threads`` changes only that
    thread's OpenMP team size (plus the default for threads started later), not other running threads'. So
    ``fit`` calls this in the training thread when ``config.threads`` is set, and background jobs follow the
    registry's shared budget through ``JobContext.sync_threads`` otherwise.
    """
    import torch  # here, not at the top: this module stays light (the run store and the CLI import it)

    n = threads if threads > 0 else usable_cores()
    torch.set_num_threads(n)
    return n
