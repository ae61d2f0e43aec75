"""Training on ``torch.distributed``: ``torchrun`` starts the ranks (``core.train.ddp_worker``), on this machine
or on several, and the run is an ordinary stored run.

On the machine of node 0 the launch is a job of the registry, like any run: its thread owns the run in the
store (so a dashboard or a command that dies leaves it crashed, resumable), starts ``torchrun`` and waits.
Rank 0 writes the run's metrics and checkpoints and, at its very end, the status it finished with; the job
reads that status back. ``torchrun``'s exit code is not trusted for it: it was seen reporting a failure after
rank 0 had finished. A run whose rank 0 stored no status failed (a rank died): it resumes from ``last.pt``.

Several machines: every machine runs ``python -m core train DATASET --ranks R --nnodes M --node-rank K
--rdzv-endpoint HOST:PORT`` with the same settings (the dataset at the same path on each); node 0 owns the run,
the others only train.

What listens (``core.train.torchrun`` has the details): on one machine, everything on 127.0.0.1 (torchrun's
stores, and gloo/nccl between ranks on the loopback interface). On several, node 0's store listens on the
``--rdzv-endpoint`` address, and gloo/nccl on the interface each machine reaches that address through (an
operator's ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` wins): none of it is authenticated, so the endpoint
belongs on a private network. ``torchrun`` runs as ``core.train.torchrun`` and dies with the launcher, its ranks
with it (``core.train.lifeline``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from core.common.cpu import usable_cores
from core.common.errors import CoreError
from core.common.untrusted import whole_number
from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import lifeline
from core.train.config import TrainConfig
from core.train.runplan import RunPlan

STATUS_PARAM = "ddp_status"  # what rank 0 stored as the run's end: completed | cancelled
POLL_S = 0.5
LOOPBACK, LOOPBACK_INTERFACE = "127.0.0.1", "lo"
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


@dataclass(frozen=True)
class Nodes:
    """Where the ranks run: one machine (the default) or ``count`` machines meeting at ``endpoint``."""

    count: int = 1
    rank: int = 0  # this machine's node rank
    endpoint: str = ""  # HOST:PORT of node 0, for several machines

    def check(self) -> Nodes:
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise CoreError(f"--node-rank {self.rank} with --nnodes {self.count}: expected 0 <= node rank < nnodes")
        if self.count > 1 and (":" not in self.endpoint or whole_number(self.endpoint.rsplit(":", 1)[1]) is None):
            raise CoreError(f"--nnodes {self.count} needs --rdzv-endpoint HOST:PORT (node 0's address), "
                            f"got {self.endpoint!r}")  # fmt: skip
        return self


def threads_per_rank(config: TrainConfig) -> int:
    """``threads`` as set, else the cores shared by the ranks on this machine (never oversubscribed)."""
    return config.threads or max(1, usable_cores() // config.ranks)


def torchrun_argv(ws: Workspace, source: TrainConfig | RunPlan, run_id: int, *, resume: bool,
                  nodes: Nodes | None = None, extra: dict | None = None) -> list[str]:  # fmt: skip
    """The ``torchrun`` command of one machine (``python -m torch.distributed.run``, the same program); its ranks
    get the run's plan (``--plan``), or a config only when the data could not be read before the run queued."""
    nodes = nodes or Nodes()
    config = source.config if isinstance(source, RunPlan) else source
    ranks_config = replace(config, threads=threads_per_rank(config))
    given = (["--plan", json.dumps(replace(source, config=ranks_config).to_dict())] if isinstance(source, RunPlan)
             else ["--config", json.dumps(ranks_config.to_dict())])  # fmt: skip
    argv = [sys.executable, "-m", "core.train.torchrun", f"--nproc-per-node={config.ranks}"]
    if nodes.count == 1:  # --standalone, on 127.0.0.1 rather than "localhost": a rendezvous on a free local port
        argv += ["--rdzv-backend=c10d", f"--rdzv-endpoint={LOOPBACK}:0", f"--rdzv-id={uuid.uuid4()}",
                 f"--local-addr={LOOPBACK}"]  # fmt: skip
    else:  # static rendezvous: node 0 listens at the endpoint, the others connect to it
        argv += [f"--nnodes={nodes.count}", f"--node-rank={nodes.rank}", f"--rdzv-endpoint={nodes.endpoint}"]
    argv += ["-m", "core.train.ddp_worker", "--workspace", str(ws.root), "--run-id", str(run_id), *given]
    if resume:
        argv.append("--resume")
    if extra:
        argv += ["--extra", json.dumps(extra)]
    return argv


def run_torchrun(argv: list[str], threads: int, cancel: threading.Event | None = None, *, nodes: Nodes | None = None,
                 run_folder: Path | None = None) -> int:  # fmt: skip
    """Start ``argv`` in its own process group and wait; ``cancel`` stops every rank. Returns the exit code.

    Call it from a thread that waits to the end (the kernel stops torchrun when the thread that started it
    ends); ``run_folder``: the run whose lock its processes hold (``core.train.lifeline``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": _pythonpath(), **network_env(nodes or Nodes()),
           lifeline.PARENT_ENV: str(os.getpid())}  # fmt: skip
    env.pop(lifeline.RUN_FOLDER_ENV, None)
    if run_folder is not None:
        env[lifeline.RUN_FOLDER_ENV] = str(run_folder)
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        while proc.poll() is None:
            if cancel is not None and cancel.wait(POLL_S):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
    except BaseException:
        if proc.poll() is None:  # this side is stopping (Ctrl-C, a dying server): take the ranks with it
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        raise
    return proc.returncode


def network_env(nodes: Nodes) -> dict[str, str]:
    """The interface gloo (CPU) and nccl (CUDA) listen on for the other ranks: loopback on one machine (where
    they would otherwise take the address the host name resolves to); on several, the one this machine
    reaches node 0 through, unless the operator named one."""
    if nodes.count == 1:
        return {"GLOO_SOCKET_IFNAME": LOOPBACK_INTERFACE, "NCCL_SOCKET_IFNAME": LOOPBACK_INTERFACE}
    found = interface_towards(nodes.endpoint.rsplit(":", 1)[0].strip("[]"))
    return {name: os.environ.get(name) or found for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if found}


def interface_towards(host: str) -> str | None:
    """The name of the network interface this machine reaches ``host`` through (IPv4); None when unknown."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))  # a UDP "connect" only picks the route: nothing is sent
            local = probe.getsockname()[0]
    except OSError:
        return None
    return next((name for _, name in socket.if_nameindex() if _ipv4_of(name) == local), None)


def _ipv4_of(interface: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            reply = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", interface.encode()[:15]))
        except OSError:  # no IPv4 address on it
            return None
    return socket.inet_ntoa(reply[20:24])


@contextlib.contextmanager
def sigterm_cancels() -> Iterator[None]:
    """While a run is waited for in this process's main thread, SIGTERM is a Ctrl-C: the run is cancelled
    cleanly (its ranks stopped, its status ``cancelled``) instead of this process vanishing mid-run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stored_status(store: RunStore, run_id: int) -> str | None:
    """What rank 0 said the run ended with (None: it never got there)."""
    value = store.params(run_id).get(STATUS_PARAM)
    return str(value) if value else None


def _pythonpath() -> str:
    root = str(Path(__file__).resolve().parents[2])  # the workers import core from the same checkout
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
