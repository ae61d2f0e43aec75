"""A distributed run exposes nothing beyond this machine and never outlives whoever started it (issue 22).

Real ``python -m core train sample:digits --ranks 2`` launches (lenet, one thread per rank): the listening TCP
sockets of the whole process tree are read from ``/proc`` while it trains, and the launcher is killed (SIGKILL,
SIGTERM) to see that no process of the run is left. A resume while a process of the run still lives is refused.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.common.errors import RunStoreError
from core.common.workspace import Workspace
from core.store.runs import RunStore
from tests.app_server import free_port
from tests.support import ROOT, wait_until

TINY = ["--arch", "lenet", "--threads", "1"]  # 2 ranks x 1 thread on the 2 cores
GONE_S = 30  # the issue asks for 10 s; tripled for a busy 2-core machine (a generous poll, not a timing)


# --- what /proc says -----------------------------------------------------------------------------------


def _stat_ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _tree(root: int) -> list[int]:
    """``root`` and every process descending from it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ppid := _stat_ppid(int(entry.name))) is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _address(hex_address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """``0100007F:853B`` (``/proc/net/tcp``: 32-bit words in host order) -> (127.0.0.1, 34107)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw), int(port, 16)


def _listening_inodes() -> dict[int, tuple]:
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found[int(fields[9])] = _address(fields[1])
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    except OSError:
        pass
    return inodes


def _listeners(root: int) -> dict[tuple[str, int], set[int]]:
    """(address, port) -> the pids of ``root``'s tree listening there."""
    listening = _listening_inodes()
    found: dict[tuple[str, int], set[int]] = {}
    for pid in _tree(root):
        for inode in _socket_inodes(pid) & listening.keys():
            address, port = listening[inode]
            found.setdefault((str(address), port), set()).add(pid)
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(
        isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback
    )


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _run_pids(ws: Path) -> list[int]:
    """The live processes whose command line names ``ws``: launcher, torchrun, ranks, their forked helpers."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            line = _cmdline(int(entry.name))
            if any(str(ws) == arg or f"{ws}/" in arg for arg in line):
                pids.append(int(entry.name))
    return pids


def _rank_pids(ws: Path) -> list[int]:
    """The ranks (and their forked helpers): torchrun's command line names the worker too, after its own options."""
    return [pid for pid in _run_pids(ws) if "core.train.ddp_worker" in (line := _cmdline(pid))
            and not any(arg.startswith("--nproc-per-node") for arg in line)]  # fmt: skip


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(kv.split("=", 1) for kv in raw if "=" in kv)


def _train(ws: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    """``train`` in a child; with ``log``, its output goes to that file: a pipe would stay open as long as any
    orphaned rank holds it, and reading it would wait for them."""
    argv = [sys.executable, "-m", "core", "train", *args, *TINY, "--workspace", str(ws), "--json"]
    if log is None:
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with log.open("w") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _kill_leftovers(ws: Path) -> None:
    """The processes this test started and that a failing fix left behind (by their pid, never by name)."""
    for pid in _run_pids(ws):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _watch(proc: subprocess.Popen) -> dict[tuple[str, int], set[int]]:
    """Every listening socket ``proc``'s tree opened while it ran (polled until it exits)."""
    seen: dict[tuple[str, int], set[int]] = {}
    while proc.poll() is None:
        for where, pids in _listeners(proc.pid).items():
            seen.setdefault(where, set()).update(pids)
        time.sleep(0.1)
    return seen


@pytest.fixture
def run_ws(tmp_path: Path, digits_ws: Workspace) -> Iterator[Path]:
    """A workspace of its own (its path names this test's processes) holding a copy of the sample."""
    ws = tmp_path / "ws"
    shutil.copytree(digits_ws.datasets / "sample-digits", ws / "datasets" / "sample-digits")
    yield ws
    _kill_leftovers(ws)


# --- finding 1: where it listens ---------------------------------------------------------------------------


@pytest.mark.slow  # ~8 s of torchrun: CI runs it; the default suite keeps under 6 min
def test_a_two_rank_run_listens_on_loopback_only(run_ws: Path) -> None:
    proc = _train(run_ws, "sample:digits", "--ranks", "2", "--epochs", "1")
    ranks = wait_until(lambda: _rank_pids(run_ws) if len(_rank_pids(run_ws)) == 2 else None, timeout=300,
                       what="both ranks", process=proc)  # fmt: skip
    agent = _stat_ppid(ranks[0])  # torchrun: it holds the rendezvous stores
    envs = [_environ(pid) for pid in ranks]
    seen = _watch(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert any(agent in pids for pids in seen.values()), f"torchrun's stores not seen: {seen}"
    exposed = {where: pids for where, pids in seen.items() if not _loopback(where[0])}
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert [e.get("GLOO_SOCKET_IFNAME") for e in envs] == ["lo", "lo"]  # gloo between ranks: loopback too


@pytest.mark.slow
def test_two_nodes_on_one_host_listen_where_the_endpoint_says(run_ws: Path) -> None:
    port = free_port()
    common = ["sample:digits", "--ranks", "1", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--epochs", "1"]
    node0 = _train(run_ws, *common, "--node-rank", "0")
    node1 = _train(run_ws, *common, "--node-rank", "1")
    seen = _watch(node0)
    for where, pids in _watch(node1).items():
        seen.setdefault(where, set()).update(pids)
    assert node0.wait(60) == 0 and node1.wait(60) == 0, node0.stderr.read()[-3000:] + node1.stderr.read()[-3000:]
    assert ("127.0.0.1", port) in seen  # node 0's store, at the endpoint
    assert all(_loopback(address) for address, _ in seen), seen


def test_the_store_listens_on_the_address_it_is_given() -> None:
    from datetime import timedelta

    import torch.distributed as dist

    from core.train.torchrun import BoundTCPStore

    server = BoundTCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30))
    where = [(str(a), p) for a, p in _listening_inodes().values() if p == server.port]
    assert where == [("127.0.0.1", server.port)]  # not 0.0.0.0 nor ::, which torch's own TCPStore picks
    client = dist.TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=30))
    client.set("key", "value")
    assert server.get("key") == b"value"


