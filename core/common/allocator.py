"""glibc's allocator told to keep freed memory for the next training step instead of handing it back to the kernel.

Training allocates the same large tensors every step (activations, gradients, the batch's float copies). glibc
serves blocks above ``M_MMAP_THRESHOLD`` (at most 32 MiB by its own rule) with a fresh ``mmap`` and unmaps them when
freed, so every step faults its memory in again, one 4 KB page at a time. Measured on this 2-core VM (torch 2.14.1,
one training step, 2 threads, 20 steps after 3 warm-up; ``python -m bench.bench_allocator`` measures it again):

    ===============================  ==============  ================  ======================
    network, input, batch            glibc default   kept (256 MiB)    peak RSS default/kept
    ===============================  ==============  ================  ======================
    LeNet, 160 px, 64                17.0 ms/img     6.7-7.3 ms/img    1.73 / 2.47 GB
    LeNet, 160 px, 16                12.6            7.6               1.12 / 1.17 GB
    ResNet-18, 112 px, 64            8.6             7.2               1.36 / 1.44 GB
    LeNet, 16 px, 16 (the digits)    0.11-0.13       0.11              0.69 / 0.69 GB
    ===============================  ==============  ================  ======================

(614,000 minor page faults a step at LeNet 160 px, batch 64, before; 8,000-27,000 after.) The price is the
process's peak, which stays at its high-water mark: freed blocks are kept for reuse, not returned.
``core.train.memory``'s estimate is checked against real peaks with this setting in force.

Thresholds are per process and permanent; set once, by the first training (or LR finder, or prediction pass) of
the process. Nothing happens where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

KEEP_BYTES = 256 * 1024**2  # blocks up to this size come from the heap, and this much free heap top is kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_DONE: list[bool] = []
_LOCK = threading.Lock()


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once for this process; whether they are in force."""
    with _LOCK:
        if not _DONE:
            _DONE.append(_apply())
        return _DONE[0]


def _apply() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its own allocator, left as it is
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
