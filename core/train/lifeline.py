"""The processes of a distributed run live only as long as whoever started them, and say so while they live.

The chain is: the launcher (``python -m core train`` or the dashboard, in a job thread) -> ``core.train.torchrun``
(torchrun's agent) -> the ranks (``core.train.ddp_worker``) -> anything a rank forks (the scan's worker
processes). Without this, killing the launcher left torchrun and its ranks training with parent pid 1, the run
shown crashed, and a Resume started a second set of ranks writing the same metrics and checkpoints.

- **Dying with the parent.** Each process asks the kernel for a signal when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, Linux), then checks that its parent is still the one it expected
  (``PARENT_ENV``): a parent that died before the request left it orphaned already, and it stops at once
  (``ORPHAN_EXIT``). torchrun gets SIGTERM (it stops its ranks, then exits); a rank gets SIGKILL (a rank without
  its agent can only write over a run someone may resume). The kernel sends the signal when the *thread* that
  started the child ends: the launcher's job thread and torchrun's main thread wait for their children, so in
  practice that is when the process ends. The request does not survive ``fork``: ``die_with_parent`` also asks
  for it in every child the process forks.
- **Saying it lives.** Each process holds a shared ``flock`` on ``<run folder>/.processes.lock``
  (``RUN_FOLDER_ENV``) for as long as it lives, and a forked child shares it. ``processes_alive`` tries an
  exclusive lock, and a resume is refused while it cannot get one. A lock rather than a search of ``/proc`` for
  our command lines: the kernel drops it when the process ends, however it ended (SIGKILL included), so it is
  never stale; a reused pid, or another program naming the same folder, cannot fake it; it needs no right to
  read other users' processes (``hidepid``). A process that has not taken it yet has not passed the parent check
  either, and stops before it writes anything. Ranks on other machines hold no lock here: they write nothing
  into the run (rank 0, on node 0, does).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path

PARENT_ENV = "STUDIO_PARENT_PID"  # the pid a launched process expects as its parent
RUN_FOLDER_ENV = "STUDIO_RUN_FOLDER"  # the run folder whose lock the run's processes hold
LOCK_NAME = ".processes.lock"
ORPHAN_EXIT = 75  # EX_TEMPFAIL: the launcher is gone, nothing to do
_PR_SET_PDEATHSIG = 1

_held: list[int] = []  # this process's lock files: open, and so locked, until it ends


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Get ``sig`` when the parent dies (now, and in every child this process forks); stop at once when the
    parent ``PARENT_ENV`` names is gone already. Does nothing where ``PARENT_ENV`` is unset (a torchrun an
    operator typed by hand has no launcher to follow)."""
    expected = os.environ.get(PARENT_ENV, "")
    if not expected.isdecimal():
        return
    _follow(int(expected), sig)
    forking = [0]
    os.register_at_fork(before=lambda: forking.__setitem__(0, os.getpid()),
                        after_in_child=lambda: _follow(forking[0], sig, quiet=True))  # fmt: skip


def set_parent_of_children() -> None:
    """The processes this one starts from now on expect it as their parent (``die_with_parent``)."""
    os.environ[PARENT_ENV] = str(os.getpid())


def _follow(parent: int, sig: int, *, quiet: bool = False) -> None:
    _parent_death_signal(sig)
    if os.getppid() != parent:  # it died before the request: no signal will ever come
        if not quiet:
            sys.stderr.write("error: the program that started this training process has stopped; so does this one\n")
            sys.stderr.flush()
        os._exit(ORPHAN_EXIT)


def _parent_death_signal(sig: int) -> None:
    if not sys.platform.startswith("linux"):
        return  # elsewhere the launcher's process group is all there is (core.train.launch)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def hold(folder: Path) -> None:
    """Hold the run folder's lock (shared with the run's other processes) until this process ends."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by exec'd children
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held.append(fd)


def hold_from_environment() -> None:
    """``hold`` the folder ``RUN_FOLDER_ENV`` names, if any (the launcher sets it for its torchrun)."""
    folder = os.environ.get(RUN_FOLDER_ENV)
    if folder:
        hold(Path(folder))


def processes_alive(folder: Path) -> bool:
    """Whether any process of the run whose folder this is still lives on this machine (it holds the lock)."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # and with it the exclusive lock, if it was granted
    return False
