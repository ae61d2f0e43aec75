"""A full disk while writing a checkpoint, a scan's cache, a cleaned dataset and the run store: nothing stored is
lost, every command says "disk full: N MB free in DIR", and the read-only commands keep working.

The disk is a real 128 MiB tmpfs in a private mount namespace (``unshare``; no root needed where unprivileged user
namespaces are allowed). Where they are not, a process file-size limit (``RLIMIT_FSIZE``) makes the checkpoint
write fail instead, and the message names that limit.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.common.diskspace import DiskFullError, disk_full_message, write_failure
from tests.support import ROOT


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {where}"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> dict:
    mount = tmp_path_factory.mktemp("small-disk")
    if not _can_mount_tmpfs(mount):
        pytest.skip("no private tmpfs here (unshare refused); test_a_file_size_limit_stops_a_checkpoint covers it")
    script = 'mount -t tmpfs -o size=128m tmpfs "$1" && exec "$2" -m tests.store.full_disk "$1"'
    done = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mount), sys.executable],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow  # its full disk takes ~9 s to set up: CI runs it; the default suite keeps under 6 min
def test_a_checkpoint_that_does_not_fit_fails_the_run_saying_disk_full(full_disk: dict) -> None:
    train = full_disk["train"]
    assert train["code"] == 2
    assert "run 1 failed: disk full: " in train["err"] and " MB free in " in train["err"]
    assert re.search(
        r"checkpoint last\.pt \(over \d+ MB\) was not written; the previous one there is unchanged", train["err"]
    )
    assert "Traceback" not in train["err"]
    assert "best.pt" in full_disk["files_after_train"]  # written before the disk filled: whole, and it loads
    assert not [n for n in full_disk["files_after_train"] if n.endswith(".partial")]  # the cut write left nothing
    assert full_disk["best_loads"]


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_read_only_commands_still_work_on_a_disk_with_no_byte_free(full_disk: dict) -> None:
    assert full_disk["filled_bytes"] > 0
    runs = full_disk["runs"]
    assert runs["code"] == 0, runs["err"]
    (run,) = json.loads(runs["out"])
    assert run["status"] == "failed" and run["error"].startswith("disk full: ")
    scan = full_disk["scan"]
    assert scan["code"] == 0, scan["err"]
    summary = json.loads(scan["out"])
    assert summary["n_images"] == 24
    assert any(w.startswith("disk full: 0.0 MB free in ") and "not cached" in w for w in summary["warnings"])


def test_a_cleaned_dataset_that_cannot_be_written_is_an_error_not_a_half_folder(full_disk: dict) -> None:
    dedup = full_disk["dedup_apply"]
    assert dedup["code"] == 2 and dedup["out"] == ""
    assert (
        dedup["err"].startswith("error: disk full: 0.0 MB free in ")
        and "cleaned dataset was not written" in dedup["err"]
    )


def test_a_file_size_limit_stops_a_checkpoint_with_a_message_naming_it(tmp_path: Path) -> None:
    """Without a private tmpfs: a real failing write through RLIMIT_FSIZE (EFBIG), in a child process."""
    code = (
        "import torch\n"
        "from pathlib import Path\n"
        "from core.train.checkpoints import save_checkpoint\n"
        "from core.common.errors import CoreError\n"
        "state = {'model': {'w': torch.zeros(4_000_000)}, 'arch': 'x', 'num_classes': 2, 'classes': ['a', 'b'],\n"
        "         'image_size': 8, 'mean': [0.0], 'std': [1.0]}\n"
        f"target = Path({str(tmp_path / 'last.pt')!r})\n"
        "target.write_bytes(b'previous')\n"
        "try:\n"
        "    save_checkpoint(target, state)\n"
        "except CoreError as e:\n"
        "    print(type(e).__name__, e)\n"
        "print(target.read_bytes() == b'previous', sorted(p.name for p in target.parent.iterdir()))\n"
    )

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, preexec_fn=limit)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first.startswith("CheckpointDiskFullError file too large") and "ulimit -f" in first
    assert second == "True ['last.pt']"  # the previous file unchanged, no partial left


def test_the_message_names_the_free_space_and_the_folder(tmp_path: Path) -> None:
    message = disk_full_message(tmp_path, "nothing was written")
    assert message.startswith("disk full: ") and f" MB free in {tmp_path}; nothing was written" in message
    full = write_failure(OSError(28, "No space left on device"), tmp_path, "x")
    assert isinstance(full, DiskFullError) and str(full).startswith("disk full: ")
    assert write_failure(OSError(13, "Permission denied"), tmp_path, "x") is None  # not about space
