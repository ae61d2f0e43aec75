"""The ``ddp`` sweep's points: ordinary training runs on 1..N ``torch.distributed`` ranks (``core.train.launch``),
each in the sweep's group, with its settings and the time rank 0 measured (data from the cache, training,
test) stored with it."""

from __future__ import annotations

from core.common.cpu import usable_cores
from core.common.workspace import Workspace
from core.scaling.config import SweepConfig
from core.store.runs import RunStore
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from core.train.runner import submit_training


class DdpTimer:
    """Runs one distributed training per call and waits for it; the run is the point."""

    def __init__(self, ws: Workspace, config: SweepConfig) -> None:
        self.ws = ws

    def __call__(self, config: SweepConfig, workers: int, group: str, parent: int, store: RunStore) -> int:
        cores = usable_cores()
        threads = config.threads_for(workers, cores)
        train = TrainConfig(dataset=config.dataset, arch=config.arch, epochs=config.epochs, ranks=workers,
                            threads=threads).validate()  # fmt: skip
        extra = {"mode": "ddp", "task": "training", "workers": workers, "threads_per_worker": threads, "cores": cores}
        registry = JobRegistry(store, cores=1)  # one point at a time: points must not overlap
        run_id = submit_training(registry, self.ws, train, extra=extra, group=group, parent_id=parent)
        registry.wait(run_id)
        return run_id
