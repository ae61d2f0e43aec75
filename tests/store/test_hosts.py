"""core.store.hosts: who owns a run and whether that process still lives."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from core.store.hosts import host_facts, pid_start, process_alive
from tests.support import wait_until


def test_a_zombie_or_reused_pid_is_not_alive() -> None:
    child = subprocess.Popen(["true"])

    def zombie() -> list[str] | None:  # exited but not reaped: os.kill(pid, 0) still works on it
        fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields if fields[0] == "Z" else None

    start = int(wait_until(zombie, timeout=5, what="the child to become a zombie", interval=0.01)[19])
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
