"""torch.distributed for training: who this process is (rank, world), and the few collectives ``fit`` needs.

Launched by ``torchrun`` (``core.train.launch``), every rank runs the same ``fit`` on its shard of each epoch
(``Batches(shard=...)``), the model wrapped in ``DistributedDataParallel`` (gradients averaged every step);
rank 0 alone writes checkpoints and the run store, and reads a checkpoint to resume and sends it to the
others (``broadcast_object``), so ranks on other machines need no shared disk for it. Validation runs on
each rank's shard and the sums are added (``all_reduce_sum``); the test runs on rank 0 alone.

Backends: gloo on the CPU, nccl on CUDA. BatchNorm: on the CPU each rank normalises with its own batch
statistics (``SyncBatchNorm`` is CUDA-only in torch); on CUDA the layers become ``SyncBatchNorm``.
``batch_size`` stays the global batch: each rank takes ``batch_size / world`` images per step, so one rank
and two ranks take the same optimisation steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    local_rank: int
    local_world: int
    backend: str

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints and the run store."""
        return self.rank == 0


def from_environment(device: str = "auto") -> DistContext | None:
    """Join the process group ``torchrun`` set up (``RANK``, ``WORLD_SIZE``... in the environment); None when
    this process was not started by it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank,
                       int(os.environ.get("LOCAL_WORLD_SIZE", 1)), backend)  # fmt: skip


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``model`` for distributed training: SyncBatchNorm on CUDA, then DistributedDataParallel."""
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index or 0])
    return nn.parallel.DistributedDataParallel(model)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over every rank (in place, and returned)."""
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (pickled through the process group: rank 0's own data only)."""
    box = [obj if ctx.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
