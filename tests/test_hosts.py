"""core.store.hosts: who owns a run and whether that process still lives."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from core.store.hosts import host_facts, pid_start, process_alive


def test_a_zombie_or_reused_pid_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    start = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # exited but not reaped: a zombie, os.kill(pid, 0) still works
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        start = start or int(stat.rsplit(")", 1)[1].split()[19])
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    assert process_alive(child.pid, start) is False
    child.wait()
    me = pid_start(os.getpid())
    assert process_alive(os.getpid(), None) and process_alive(os.getpid(), me)
    assert process_alive(os.getpid(), me + 1) is False
    assert process_alive(None, None) is False


def test_a_child_that_exited_and_was_reaped_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    started = pid_start(child.pid)
    child.wait()
    assert started is not None
    assert process_alive(child.pid, started) is False


def test_host_facts_name_the_machine_and_the_usable_cores() -> None:
    facts = host_facts()
    assert facts["hostname"] and facts["cpu_model"]
    assert facts["cpu_count"] == len(os.sched_getaffinity(0))
