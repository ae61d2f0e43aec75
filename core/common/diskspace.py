"""Telling a full disk from other write failures, and saying so in the same words everywhere.

A write that fails because the disk is full surfaces in many shapes: ``OSError(ENOSPC)`` from Python,
``sqlite3.OperationalError("database or disk is full")`` (or "disk I/O error") from the run store, and torch's
``RuntimeError("[enforce fail at inline_container.cc] . unexpected pos ...")`` from ``torch.save``, which hides
the errno. ``write_failure`` turns any of them into one ``DiskFullError`` whose message is
``disk full: N MB free in DIR`` plus what was not written, so the command line, the pages and the training
log all say what happened and where. A process-level file-size limit (``ulimit -f``, ``EFBIG``) is named as
such, not as a full disk.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from core.common.errors import CoreError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# A write that failed while less than this was free failed for want of space, whatever its exception says
# (torch's checkpoint writer reports a short write as "unexpected pos").
LOW_SPACE_BYTES = 8 * 2**20
_SQLITE_FULL = ("database or disk is full", "disk i/o error")


class DiskFullError(CoreError):
    """A write refused for want of space (or over the process's file-size limit); nothing was half written."""


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """Bytes available to this process in ``folder``'s file system (its nearest existing parent), or None."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``), None when there is none."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def disk_full_message(folder: str | os.PathLike[str], what: str = "") -> str:
    """``disk full: N MB free in DIR`` (and ``; WHAT``)."""
    free = free_bytes(folder)
    amount = "no" if free is None else f"{free / 1e6:.1f}" if free < 10e6 else f"{free / 1e6:.0f}"
    return f"disk full: {amount} MB free in {os.fspath(folder)}" + (f"; {what}" if what else "")


def is_disk_full(exc: BaseException, folder: str | os.PathLike[str]) -> bool:
    """Whether ``exc``, raised by a write into ``folder``, means the disk is full."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    if type(exc).__name__ in ("OperationalError", "DatabaseError") and str(exc).lower().startswith(_SQLITE_FULL):
        free = free_bytes(folder)
        return "full" in str(exc).lower() or (free is not None and free < LOW_SPACE_BYTES)
    free = free_bytes(folder)
    return free is not None and free < LOW_SPACE_BYTES


def write_failure(
    exc: BaseException, folder: str | os.PathLike[str], what: str, kind: type[DiskFullError] = DiskFullError
) -> DiskFullError | None:
    """The error to raise instead of ``exc`` (a write into ``folder`` of ``what``), or None when the failure is
    not about space (then ``exc`` is the caller's to handle). ``kind``: a subclass that is also the caller's own
    error type (a checkpoint's, the run store's), so code catching that still catches a full disk."""
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return kind(f"file too large: this process may not write a file that big (its file-size limit, "
                    f"ulimit -f, stopped it) in {os.fspath(folder)}; {what}")  # fmt: skip
    if is_disk_full(exc, folder):
        return kind(disk_full_message(folder, what))
    return None
