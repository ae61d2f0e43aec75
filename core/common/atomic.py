"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The one place the rule lives (checkpoints, cleaned datasets, splits, caches all write through it): the data goes
to a uniquely named temporary file in the target's folder (``.<name>.<random>.partial``; same file system, so
the rename is atomic), then ``os.replace`` puts it in place. ``durable=True`` also fsyncs the file before the
rename and the folder after it, so the new file survives a power cut; caches skip that (they are rebuilt
when lost, and an fsync per thumbnail would cost more than the thumbnail).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PARTIAL_SUFFIX = ".partial"  # a leftover with this suffix is a write that was interrupted (a kill, a full disk)


def write_atomic(target: Path, content: bytes | str | Callable[[BinaryIO], object], *, durable: bool = True) -> None:
    """Write ``content`` to ``target`` atomically: bytes, text (UTF-8), or a function writing to a binary file.

    The folder is created. On any error the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_folder(target.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); some file systems refuse to open a folder, which is harmless."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
