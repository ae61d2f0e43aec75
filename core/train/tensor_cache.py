"""The decoded-tensor cache on disk: an index (``<dataset>-<S>.json``) naming, for each file of a dataset, its stat
and where its ``3 x S x S`` uint8 pixels are: a row (``slot``) of one of the ``<dataset>-<S>-<random>.npy`` files.

How it is written (issue 28: the first decode of 20,000 JPEGs at 160 px held every image twice in RAM, 11 GB):

* A decode writes into a fresh ``.npy`` preallocated for every asked image (``open_memmap(mode="w+")`` writes
  the header and sizes the file, sparse), one chunk of rows at a time (:data:`DECODE_CHUNK_BYTES`), with
  ``pwrite``, not through the writable mapping: every page written through a mapping stays in the process's
  resident set until the kernel needs the memory (3,000 images decoded at 64 px, 37 MB, in 2 MB chunks: the peak
  RSS grew by 48 MB written through the mapping, by 12 MB with ``pwrite``), while written pages are the kernel's
  page cache, not the process's.
* Rows of earlier files are copied with ``pread`` for the same reason.
* The index is replaced (atomically) after every chunk (:data:`INDEX_TIME_SHARE` aside), naming the rows written
  so far in the new file and the rest where they were (the earlier files stay until the decode ends): a killed
  decode loses what was decoded since the last index, and nothing that was cached before. Data is written
  before the index that names it, so a reader never sees a row that is not there.
* When the decode ends, the index names one file whose first rows are the asked images in the asked order: the
  next call with the same paths maps it copy-on-write and copies nothing. Its header keeps the capacity (every
  asked image); rows past the last named one (failed files) are never read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.common.atomic import write_atomic

# Decoded pixels held in RAM at once while decoding or copying (the chunk buffer). 64 MiB is 870 images at 160 px
# (about a second of decoding on two cores: the index rewritten after each costs a few percent) and 21 at
# 1024 px, next to the ~1 GB a process with torch already takes.
DECODE_CHUNK_BYTES = 64 * 1024**2
# The index is skipped after a chunk while its last rewrite took more than this share of the time since: it names
# every row, so at 200,000 rows (23 MB of JSON, 0.3 s) after every chunk it would cost ~15% of the decode.
INDEX_TIME_SHARE = 0.05


@dataclass
class CachedRows:
    """What the index names: ``rows[path]`` has ``size``, ``mtime_ns``, ``reason`` ("" when usable), ``slot``
    (-1 when not) and ``file`` (a name in ``arrays``). Each file is mapped copy-on-write (nothing read until
    indexed) and kept open, so a decode that deletes it meanwhile takes nothing from this reader."""

    rows: dict[str, dict] = field(default_factory=dict)
    arrays: dict[str, np.memmap] = field(default_factory=dict)
    _files: dict[str, BinaryIO] = field(default_factory=dict)

    def __enter__(self) -> CachedRows:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def open(self, path: Path, size: int) -> None:
        """Map the ``.npy`` at ``path`` of ``3 x size x size`` rows and keep it open.

        Raises:
            OSError, ValueError: no such file, or not one of these.
        """
        fh = open(path, "rb")  # kept open until close(): pread reads through it
        self._files[path.name] = fh
        version = np.lib.format.read_magic(fh)
        headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in headers:
            raise ValueError(f"{path}: .npy version {version}")
        shape, fortran, dtype = headers[version](fh)
        if fortran or dtype != np.uint8 or tuple(shape[1:]) != (3, size, size):
            raise ValueError(f"{path}: not {size} px rows")
        self.arrays[path.name] = np.memmap(fh, np.uint8, mode="c", offset=fh.tell(), shape=shape)

    def mapped_as(self, kept: list[str]) -> np.ndarray | None:
        """The mapped file itself when its first rows are exactly ``kept``, in order (an unchanged dataset)."""
        if len(self.arrays) != 1:
            return None
        ((name, array),) = self.arrays.items()
        for i, path in enumerate(kept):
            row = self.rows[path]
            if row["slot"] != i or row["file"] != name:
                return None
        return array[: len(kept)]

    def holding(self, kept: list[str]) -> np.ndarray | None:
        """The whole mapped file (its named rows) when it holds every one of ``kept``, in any order."""
        names = {self.rows[p]["file"] for p in kept}
        if len(names) != 1:
            return None
        (name,) = names
        last = max((r["slot"] for r in self.rows.values() if r["file"] == name), default=-1)
        return self.arrays[name][: last + 1]

    def read(self, path: str, into: np.ndarray) -> None:
        """Copy the pixels of ``path`` into ``into`` (one ``3 x S x S`` row) with ``pread``: no mapped page kept."""
        row = self.rows[path]
        at = self.arrays[row["file"]].offset + row["slot"] * into.nbytes
        if os.preadv(self._files[row["file"]].fileno(), [into], at) != into.nbytes:
            raise OSError(
                f"{row['file']}: row {row['slot']} is cut short"
            )  # the mapping checked the size: a truncation

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


def read_cache(base: Path | None, size: int) -> CachedRows:
    """The rows the index at ``base`` names; none when there is no index, or it or a file it names is damaged
    (a damaged cache only costs a decode, never an error)."""
    cached = CachedRows()
    index = base.with_suffix(".json") if base else None
    if index is None or not index.is_file():
        return cached
    try:
        doc = json.loads(index.read_text())
        files = doc["files"] if "files" in doc else [doc["npy"]]  # the one-file index of before issue 28
        for name in files:
            cached.open(index.parent / name, size)
        rows = {r["path"]: {**r, "file": files[r.get("file", 0)]} for r in doc["rows"]}
        if any(r["slot"] >= len(cached.arrays[r["file"]]) for r in rows.values()):
            raise ValueError("a row past the end of its file")
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        cached.close()
        return CachedRows()
    cached.rows = rows
    return cached


@contextlib.contextmanager
def decode_lock(base: Path) -> Iterator[None]:
    """Held while a decode writes the cache at ``base``: two decodes of one dataset at one size (a search's
    trials starting together) would each decode everything, and each one's end deletes the files it no longer
    names, the other's included. The second waits, then finds the images cached. Released when the process dies."""
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


