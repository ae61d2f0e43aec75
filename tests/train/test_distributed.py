"""Training on torch.distributed (gloo on this CPU): real torchrun launches of ``python -m core train``.

The shard arithmetic is checked directly; the launches are slow (each starts torch in several processes) and
run in CI: two ranks reach the accuracy of one, a SIGKILLed rank leaves a run that resumes to its end, and two
launchers on 127.0.0.1 (``--nnodes 2``) train one run together.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.store.runs import RunStore
from core.train.batches import Batches
from tests.app_server import free_port
from tests.support import ROOT, TrainedRun, wait_until


def _batches(n: int, rank: int, world: int, shuffle: bool) -> Batches:
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return Batches(images, labels, np.arange(n), batch_size=4, mean=[0.5] * 3, std=[0.25] * 3, shuffle=shuffle,
                   seed=7, shard=(rank, world))  # fmt: skip


@pytest.mark.parametrize("n", [20, 23])
def test_training_shards_cover_the_epoch_with_equal_batch_counts(n: int) -> None:
    shards = [_batches(n, rank, 2, shuffle=True) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1])  # or DistributedDataParallel waits forever on the rank with fewer
    seen = [int(i) for b in shards for i in b._order(epoch=3)]
    assert set(seen) == set(range(n)) and len(seen) == n + n % 2  # every image; at most one repeated to even out
    again = [int(i) for i in shards[0]._order(epoch=3)]
    assert again == [int(i) for i in shards[0]._order(epoch=3)] and again != [int(i) for i in shards[0]._order(4)]


def test_evaluation_shards_split_the_images_exactly_once() -> None:
    shards = [_batches(23, rank, 3, shuffle=False) for rank in range(3)]
    orders = [[int(i) for i in b._order(0)] for b in shards]
    assert sorted(i for order in orders for i in order) == list(range(23))
    assert [b.n_samples for b in shards] == [8, 8, 7]


def _train(ws: Path, *extra: str, env: dict | None = None, **kw) -> subprocess.Popen:
    argv = [sys.executable, "-m", "core", "train", *extra, "--workspace", str(ws), "--json"]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **kw)  # fmt: skip


def _result(proc: subprocess.Popen, timeout: float = 900) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


@pytest.mark.slow
def test_two_ranks_train_the_sample_to_the_accuracy_of_one(tmp_path: Path, trained_digits: TrainedRun) -> None:
    one = trained_digits.result()  # the same default recipe in one process (the session's run)
    two = _result(_train(tmp_path / "ws", "sample:digits", "--ranks", "2"))
    assert one["status"] == two["status"] == "completed"
    assert one["test"]["accuracy"] >= 0.97 and two["test"]["accuracy"] >= 0.97
    assert abs(one["test"]["accuracy"] - two["test"]["accuracy"]) <= 0.02  # 270 test images: 0.4 points each
    store = RunStore(tmp_path / "ws" / "runs.sqlite")
    run = store.get_run(two["run_id"])
    assert run.processes == 2 and run.threads == max(1, (os.cpu_count() or 2) // 2)
    assert store.params(two["run_id"])["ddp_status"] == "completed"
    runs = ((RunStore(trained_digits.ws.runs_db), one["run_id"]), (store, two["run_id"]))
    sizes = [{k: where.params(run_id)[k] for k in ("n_train", "n_val", "n_test")} for where, run_id in runs]
    assert sizes[0] == sizes[1] == {"n_train": 1257, "n_val": 270, "n_test": 270}  # the splits, not rank 0's shard
    # A run trained on torch.distributed exports like any other (issue 26): its weights were saved unwrapped.
    from core.common.workspace import Workspace
    from core.export.folder import export_run

    exported = export_run(Workspace.open(tmp_path / "ws"), store, two["run_id"], "onnx", tmp_path / "export")
    assert exported.parity["top1_equal"] == exported.parity["images"] == 20


def _rank_pids(ws: Path) -> dict[int, int]:
    """RANK -> pid of the running ddp workers of this workspace (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if b"core.train.ddp_worker" in cmdline and str(ws).encode() in cmdline and b"RANK" in environ:
            found[int(environ[b"RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
def test_a_killed_rank_leaves_a_run_that_resumes_to_its_end(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    proc = _train(ws, "sample:digits", "--ranks", "2", "--epochs", "5")
    last = ws / "checkpoints" / "run-1" / "last.pt"
    wait_until(last.is_file, timeout=600, what="the first checkpoint", process=proc)
    pids = wait_until(lambda: _rank_pids(ws) if len(_rank_pids(ws)) == 2 else None, timeout=60, what="both ranks")
    os.kill(pids[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2 and "a training process stopped" in err  # one line, no traceback
    store = RunStore(ws / "runs.sqlite")
    assert store.get_run(1).status == "failed"
    resumed = _result(_train(ws, "--resume", "1"))
    assert resumed["run_id"] == 1 and resumed["status"] == "completed"
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4, 5]
    assert store.params(1)["resumed"] is True


@pytest.mark.slow
def test_two_launchers_on_one_host_train_one_run_together(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    endpoint = f"127.0.0.1:{free_port()}"
    common = ["sample:digits", "--ranks", "1", "--nnodes", "2", "--rdzv-endpoint", endpoint, "--epochs", "2"]
    node0 = _train(ws, *common, "--node-rank", "0")
    node1 = _train(ws, *common, "--node-rank", "1")
    result = _result(node0)
    out, err = node1.communicate(timeout=900)
    assert node1.returncode == 0, err[-3000:]
    assert result["status"] == "completed" and len(result["epochs"]) == 2
    # Once in CI its torchrun ended with 1 while node 0's run completed: what node 1 printed says why.
    assert json.loads(out) == {"node_rank": 1, "nnodes": 2, "ranks": 1, "exit_code": 0}, err[-6000:]
    run = RunStore(ws / "runs.sqlite").get_run(result["run_id"])
    assert run.processes == 2  # one rank on each "machine"
