"""core.train.cache_rows (issue 28): batches and statistics read the decoded cache with pread, so none of it stays
in the process's resident memory, and they read the same pixels as through the mapping.

Real decoding into a real cache file, then a real epoch of ``Batches`` in a fresh Python; the memory is the process's
share of the cache file's pages resident in it (``/proc/self/smaps``), read after every batch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.train import cache_rows
from core.train.batches import Batches
from core.train.tensors import channel_stats, load_tensors
from tests.train.test_tensor_cache import ROOT, mapped_file, pngs, write_images

# The child: map the cache of every PNG under ROOT, read the channel statistics and one shuffled epoch of Batches
# (through the mapping when WAY is "mapped": as before issue 28), and print the most of the cache file ever resident
# in it (its mapping's ``Rss`` in ``/proc/self/smaps``: the process's total also grows as torch pages its code in).
CHILD = """
import sys
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
from core.train import cache_rows
from core.train.batches import Batches
from core.train.tensors import channel_stats, load_tensors
root, cache, size, way = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
paths = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
ts = load_tensors(root, paths, size, cache_dir=cache)
assert ts.n_decoded == 0 and cache_rows._TRACKED  # mapped, not copied
if way == "mapped":
    cache_rows._TRACKED.clear()
def cache_resident():
    total, mine = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if not line[:1].isupper():  # a mapping's first line: address range, ..., its file
            mine = line.rstrip().endswith(".npy") and str(cache) in line
        elif mine and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total
peak = 0
for part in np.array_split(np.arange(len(paths)), 10):
    channel_stats(ts.images, part)
    peak = max(peak, cache_resident())
batches = Batches(ts.images, torch.zeros(len(paths), dtype=torch.long), np.arange(len(paths)), batch_size=32,
                  mean=[0.5] * 3, std=[0.25] * 3, shuffle=True, augment="crop")
for x, _ in batches.epoch(0):
    peak = max(peak, cache_resident())
print(peak)
"""


def _most_resident(root: Path, cache: Path, size: int, way: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(cache), str(size), way],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.slow  # two fresh Pythons reading 41 MB of cache: 7 s; the default suite is at its 6 minutes
def test_an_epoch_over_a_cache_file_keeps_none_of_it_resident(tmp_path: Path) -> None:
    """1,500 images at 96 px: a 41 MB cache. Read through its mapping, the whole file stays in the process after one
    epoch; read with pread, none of it."""
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 96
    write_images(root, 1500)
    paths = pngs(root)  # the order the child asks for: its file is mapped as it is
    load_tensors(root, paths, size, cache_dir=cache)  # the cache file (written with pwrite: nothing resident)
    cached = len(paths) * 3 * size * size
    mapped = _most_resident(root, cache, size, "mapped")
    assert mapped > 0.9 * cached, (mapped, cached)  # the mechanism measured is real: every page read stays
    assert _most_resident(root, cache, size, "pread") == 0


def test_pread_gives_the_pixels_of_the_mapping_and_a_tensor_in_ram_is_indexed(tmp_path: Path) -> None:
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 16
    write_images(root, 300)
    paths = pngs(root)
    load_tensors(root, paths, size, cache_dir=cache)
    mapped = load_tensors(root, paths, size, cache_dir=cache)
    in_ram = load_tensors(root, paths, size)  # no cache folder: anonymous memory
    assert mapped_file(mapped.images) is not None and mapped_file(in_ram.images) is None
    assert mapped.images.data_ptr() in cache_rows._TRACKED and in_ram.images.data_ptr() not in cache_rows._TRACKED
    rows = torch.tensor([299, 0, 17, 17, 150])
    for ts in (mapped, in_ram):
        assert torch.equal(cache_rows.gather(ts.images, rows), in_ram.images.index_select(0, rows))
        stats = channel_stats(ts.images, np.arange(0, 300, 2))
        labels = torch.arange(len(paths)) % 3
        batches = Batches(ts.images, labels, np.arange(len(paths)), batch_size=7, mean=stats[0], std=stats[1])
        assert torch.equal(torch.cat([x for x, _ in batches.epoch(0)]),
                           torch.cat([x for x, _ in Batches(in_ram.images, labels, np.arange(len(paths)),
                                      batch_size=7, mean=stats[0], std=stats[1]).epoch(0)]))  # fmt: skip
    np.testing.assert_allclose(channel_stats(mapped.images), channel_stats(in_ram.images), rtol=1e-6)
    with pytest.raises(IndexError):
        cache_rows.gather(mapped.images, torch.tensor([300]))
    view = mapped.images[10:]  # a view starts elsewhere: indexed through the mapping, still right
    assert torch.equal(cache_rows.gather(view, torch.tensor([0])), in_ram.images[10:11])
