"""``python -m core.train.torchrun ARGS``: torchrun (``python -m torch.distributed.run ARGS``) whose stores listen
only on the address they are given, and which dies with the program that started it.

What listens, in a run of ours (read in torch 2.14.1's ``torch/distributed/run.py`` and ``elastic/``, and seen
with ``ss -ltnp``):

- torchrun's rendezvous store: on one machine the c10d backend at ``--rdzv-endpoint 127.0.0.1:0``
  (``c10d_rendezvous_backend._create_tcp_store``); on several, the static backend's store at node 0's
  ``--rdzv-endpoint`` (``static_tcp_rendezvous``).
- on one machine, a second store torchrun shares with its ranks (``DynamicRendezvousHandler.
  _create_tcp_store_server``, at ``--local-addr`` and a free port); the ranks connect to it as clients
  (``TORCHELASTIC_USE_AGENT_STORE``), so they open no store of their own.
- between ranks, gloo's (CPU) or nccl's (CUDA) own listener: on the interface ``GLOO_SOCKET_IFNAME`` /
  ``NCCL_SOCKET_IFNAME`` name, else on the address the host name resolves to (``core.train.launch`` names it).

torch's ``TCPStore`` takes a host name, but its server listens on every interface (``::`` or ``0.0.0.0``): the
host only tells clients where to connect, and torch has no option or environment variable for the address the
server binds. The stores are unauthenticated: whoever reaches one can join or disturb the run. What ``TCPStore``
does take is a socket already listening (``master_listen_fd``, Linux). So this entry point runs torchrun's own
``main``, unchanged (rendezvous, restarts, signal handling), with ``torch.distributed.TCPStore`` replaced by
``BoundTCPStore``, which binds its server's socket to the host it was given and hands it over: 127.0.0.1 on one
machine, the ``--rdzv-endpoint`` host on several (which must then be an address of node 0 itself; one that is
not is refused instead of listening everywhere). Before all that, ``core.train.lifeline``: the run's lock, and
SIGTERM when the launcher dies (torchrun then stops its ranks).
"""

from __future__ import annotations

import signal
import socket
from datetime import timedelta

import torch.distributed as dist

from core.train import lifeline


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host`` (its first address) and ``port`` (0: a free one), not on every interface.

    Raises:
        RuntimeError: ``host`` does not resolve, is not an address of this machine, or the port is taken (the
            error torchrun expects from a store that cannot start).
    """
    host = host.strip("[]")  # an IPv6 endpoint is written [::1]:PORT
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TCPStore does: a port just freed is usable
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class BoundTCPStore(dist.TCPStore):
    """``TCPStore`` whose server listens on ``host_name`` only (a client, ``is_master=False``, is unchanged)."""

    def __init__(self, host_name: str, port: int, world_size: int | None = None, is_master: bool = False,
                 timeout: timedelta = timedelta(seconds=300), wait_for_workers: bool = True,
                 multi_tenant: bool = False, master_listen_fd: int | None = None, use_libuv: bool = True) -> None:  # fmt: skip
        if is_master and master_listen_fd is None:
            sock = listening_socket(host_name, port)
            # The store owns the descriptor from here (it closes it): detach, so Python never closes it too.
            port, master_listen_fd = sock.getsockname()[1], sock.detach()
        super().__init__(host_name=host_name, port=port, world_size=world_size, is_master=is_master, timeout=timeout,
                         wait_for_workers=wait_for_workers, multi_tenant=multi_tenant,
                         master_listen_fd=master_listen_fd, use_libuv=use_libuv)  # fmt: skip


def bind_stores() -> None:
    """Make every ``TCPStore`` torch creates from now on in this process a ``BoundTCPStore``. The modules that
    imported the name keep their own reference to it: it is replaced there too."""
    from torch.distributed import rendezvous
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend, static_tcp_rendezvous

    dist.TCPStore = BoundTCPStore  # dynamic_rendezvous and elastic.utils look it up here at each call
    for module in (rendezvous, c10d_rendezvous_backend, static_tcp_rendezvous):
        module.TCPStore = BoundTCPStore


def main() -> None:
    lifeline.hold_from_environment()
    lifeline.die_with_parent(signal.SIGTERM)  # torchrun stops its ranks on SIGTERM, then exits
    lifeline.set_parent_of_children()
    bind_stores()
    from torch.distributed.run import main as torchrun

    torchrun()  # its arguments: sys.argv[1:], as ``python -m torch.distributed.run`` reads them


if __name__ == "__main__":
    main()
