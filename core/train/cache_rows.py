"""Reading rows of the decoded-image cache with ``pread``, not through its memory mapping (issue 28).

The cache (``core.train.tensor_cache``) is a ``.npy`` file mapped copy-on-write, and the batches of every epoch are
cut from it by index. A page read through a mapping stays in the process's resident set (``RssFile``, counted in
its peak ``VmHWM``) until the kernel needs the memory; and on this kernel (6.18, large page-cache folios) a read
fault maps the whole folio around it, up to 2 MB: one shuffled epoch's first few batches already showed the whole
41 MB test cache resident, and dropping the pages (``madvise(MADV_DONTNEED)`` after every 4 MB read) had it back
within five batches. An epoch over a 15 GB cache (200,000 images at 160 px) would show a 15 GB process, though the
pages are the kernel's page cache, and a watchdog, a container limit or a person reading ``top`` sees a server
about to take the machine down.

So the readers of the cache (``Batches``, ``channel_stats``) take their rows through :func:`gather`: for a tensor
that maps a cache file (registered by :func:`track` when the cache is opened) each row is copied with ``pread``
into a fresh batch tensor, so nothing of the file is ever mapped into the process (the kernel still keeps it in the
page cache, so the next epoch reads memory, not the disk); a tensor in RAM is indexed as before. Cost: one system
call a row, about 5 us (0.3 ms for a batch of 64) against the milliseconds a training step spends on it.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class _File:
    fd: int  # opened when the tensor was registered: a later decode that deletes the file takes nothing from it
    offset: int  # where row 0 of the tensor starts in the file
    row_bytes: int
    n_rows: int


_TRACKED: dict[int, _File] = {}  # by the address of the tensor's memory
_LOCK = threading.Lock()  # the training thread, the dashboard's threads and a search's trials register at once


def track(tensor: torch.Tensor, array: np.ndarray) -> None:
    """Read ``tensor``'s rows from the file ``array`` (the numpy array it was made from) maps, when it maps one;
    forgotten (and the file closed) when ``tensor`` is."""
    filename = getattr(array, "filename", None)  # np.memmap (and its slices from row 0): the file it maps
    if not isinstance(array, np.memmap) or not filename or not array.flags.c_contiguous or array.ndim < 2:
        return
    try:
        fd = os.open(filename, os.O_RDONLY)
    except OSError:  # gone already (a decode replaced it): the mapping still reads
        return
    key = tensor.data_ptr()
    with _LOCK:
        _TRACKED[key] = _File(fd, _file_offset(array), int(array[0].nbytes), len(array))
    weakref.finalize(tensor, _forget, key, fd)


def _file_offset(array: np.memmap) -> int:
    """Where ``array``'s first byte is in its file: a slice's ``offset`` attribute is its parent's, whatever row
    the slice starts at, so it is measured from the memmap that made the mapping."""
    root = array
    while isinstance(root.base, np.memmap):
        root = root.base
    return int(root.offset) + (array.ctypes.data - root.ctypes.data)


def _forget(key: int, fd: int) -> None:
    with _LOCK:
        if key in _TRACKED and _TRACKED[key].fd == fd:
            del _TRACKED[key]
    os.close(fd)


def gather(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``images.index_select(0, rows)``: read from the cache file with ``pread`` when ``images`` maps one."""
    with _LOCK:
        found = _TRACKED.get(images.data_ptr()) if images.device.type == "cpu" else None
    if found is None:
        return images.index_select(0, rows)
    out = torch.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
    buffer = out.numpy().reshape(len(rows), -1)
    for i, row in enumerate(rows.tolist()):
        if not 0 <= row < found.n_rows:
            raise IndexError(f"row {row} of {found.n_rows}")
        if os.preadv(found.fd, [buffer[i]], found.offset + row * found.row_bytes) != found.row_bytes:
            raise OSError(f"the image cache file is cut short at row {row}")  # truncated under us
    return out
