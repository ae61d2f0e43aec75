"""core.train.tensors / tensor_cache (issue 28): decoding with bounded memory, straight into the cache file, resumable.

Real image files (tests/imagefactory.py), real decoding, real processes: the memory is the peak resident set
(``VmHWM``) of a fresh Python, a killed decode is a process that ends itself with ``os._exit`` (no clean-up runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from core.train.tensors import decode_square, load_tensors
from tests import imagefactory as f

ROOT = Path(__file__).resolve().parents[2]
# What a process grows by besides the chunk buffer, decoding 3,000 images: 10.5-12.8 MB measured (with 2 MB chunks,
# 12.6-14.8 MB in all, varying with where malloc puts the buffer); 9 MB of it whatever the number of images
# (Pillow's PNG decoder, the threads, the DataFrame of dropped files), plus ~1 KB an image (its stat, index row,
# JSON). The code before issue 28 grew by 219 MB here.
ALLOWANCE = 24 * 1024**2

# The child: the imports load_tensors needs, then (unless told "imports") load_tensors over every PNG of ROOT;
# prints VmHWM. With KILL_AT it ends itself, without any clean-up, once that many images are decoded.
CHILD = """
import os, sys
from pathlib import Path
import pytest
import torch
torch.set_num_threads(1)
from core.train.tensors import load_tensors
root, cache, size, chunk, what = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
paths = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
kill_at = int(os.environ.get("KILL_AT", 0))
def progress(done, total):
    if kill_at and done >= kill_at:
        os._exit(3)
if what == "load":
    ts = load_tensors(root, paths, size, cache_dir=cache, workers=2, chunk_bytes=chunk, progress=progress)
    assert len(ts.paths) == len(paths)