class RowSink:
    """Where :func:`core.train.tensors.load_tensors` puts rows in order: an array in RAM (no cache folder, or an
    order of cached images that needs no new file), filled in place: nothing held besides."""

    name = ""  # the file rows name in the index: none

    def __init__(self, capacity: int, size: int) -> None:
        self._out = np.empty((capacity, 3, size, size), np.uint8)

    def buffer(self, slot: int, n_rows: int) -> np.ndarray:
        """Where to put the next ``n_rows`` rows, of which the usable ones go to ``slot`` on (moved together)."""
        return self._out[slot : slot + n_rows]

    def write(self, slot: int, rows: np.ndarray) -> None:
        """Nothing to do: the rows were put in place."""

    def index_due(self) -> bool:
        return False

    def write_index(self, rows: list[dict], *, final: bool = False) -> None:
        """Nothing to name: the rows live only in this process."""

    def finish(self, n_rows: int) -> np.ndarray:
        return self._out[:n_rows]

    def close(self) -> None:
        """Nothing to release."""


class FileSink(RowSink):
    """A fresh ``.npy`` at ``base`` with room for ``capacity`` rows, written from a buffer of ``chunk_rows`` rows
    with ``pwrite`` (see the module's docstring), and the index that names it."""

    def __init__(self, base: Path, capacity: int, size: int, chunk_rows: int) -> None:
        base.parent.mkdir(parents=True, exist_ok=True)
        self._base, self._buf = base, np.empty((min(chunk_rows, capacity), 3, size, size), np.uint8)
        self.name = f"{base.name}-{uuid.uuid4().hex[:12]}.npy"
        path = base.parent / self.name
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(capacity, 3, size, size))
        self._offset, self._row_bytes = header.offset, 3 * size * size
        del header  # unmapped untouched: rows go through pwrite
        self._fd: int | None = os.open(path, os.O_WRONLY)
        self._index_cost = 0.0
        self._index_at = time.monotonic()

    def buffer(self, slot: int, n_rows: int) -> np.ndarray:
        return self._buf[:n_rows]

    def write(self, slot: int, rows: np.ndarray) -> None:
        assert self._fd is not None and rows.flags.c_contiguous
        data, at = memoryview(rows.reshape(-1)), self._offset + slot * self._row_bytes  # bytes, none for 0 rows
        while data:  # pwrite may write less than asked (signals, huge sizes): write the rest
            done = os.pwrite(self._fd, data, at)
            data, at = data[done:], at + done

    def index_due(self) -> bool:
        """Whether to rewrite the index now: unless its last rewrite took more than INDEX_TIME_SHARE of the time
        since."""
        return self._index_cost <= INDEX_TIME_SHARE * (time.monotonic() - self._index_at)

    def write_index(self, rows: list[dict], *, final: bool = False) -> None:
        """Name ``rows`` (``file`` is a file name; this file's rows are written already: pwrite's data is in the
        page cache every process reads); ``final`` also deletes the files no longer named."""
        started = time.monotonic()
        files = sorted({r["file"] for r in rows} | {self.name})
        number = {name: i for i, name in enumerate(files)}
        doc = {"files": files, "rows": [{**r, "file": number[r["file"]]} for r in rows]}
        write_atomic(self._base.with_suffix(".json"), json.dumps(doc), durable=False)  # a cache: rebuilt when lost
        self._index_at = time.monotonic()
        self._index_cost = self._index_at - started
        if final:
            for old in self._base.parent.glob(f"{self._base.name}-*.npy"):
                if old.name not in number:  # a reader that mapped it keeps its pages (unlinked files stay readable)
                    old.unlink(missing_ok=True)

    def finish(self, n_rows: int) -> np.ndarray:
        self.close()
        return np.load(self._base.parent / self.name, mmap_mode="c")[:n_rows]  # copy-on-write, as when read back

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