def test_a_store_for_another_machines_address_is_refused_not_opened_everywhere() -> None:
    from datetime import timedelta

    from core.train.torchrun import BoundTCPStore

    port = free_port()
    with pytest.raises(RuntimeError, match=r"cannot listen on 192\.0\.2\.1:\d+"):  # TEST-NET-1: never ours
        BoundTCPStore("192.0.2.1", port, is_master=True, timeout=timedelta(seconds=5))
    assert not [p for _, p in _listening_inodes().values() if p == port]


def test_gloo_and_nccl_use_the_interface_towards_node_0(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.train.launch import Nodes, network_env

    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):  # an operator's choice would win on several machines
        monkeypatch.delenv(name, raising=False)

    for nodes in (Nodes(), Nodes(2, 1, f"127.0.0.1:{free_port()}")):
        env = network_env(nodes)
        assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "lo"


# --- finding 2: a run dies with whoever started it ----------------------------------------------------------


def _training(ws: Path) -> subprocess.Popen:
    """A 2-rank run that has written its first checkpoint (so it could be resumed) and trains on."""
    proc = _train(ws, "sample:digits", "--ranks", "2", "--epochs", "1000", log=ws.parent / "train.log")
    wait_until((ws / "checkpoints" / "run-1" / "last.pt").is_file, timeout=300, what="the first checkpoint",
               process=proc)  # fmt: skip
    assert len(_rank_pids(ws)) == 2
    return proc


