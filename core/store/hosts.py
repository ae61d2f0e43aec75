"""Which machine and process a run belongs to, and whether that process is still alive.

The run store records a run's owner (host, pid, the pid's start time) so a run whose process died is
seen as crashed at once on the same host; a reused pid is told apart by its start time in /proc.
"""

from __future__ import annotations

import functools
import os
import platform
import socket

from core.common.cpu import usable_cores

_HAS_PROC = os.path.isdir("/proc/self")


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_facts() -> dict:
    """The machine a run executes on.

    Returns:
        ``{"hostname": str, "cpu_model": str, "cpu_count": int}``; ``cpu_count`` is the number of
        cores this process may use (``os.sched_getaffinity``), which is what scaling tables need.
    """
    return {"hostname": socket.gethostname(), "cpu_model": _cpu_model(), "cpu_count": usable_cores()}


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (index 0 = state, 19 = starttime), None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    # Field 2 is the command name in parentheses and may itself contain spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def pid_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22), None where /proc is missing."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_alive(pid: int | None, pid_start: int | None) -> bool:
    """Whether the process that owned a run still exists on this host.

    Args:
        pid: the owner's process id.
        pid_start: its start time from ``/proc/<pid>/stat``; when given, a live process with another
            start time is a new process that reused the pid, so the owner is gone.

    Returns:
        False for a missing pid, a zombie (exited, not yet reaped) or a reused pid.
    """
    if pid is None or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    fields = _proc_stat(pid)
    if fields is None:
        return not _HAS_PROC  # with /proc, a vanished entry means it exited just now
    if fields[0] in ("Z", "X"):
        return False
    return pid_start is None or len(fields) <= 19 or int(fields[19]) == pid_start