status = Path("/proc/self/status").read_text()
print(next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")))
"""


def run_child(
    root: Path, cache: Path, size: int, chunk: int, what: str, kill_at: int = 0
) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": str(kill_at)}
    return subprocess.run([sys.executable, "-c", CHILD, str(root), str(cache), str(size), str(chunk), what],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)  # fmt: skip


def write_images(root: Path, n: int, start: int = 0, step: int = 1) -> list[str]:
    """``n`` textured 32 px PNGs, ``root/<class>/<i>.png`` for i = start, start + step, ...; their paths."""
    paths = []
    for i in range(start, start + n * step, step):
        path = f"c{i % 3}/{i:05d}.png"
        f.write_rgb(root / path, size=(32, 32), color=(40 * (i % 6), 90 + i % 50, 200 - 30 * (i % 5)), seed=i)
        paths.append(path)
    return paths


def pngs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))


def index_rows(cache: Path) -> list[dict]:
    (index,) = (cache / "tensors").glob("*.json")
    return json.loads(index.read_text())["rows"]


def mapped_file(tensor: torch.Tensor) -> str | None:
    """The file ``tensor``'s memory is mapped from (None: anonymous memory, i.e. a copy in RAM)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 and fields[5].startswith("/") else None
    return None


def assert_decoded(root: Path, paths: list[str], images: torch.Tensor, size: int) -> None:
    """``images[i]`` is exactly what decoding ``paths[i]`` on its own gives."""
    assert len(images) == len(paths)
    for i, path in enumerate(paths):
        assert torch.equal(images[i], decode_square(root / path, size)), path


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_peak_memory_stays_near_one_chunk_not_the_decoded_size(tmp_path: Path) -> None:
    """3,000 images at 96 px are 83 MB decoded; with 2 MB chunks the process grows by 13-15 MB (the code before
    issue 28 grew by 219 MB: every image in a dict, then gathered into one array)."""
    root, size, chunk = tmp_path / "imgs", 96, 2 * 1024**2
    paths = write_images(root, 3000)
    imports = run_child(root, tmp_path / "unused", size, chunk, "imports")
    load = run_child(root, tmp_path / "cache", size, chunk, "load")
    assert imports.returncode == 0 and load.returncode == 0, imports.stderr + load.stderr
    growth = int(load.stdout) - int(imports.stdout)
    decoded = len(paths) * 3 * size * size
    assert growth < chunk + ALLOWANCE < decoded / 3, (growth, decoded)
    ts = load_tensors(root, paths, size, cache_dir=tmp_path / "cache")
    assert ts.n_decoded == 0 and ts.paths == paths  # the child's cache is complete
    assert_decoded(root, paths[::250], ts.images[::250], size)


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_a_decode_killed_halfway_resumes_with_the_rest(tmp_path: Path) -> None:
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 16
    paths = write_images(root, 600)
    killed = run_child(root, cache, size, 40 * 3 * size * size, "load", kill_at=300)  # chunks of 40 images
    assert killed.returncode == 3, killed.stderr
    written = [r["path"] for r in index_rows(cache) if r["slot"] >= 0]
    assert 40 <= len(written) <= 300  # at least the first chunk, nothing decoded after the kill
    resumed = load_tensors(root, paths, size, cache_dir=cache)
    assert resumed.n_decoded == len(paths) - len(written)  # only the rest
    assert resumed.paths == paths and resumed.dropped.empty
    clean = load_tensors(root, paths, size)  # no cache: a clean decode
    assert torch.equal(resumed.images, clean.images)
    assert len(list((cache / "tensors").glob("*.npy"))) == 1  # the killed decode's file is gone


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_a_killed_decode_of_new_images_keeps_the_cached_ones(tmp_path: Path) -> None:
    """New images among cached ones are decoded into a new file in the asked order; killed, the index still names
    the cached images not yet copied (in the earlier file), so they are not decoded again."""
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 16
    old = write_images(root, 300, start=0, step=2)
    assert load_tensors(root, old, size, cache_dir=cache).n_decoded == 300
    new = write_images(root, 300, start=1, step=2)  # interleaved with the old ones in the sorted order
    killed = run_child(root, cache, size, 40 * 3 * size * size, "load", kill_at=150)
    assert killed.returncode == 3, killed.stderr
    named = {r["path"] for r in index_rows(cache) if r["slot"] >= 0}
    assert set(old) <= named and 0 < len(named & set(new)) <= 150
    resumed = load_tensors(root, pngs(root), size, cache_dir=cache)
    assert resumed.n_decoded == len(new) - len(named & set(new))
    assert_decoded(root, pngs(root), resumed.images, size)


def test_failed_files_leave_no_hole_and_a_second_call_maps_the_file_itself(tmp_path: Path) -> None:
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 8
    write_images(root, 40)
    for i in (0, 7, 8, 9, 23, 39):  # the first, a run of three across chunks of 5, the last
        f.write_truncated_png(root / f"c{i % 3}/{i:05d}.png", size=(32, 32))
    f.write_text_as_image(root / "c0/00012.png")
    paths, chunk = pngs(root), 5 * 3 * size * size
    ts = load_tensors(root, paths, size, cache_dir=cache, chunk_bytes=chunk)
    broken = {f"c{i % 3}/{i:05d}.png" for i in (0, 7, 8, 9, 12, 23, 39)}
    assert set(ts.dropped["path"]) == broken and ts.n_decoded == 40
    assert ts.paths == [p for p in paths if p not in broken]
    assert_decoded(root, ts.paths, ts.images, size)
    again = load_tensors(root, paths, size, cache_dir=cache, chunk_bytes=chunk)
    assert again.n_decoded == 0 and again.paths == ts.paths and len(again.dropped) == len(broken)
    (npy,) = (cache / "tensors").glob("*.npy")
    assert mapped_file(again.images) == str(npy)  # the file itself, no copy
    assert torch.equal(again.images, ts.images)


def test_another_order_or_a_subset_needs_no_decoding(tmp_path: Path) -> None:
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 8
    paths = write_images(root, 60)
    full = load_tensors(root, paths, size, cache_dir=cache, chunk_bytes=7 * 3 * size * size)
    (npy,) = (cache / "tensors").glob("*.npy")
    for asked in (paths[::-1], paths[10:50:3], paths[:20]):
        part = load_tensors(root, asked, size, cache_dir=cache, chunk_bytes=7 * 3 * size * size)
        assert part.n_decoded == 0 and part.paths == asked
        assert torch.equal(part.images, full.images[[paths.index(p) for p in asked]])
    assert mapped_file(part.images) == str(npy)  # the first rows of the file: mapped as they are
    assert list((cache / "tensors").glob("*.npy")) == [npy]  # no new file for another order
    assert load_tensors(root, paths, size, cache_dir=cache).n_decoded == 0


def test_in_place_a_subset_in_another_order_is_the_cache_file_itself_not_a_copy(tmp_path: Path) -> None:
    """A split's images (a part of the file, in another order): with ``in_place`` the file itself and where each
    image is, so the test split of a large dataset is not copied into RAM."""
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 8
    write_images(root, 60)
    paths = pngs(root)
    full = load_tensors(root, paths, size, cache_dir=cache)
    (npy,) = (cache / "tensors").glob("*.npy")
    asked = paths[50:10:-3]
    part = load_tensors(root, asked, size, cache_dir=cache, in_place=True)
    assert part.n_decoded == 0 and part.paths == asked and mapped_file(part.images) == str(npy)
    assert len(part.images) == len(paths) and list(part.positions) == [paths.index(p) for p in asked]
    assert torch.equal(part.images[part.positions], full.images[[paths.index(p) for p in asked]])
    labels = part.spread(torch.arange(len(asked)))
    assert [int(labels[r]) for r in part.positions] == list(range(len(asked))) and int(
        (labels == -1).sum()
    ) == 60 - len(asked)
    copied = load_tensors(root, asked, size, cache_dir=cache)  # without it: a copy whose rows are the paths
    assert copied.rows is None and mapped_file(copied.images) is None
    assert list(copied.positions) == list(range(len(asked))) and torch.equal(copied.images, part.images[part.positions])


def test_an_index_written_before_issue_28_is_still_read(tmp_path: Path) -> None:
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 8
    paths = write_images(root, 12)
    load_tensors(root, paths, size, cache_dir=cache)
    (index,) = (cache / "tensors").glob("*.json")
    doc = json.loads(index.read_text())
    rows = [{k: v for k, v in r.items() if k != "file"} for r in doc["rows"]]
    index.write_text(json.dumps({"npy": doc["files"][0], "rows": rows}))  # one file, rows without "file"
    again = load_tensors(root, paths, size, cache_dir=cache)
    assert again.n_decoded == 0
    assert_decoded(root, paths, again.images, size)


def test_two_decodes_of_one_dataset_at_once_decode_it_once(tmp_path: Path) -> None:
    """A search's trials start together on one dataset: one decodes, the other waits and maps its file (before the
    lock, the first to end deleted the other's file as no longer named)."""
    root, cache, size = tmp_path / "imgs", tmp_path / "cache", 16
    paths = write_images(root, 200)
    with ThreadPoolExecutor(2) as pool:
        sets = list(pool.map(lambda _: load_tensors(root, paths, size, cache_dir=cache, chunk_bytes=20_000), "ab"))
    assert sorted(ts.n_decoded for ts in sets) == [0, 200]
    (npy,) = (cache / "tensors").glob("*.npy")
    for ts in sets:
        assert ts.paths == paths and mapped_file(ts.images) == str(npy)
        assert_decoded(root, paths[::20], ts.images[::20], size)


def test_a_set_where_every_file_fails_gives_no_rows(tmp_path: Path) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    f.write_truncated_png(root / "a.png", size=(32, 32))
    f.write_text_as_image(root / "b.png")
    for decoded in (2, 0):  # remembered: not tried again
        ts = load_tensors(root, ["a.png", "b.png"], 8, cache_dir=cache)
        assert ts.images.shape == (0, 3, 8, 8) and ts.n_decoded == decoded and len(ts.dropped) == 2


def test_a_dataset_that_lost_images_trains_from_its_cache_file_in_place(tmp_path: Path) -> None:
    """Images deleted since the cache was made: the rest are the cache file's rows in place (before, every image
    was copied into RAM: 15 GB for 200,000 images at 160 px), and the run's labels and splits follow them."""
    from core.common.workspace import Workspace
    from core.train.config import TrainConfig
    from core.train.prepare import prepare

    ws = Workspace.open(tmp_path / "ws")
    root = f.write_colour_classes(ws.datasets / "colours", 10, size=(12, 12))
    config = TrainConfig(dataset=str(root), arch="lenet", image_size=16, epochs=1, batch_size=8)
    first = prepare(config, ws)
    for gone in ("red/3.png", "blue/0.png", "green/9.png"):
        (root / gone).unlink()
    again = prepare(config, ws)
    assert again.tensors.n_decoded == 0 and again.tensors.rows is not None
    assert mapped_file(again.tensors.images) == mapped_file(first.tensors.images)  # the same file, no copy
    for split, rows in again.indices.items():
        paths = again.tensors.path_at(rows)
        assert sorted(paths) == sorted(again.splits.loc[again.splits["split"] == split, "path"])
        assert [again.classes[int(k)] for k in again.labels[torch.as_tensor(rows)]] == [p.split("/")[0] for p in paths]
        assert torch.equal(again.tensors.images[torch.as_tensor(rows)],
                           first.tensors.images[[first.tensors.paths.index(p) for p in paths]])  # fmt: skip
