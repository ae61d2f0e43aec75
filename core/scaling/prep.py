"""Data preparation with 1..N workers, as the car report did it: split a dataset and copy it into
``train/val/test/<class>/`` folders, and fingerprint every image (perceptual hash + thumbnail).

Each task runs its files in chunks on a pool of processes or of threads. Processes come from the ``spawn``
start method: a forked copy of a server process (the dashboard runs threads) can deadlock, and spawn is
what every platform has. Their start-up (a fresh interpreter importing what it needs) is part of the time,
as it is for anyone who uses them; threads share one interpreter and pay no start-up.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from core.common.errors import CoreError
from core.common.spawn import children_skip_main
from core.datasets.scan import ScanResult
from core.train.config import TEST_FRACTION, VAL_FRACTION

TASKS = ("copy", "fingerprint")
MODES = ("processes", "threads")
CHUNK = 64  # files per task sent to a worker: large enough that dispatch costs nothing next to the work


def run_task(task: str, scan: ScanResult, dest: Path, *, workers: int, mode: str, val: float = VAL_FRACTION,
             test: float = TEST_FRACTION, seed: int = 0) -> int:  # fmt: skip
    """Do ``task`` on every image of ``scan`` with ``workers`` processes or threads; returns the images done.

    ``copy`` writes ``dest/<split>/<class>/<file>`` (the split made as training makes it); ``fingerprint``
    hashes every image (nothing is written; ``dest`` is unused).
    """
    if task not in TASKS or mode not in MODES or workers < 1:
        raise CoreError(f"unknown preparation {task!r} with {workers} {mode}; tasks: {', '.join(TASKS)}, "
                        f"modes: {', '.join(MODES)}")  # fmt: skip
    jobs = _copy_jobs(scan, dest, val, test, seed) if task == "copy" else _fingerprint_jobs(scan)
    work: Callable[[list], int] = _copy_chunk if task == "copy" else _fingerprint_chunk
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    # The pool's processes start within map (on its first submits): no child re-runs the page that asked for them.
    with children_skip_main(), _pool(mode, workers) as pool:
        return sum(pool.map(work, chunks))


def _pool(mode: str, workers: int) -> Executor:
    if mode == "threads":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep")
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _copy_jobs(scan: ScanResult, dest: Path, val: float, test: float, seed: int) -> list[tuple[str, str]]:
    from core.train.splits import make_splits

    splits = make_splits(scan.manifest, val, test, seed)
    root = scan.ref.root
    return [(str(root / p), str(dest / s / label / Path(p).name))
            for p, label, s in zip(splits["path"], splits["label"], splits["split"], strict=True)]  # fmt: skip


def _fingerprint_jobs(scan: ScanResult) -> list[str]:
    return [str(scan.ref.root / p) for p in scan.manifest["path"]]


def _copy_chunk(pairs: Sequence[tuple[str, str]]) -> int:
    for source, target in pairs:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return len(pairs)


def _fingerprint_chunk(paths: Sequence[str]) -> int:
    from core.dedup.fingerprints import fingerprint_many

    return len(fingerprint_many(list(paths), workers=1))