# Both with the slow tests (CI runs them), to keep the default suite under 6 minutes: SIGTERM is the same lifeline,
# after the CLI's own handler.
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGKILL, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGKILL", "SIGTERM"])  # fmt: skip
def test_a_killed_launcher_takes_every_process_of_its_run_with_it(run_ws: Path, sig: signal.Signals) -> None:
    proc = _training(run_ws)
    proc.send_signal(sig)
    proc.wait(120)
    left = wait_until(lambda: not _run_pids(run_ws), timeout=GONE_S, what="no process of the run left")
    assert left
    status = RunStore(run_ws / "runs.sqlite").get_run(1).status
    assert status == ("crashed" if sig == signal.SIGKILL else "cancelled")  # SIGTERM cancels cleanly


@pytest.mark.slow  # ~8 s of torchrun: CI runs it; the default suite keeps under 6 min
def test_resume_is_refused_while_a_process_of_the_run_lives(run_ws: Path) -> None:
    from core.train.jobs import JobRegistry
    from core.train.lifeline import processes_alive
    from core.train.runner import resume_training

    proc = _training(run_ws)
    store = RunStore(run_ws / "runs.sqlite")  # a second handle: as a dashboard that judged the run crashed
    store.set_status(1, "crashed", error="its owner looked gone")
    registry = JobRegistry(store)
    try:
        with pytest.raises(RunStoreError, match="still has processes") as refused:
            resume_training(registry, Workspace.open(run_ws), 1)
        assert str(run_ws) not in str(refused.value)  # words, no server paths
    finally:
        registry.cancel(1)
        proc.kill()
        proc.wait(120)
    wait_until(lambda: not _run_pids(run_ws), timeout=GONE_S, what="no process of the run left")
    # A killed process's command line goes blank as its memory is freed, a moment before its files close.
    wait_until(lambda: not processes_alive(run_ws / "checkpoints" / "run-1"), timeout=GONE_S, what="the lock free")
    registry = JobRegistry(store)
    resume_training(registry, Workspace.open(run_ws), 1)  # once they are gone it resumes
    registry.cancel(1)
    registry.wait(1, timeout=300)


def test_a_process_whose_parent_is_already_gone_stops_at_once(tmp_path: Path) -> None:
    from core.train import lifeline

    code = "from core.train import lifeline; lifeline.die_with_parent(); print('alive')"
    env = {**os.environ, lifeline.PARENT_ENV: "1"}  # not its parent: the one it expected died meanwhile
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == lifeline.ORPHAN_EXIT and "alive" not in done.stdout
    assert "stopped" in done.stderr
    env[lifeline.PARENT_ENV] = str(os.getpid())
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "alive" in done.stdout


def test_the_run_lock_is_held_while_a_process_holds_it(tmp_path: Path) -> None:
    from core.train import lifeline

    folder = tmp_path / "run-1"
    folder.mkdir()
    assert not lifeline.processes_alive(folder)
    code = f"from pathlib import Path; from core.train import lifeline; lifeline.hold(Path({str(folder)!r})); print('held', flush=True); input()"  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lifeline.processes_alive(folder)
        assert lifeline.processes_alive(folder)  # asking does not take it
    finally:
        holder.kill()
        holder.wait(60)
    assert not lifeline.processes_alive(folder)  # the kernel lets go with the process, however it died


def test_what_a_rank_forks_dies_with_it(tmp_path: Path) -> None:
    from core.train import lifeline

    # A rank's scan forks worker processes; the kernel's parent-death request is not inherited across fork.
    code = """if True:
        import multiprocessing, os, signal, sys
        from concurrent.futures import ProcessPoolExecutor
        from core.train import lifeline
        lifeline.die_with_parent(signal.SIGKILL)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(abs, range(4)))
            print(*[p.pid for p in multiprocessing.active_children()], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """
    env = {**os.environ, lifeline.PARENT_ENV: str(os.getpid())}
    out = tmp_path / "pids"
    with out.open("w") as file:  # not a pipe: reading one would wait for every forked worker that holds it
        code_ = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=file, timeout=120).returncode
    forked = [int(pid) for pid in out.read_text().split()]
    assert len(forked) == 2 and code_ == -signal.SIGKILL
    wait_until(lambda: not [pid for pid in forked if _cmdline(pid) not in ([], [""])], timeout=GONE_S,
               what="the forked workers gone")  # fmt: skip
