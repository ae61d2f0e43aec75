"""Whether the owner of an active run still lives: the crash detection of the run store.

Each run records its owner (host, pid, pid start time, process instance id, thread name). A
``queued``/``running`` run whose owner is gone is reported, and persisted, as ``crashed``:

* same host, another process: the pid is not alive, is a zombie, or was reused (its start time in
  ``/proc/<pid>/stat`` differs from the recorded one);
* same process: the owning thread has ended (checked on the ``Thread`` object registered by
  ``start_run``, else by name in ``threading.enumerate()``);
* another host: the heartbeat is older than ``stale_after_s`` (a queued run that never sent a
  heartbeat is left queued: nothing says its owner is gone).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import uuid
from typing import Any

from core.store.hosts import host_facts, pid_start, process_alive
from core.store.records import ACTIVE_STATUSES

# One uuid per Python process. A forked child gets a new one (it is a different process even though
# it inherits this module), so a run it owns is never judged by its parent's threads.
_INSTANCE_ID: str = uuid.uuid4().hex

# (store file, run id) -> the Thread that called start_run in this process. The Thread object, not
# its name, is the proof of life: names repeat, objects do not.
_OWNER_THREADS: dict[tuple[str, int], threading.Thread] = {}
_OWNER_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _INSTANCE_ID
    _INSTANCE_ID = uuid.uuid4().hex
    _OWNER_THREADS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def instance_id() -> str:
    """This process's id (new in a forked child)."""
    return _INSTANCE_ID


def find_thread(name: str | None) -> threading.Thread | None:
    """The live thread of this process called ``name``, if any."""
    return next((t for t in threading.enumerate() if t.name == name), None)


def owner_columns(pid: int | None = None, thread: str | None = None) -> dict[str, Any]:
    """Owner columns for ``pid`` (default: this process) and thread name ``thread``."""
    facts = host_facts()
    pid = os.getpid() if pid is None else pid
    return {
        "host": facts["hostname"],
        "pid": pid,
        "pid_start": pid_start(pid),
        # Only this process can vouch for its threads; for another pid the process is the owner.
        "instance": _INSTANCE_ID if pid == os.getpid() else None,
        "thread": thread if pid == os.getpid() else None,
        "cpu_model": facts["cpu_model"],
        "cpu_count": facts["cpu_count"],
    }


# Why a run crashed, in words a page can show to anyone: never the server's pid or host name.
PROCESS_GONE = "the program that ran it stopped before the run finished (closed, killed, or out of memory)"
THREAD_GONE = "the training thread that ran it ended without finishing"


class Liveness:
    """Judges the active runs of one store file; remembers which thread of this process owns which run."""

    def __init__(self, store_key: str, stale_after_s: float) -> None:
        self.key, self.stale_after_s = store_key, stale_after_s

    def register(self, run_id: int, thread: threading.Thread | None) -> None:
        """``thread`` (of this process) owns ``run_id`` from now on; None forgets the run."""
        with _OWNER_LOCK:
            if thread is None:
                _OWNER_THREADS.pop((self.key, run_id), None)
            else:
                _OWNER_THREADS[(self.key, run_id)] = thread

    def registered(self, run_id: int) -> threading.Thread | None:
        with _OWNER_LOCK:
            return _OWNER_THREADS.get((self.key, run_id))

    def crash_reason(self, row: sqlite3.Row, now: float) -> str | None:
        """Why an active run's owner is gone, or None when it may still be working."""
        if row["status"] not in ACTIVE_STATUSES:
            return None
        if row["host"] != socket.gethostname():
            return self._stale_reason(row, now)
        if row["instance"] == _INSTANCE_ID and row["pid"] == os.getpid():
            return self._thread_crash_reason(row)
        if process_alive(row["pid"], row["pid_start"]):
            return None
        return PROCESS_GONE

    def _thread_crash_reason(self, row: sqlite3.Row) -> str | None:
        registered = self.registered(row["id"])
        name = row["thread"]
        if registered is not None:
            alive = registered.is_alive()
        elif name is None:
            return None  # owned by this process itself, which is evidently alive
        else:
            alive = find_thread(name) is not None
        return None if alive else THREAD_GONE

    def _stale_reason(self, row: sqlite3.Row, now: float) -> str | None:
        # Another host: its pids mean nothing here, only the heartbeat age does. A queued run that
        # never sent a heartbeat has no evidence either way and stays queued.
        last = row["heartbeat_at"]
        if last is None or now - last <= self.stale_after_s:
            return None
        return f"the machine that ran it has not been heard from for {now - last:.0f} s"
