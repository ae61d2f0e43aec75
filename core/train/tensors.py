"""Decode once: every image opened once, resized to a square and kept as ``N x 3 x S x S`` uint8 in the workspace
cache (written a chunk at a time, mapped when read: :mod:`core.train.tensor_cache`); and the evaluation transform,
which must cut and scale exactly as the cache does.

Why this shape (measured on the 2-core VM, 1,000 JPEGs of 160 px trained at 32 px): decoding JPEGs through a
DataLoader every epoch fed ResNet-18 at 98 img/s, while indexing a uint8 tensor decoded once fed it at 145
img/s, and loading alone ran 1,690 vs 122,000 img/s. So every image is opened once (through
``core.images.opener.open_image``, on one thread per core) and batches are cut from that tensor in the
training thread (``core.train.batches``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from core.common import filecache
from core.common.cpu import usable_cores
from core.common.errors import CoreError, ImageError
from core.images.opener import open_image
from core.train import cache_rows
from core.train.tensor_cache import DECODE_CHUNK_BYTES, CachedRows, FileSink, RowSink, decode_lock, read_cache

Progress = Callable[[int, int], None]
CACHE_VERSION = 1  # bump when the decoding/resizing below changes: old cache files are then ignored
_PER_WORKER_MIN = 64  # fewer images than this per thread are decoded on the calling thread
# channel_stats sums this many float64 bytes at once (about 3x that at its peak, measured): chunks of 4,096 images
# at 224 px took 4.9 GB each, 1,000 such images 2.3 GB of peak RSS (now 0.4 GB). 4,096 images of up to 36 px
# (every LeNet input) still fit in one chunk, so their sums are unchanged.
STATS_CHUNK_BYTES = 128 * 1024**2


@dataclass
class TensorSet:
    """Decoded images: ``images[positions[i]]`` is ``paths[i]`` as a 3 x S x S uint8 tensor (RGB); ``positions`` is
    ``0, 1, 2, ...`` (``images[i]`` is ``paths[i]``) unless :func:`load_tensors` was asked ``in_place``."""

    images: torch.Tensor
    paths: list[str]
    dropped: pd.DataFrame  # path, reason: files asked for that could not be decoded
    n_decoded: int  # images decoded by this call (0 when everything came from the cache)
    image_size: int
    rows: np.ndarray | None = None  # in_place: the row of ``images`` (the whole cache file) of each path

    @property
    def positions(self) -> np.ndarray:
        """The row of ``images`` of each of ``paths``."""
        return self.rows if self.rows is not None else np.arange(len(self.paths))

    def spread(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` (one per path) laid over the rows of ``images`` (-1 where no path is), for ``Batches``, which
        indexes images and labels alike."""
        if self.rows is None:
            return labels
        out = torch.full((len(self.images),), -1, dtype=labels.dtype)
        out[torch.from_numpy(self.rows)] = labels
        return out

    def path_at(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The path of each of ``rows`` of ``images``."""
        if self.rows is None:
            return [self.paths[int(i)] for i in rows]
        where = dict(zip(self.rows.tolist(), self.paths, strict=True))
        return [where[int(i)] for i in rows]


def decode_square(path: str | os.PathLike[str], image_size: int) -> torch.Tensor:
    """Open one image as a ``3 x S x S`` uint8 tensor: shorter side scaled to S, centre cropped.

    The first half of ``core.train.tensors.eval_transform`` itself, so what the model sees in training is what it
    sees in prediction.

    Raises:
        ImageError: the file cannot be used (the reason says why).
    """
    return resize_to_tensor(open_image(path, draft_size=(image_size, image_size)), image_size)


def load_tensors(
    root: str | os.PathLike[str],
    paths: Sequence[str],
    image_size: int,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    cache_dir: Path | None = None,
    chunk_bytes: int | None = None,
    in_place: bool = False,
) -> TensorSet:
    """Decode ``paths`` (relative to ``root``) once into a uint8 tensor, reusing the on-disk cache.

    The cache (``cache_dir/tensors/<dataset>-<S>.json`` + ``.npy``, :mod:`core.train.tensor_cache`) remembers each
    file's size and mtime: only new or changed files are decoded, so a second run, or a resume, decodes nothing.
    Images are decoded, and cached rows copied, ``chunk_bytes`` at a time straight into a new cache file whose
    index names the rows written after every chunk: memory holds one chunk, and a decode killed halfway is
    resumed by the next call. One decode of a dataset at a size runs at a time; another waits for it, then finds
    its images cached. Files that fail to open are dropped and listed in ``dropped`` with their reason (and
    remembered, so they are not retried until they change). The cache is mapped copy-on-write, and ``Batches``
    reads its rows with ``pread`` (``core.train.cache_rows``): no process holds the decoded images, so a dataset
    larger than RAM still trains.

    Args:
        root: the dataset root that ``paths`` are relative to.
        paths: images to load, in the order wanted.
        image_size: side S of the square images.
        progress: called with (decoded, to decode) while images are decoded.
        workers: decoding threads (default: usable cores; Pillow releases the GIL while decoding).
        cache_dir: the workspace cache folder; None keeps nothing on disk.
        chunk_bytes: decoded pixels held at once (default :data:`core.train.tensor_cache.DECODE_CHUNK_BYTES`).
        in_place: when every asked image is cached in one file, but not as its first rows in this order (a split's
            images, another order), give that file itself with ``rows`` saying where each one is, instead of a
            copy in RAM (issue 28: the test split of 200,000 images at 160 px is a 2.3 GB copy). For callers that
            index through ``positions`` / ``spread``.
    """
    root, paths = Path(root), list(paths)
    load = _Load(root, paths, {p: _stat(root / p) for p in paths}, image_size, chunk_bytes or DECODE_CHUNK_BYTES,
                 workers, progress, in_place)  # fmt: skip
    base = cache_dir / "tensors" / f"{_root_key(root)}-{image_size}" if cache_dir else None
    with read_cache(base, image_size) as cached:
        todo = load.stale(cached)
        found = load.as_cached(cached, todo)
        if found is not None:
            return found
        if base is None or load.copy_in_ram(cached, todo):
            return load.run(cached, None, todo)
    with decode_lock(base), read_cache(base, image_size) as cached:  # read again: the decode before may have done it
        # What needs a new file: images to decode, or cached ones spread over several files (a decode killed while
        # copying): copied there with pread a chunk at a time, never all into RAM.
        todo = load.stale(cached)
        return load.as_cached(cached, todo) or load.run(cached, base, todo)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)  # decoding will report the reason
    return (st.st_size, st.st_mtime_ns)


def _root_key(root: Path) -> str:
    return hashlib.sha1(f"{CACHE_VERSION}\0{os.path.realpath(root)}".encode()).hexdigest()[:16]


@dataclass
class _Load:
    """One call of :func:`load_tensors`: what was asked, and its pass over the asked paths in order, a chunk of
    rows at a time. A chunk's new images are decoded on the threads and its cached ones read, both into one reused
    buffer; the usable rows are moved together (failed files leave no hole) and written at the next free rows of
    the sink; then the index names them. So the sink's rows are the asked paths in order minus the failed ones,
    and memory holds one chunk whatever the dataset's size."""

    root: Path
    paths: list[str]
    stats: dict[str, tuple[int, int]]
    size: int
    chunk_bytes: int
    workers: int | None
    progress: Progress | None
    in_place: bool = False

    def stale(self, cached: CachedRows) -> list[str]:
        """The asked paths to decode: new, changed, or failed to stat."""
        return [p for p in self.paths if filecache.stale(cached.rows.get(p), self.stats[p])]

    def kept(self, cached: CachedRows) -> list[str]:
        """The asked paths ``cached`` holds pixels of (when none is stale)."""
        return [p for p in self.paths if not cached.rows[p]["reason"]]

    def as_cached(self, cached: CachedRows, todo: list[str]) -> TensorSet | None:
        """The asked images as they lie in one cache file, when none is stale (``todo`` empty) and they need no new
        file: its first rows in the asked order (an unchanged dataset), or, ``in_place``, any of its rows in any
        order."""
        if todo:
            return None
        kept = self.kept(cached)
        mapped = cached.mapped_as(kept)
        if mapped is not None:
            return self._tensor_set(cached.rows, mapped, 0)
        whole = cached.holding(kept) if self.in_place else None
        if whole is None:
            return None
        found = self._tensor_set(cached.rows, whole, 0)
        found.rows = np.fromiter((cached.rows[p]["slot"] for p in kept), dtype=np.int64, count=len(kept))
        return found

    def copy_in_ram(self, cached: CachedRows, todo: list[str]) -> bool:
        """Whether the asked images, all cached in one file but in another order, are copied into RAM: for a caller
        that cannot take them in place (none of the studio's own: a copy of a large dataset would not fit)."""
        return not self.in_place and not todo and cached.holding(self.kept(cached)) is not None

    def run(self, cached: CachedRows, base: Path | None, todo: list[str]) -> TensorSet:
        """The asked images from ``cached``, decoding ``todo`` (the stale ones), into a new cache file at ``base`` in
        the asked order (cached rows copied there), or in RAM (``base`` None: no cache folder)."""
        per_chunk = max(1, self.chunk_bytes // (3 * self.size * self.size))
        n, size = len(self.paths), self.size
        sink = FileSink(base, n, size, per_chunk) if base is not None else RowSink(n, size)
        try:
            rows = self._fill(cached, todo, sink, per_chunk)
            images = sink.finish(sum(1 for r in rows if r["slot"] >= 0))
        finally:
            sink.close()
        return self._tensor_set({r["path"]: r for r in rows}, images, len(todo))

    def _fill(self, cached: CachedRows, todo: list[str], sink: RowSink, per_chunk: int) -> list[dict]:
        """Every asked path's index row, its pixels written to ``sink`` ``per_chunk`` rows at a time."""
        threads = min(self.workers or usable_cores(), max(1, len(todo) // _PER_WORKER_MIN))
        decode = _Decode(self.root, set(todo), len(todo), self.size, threads, self.progress)
        rows: list[dict] = []
        slot = 0  # the next free row of the sink
        with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
            for start in range(0, len(self.paths), per_chunk):
                part = self.paths[start : start + per_chunk]
                buf = sink.buffer(slot, len(part))
                reasons = decode.chunk(part, buf, cached, pool)
                kept = [j for j, reason in enumerate(reasons) if not reason]
                for k, j in enumerate(kept):
                    if k != j:  # k < j: moving rows down never overwrites one still to move
                        buf[k] = buf[j]
                sink.write(slot, buf[: len(kept)])
                rows += self._rows(part, reasons, slot, sink.name)
                slot += len(kept)
                if sink.index_due():
                    done = {r["path"] for r in rows}  # cached rows not reached yet stay named where they are
                    sink.write_index(rows + [r for p, r in cached.rows.items() if p not in done])
        sink.write_index(rows, final=True)
        return rows

    def _rows(self, part: list[str], reasons: list[str], slot: int, file: str) -> list[dict]:
        """The index rows of ``part``: stat, why it cannot be used ("" if it can), where its pixels are (the usable
        ones from ``slot`` on, in order)."""
        rows = []
        for path, reason in zip(part, reasons, strict=True):
            size, mtime_ns = self.stats[path]
            rows.append({"path": path, "size": size, "mtime_ns": mtime_ns, "reason": reason,
                         "slot": -1 if reason else slot, "file": file})  # fmt: skip
            slot += 0 if reason else 1
        return rows

    def _tensor_set(self, rows: dict[str, dict], images: np.ndarray, n_decoded: int) -> TensorSet:
        kept = [p for p in self.paths if not rows[p]["reason"]]
        dropped = pd.DataFrame([{"path": p, "reason": rows[p]["reason"]} for p in self.paths if rows[p]["reason"]],
                               columns=["path", "reason"])  # fmt: skip
        tensor = torch.from_numpy(images)
        cache_rows.track(tensor, images)  # batches read a mapped cache's rows with pread, not through the mapping
        return TensorSet(tensor, kept, dropped, n_decoded, self.size)


@dataclass
class _Decode:
    """Filling a chunk's buffer: the paths in ``todo`` decoded on the threads, the others read from the cache."""

    root: Path
    todo: set[str]
    n_todo: int
    size: int
    threads: int
    progress: Progress | None
    decoded: int = 0

    def chunk(self, part: list[str], buf: np.ndarray, cached: CachedRows, pool: ThreadPoolExecutor) -> list[str]:
        """Fill ``buf[j]`` with the pixels of ``part[j]``; the reason each one cannot be used ("" if it can)."""
        reasons = [""] * len(part)
        fresh = [j for j, p in enumerate(part) if p in self.todo]
        step = max(1, min(256, len(fresh) // (self.threads * 4)))  # a few tasks a thread: none idles long
        tasks = [fresh[i : i + step] for i in range(0, len(fresh), step)]
        results = pool.map(lambda js: [(j, self._decode_into(part[j], buf[j])) for j in js], tasks)
        for j, path in enumerate(part):  # cached rows are read while the threads decode
            if path not in self.todo:
                reasons[j] = cached.rows[path]["reason"]
                if not reasons[j]:
                    cached.read(path, buf[j])
        for done in results:
            for j, reason in done:
                reasons[j] = reason
            self.decoded += len(done)
            if self.progress:
                self.progress(self.decoded, self.n_todo)
        return reasons

    def _decode_into(self, path: str, into: np.ndarray) -> str:
        """Decode ``path`` into the row ``into``; why it cannot be used, or "" when it was."""
        try:
            into[...] = decode_square(self.root / path, self.size).numpy()
        except ImageError as exc:
            return exc.reason
        return ""


def channel_stats(images: torch.Tensor, indices: np.ndarray | None = None,
                  chunk_bytes: int | None = None) -> tuple[list[float], list[float]]:  # fmt: skip
    """Per-channel mean and standard deviation, in 0..1 units, of ``images[indices]`` (the training images).

    Summed in chunks of float64 (:func:`stats_chunk`), so 100k images need no 100k-image float copy.
    """
    chosen = torch.as_tensor(indices if indices is not None else np.arange(len(images)), dtype=torch.long)
    if len(chosen) == 0:
        return [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for part in chosen.split(stats_chunk(images.shape[2], chunk_bytes)):
        x = cache_rows.gather(images, part).to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = len(chosen) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)  # a blank channel must not divide by 0
    return mean.tolist(), std.tolist()


def stats_chunk(image_size: int, chunk_bytes: int | None = None) -> int:
    """Images :func:`channel_stats` sums at once at ``image_size`` px (at most 4,096, at most ``chunk_bytes``,
    default ``STATS_CHUNK_BYTES``, of float64)."""
    return max(1, min(4096, (chunk_bytes or STATS_CHUNK_BYTES) // (3 * image_size * image_size * 8)))


# --- the evaluation transform ------------------------------------------------------------------------------


def resize_to_tensor(image: Image.Image, image_size: int, channels: int = 3) -> torch.Tensor:
    """``image`` as an ``image_size`` x ``image_size`` uint8 CHW tensor (the cacheable half of the transform).

    Shorter side scaled to ``image_size``, then centre-cropped (``Resize(S)`` + ``CenterCrop(S)``, i.e.
    ``ImageOps.fit``): the aspect ratio is kept, as in the training cache (``core.train.tensors.decode_square``).
    PIL's bilinear filter widens its support when shrinking, i.e. it is antialiased.
    """
    if channels not in (1, 3):
        raise CoreError(f"images can have 1 or 3 channels, not {channels}")
    mode = "RGB" if channels == 3 else "L"
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (image_size, image_size):
        image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def normalize_batch(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N)CHW in 0..255 -> float32 normalised with ``mean``/``std`` (per channel, on 0..1 values)."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(shape)
    return (batch.float() / 255.0 - m) / s


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float CHW tensor: the transform evaluation and inference both use."""
    channels = len(mean)

    def transform(image: Image.Image) -> torch.Tensor:
        return normalize_batch(resize_to_tensor(image, image_size, channels), mean, std)

    return transform


def preprocess(
    images: Sequence[Image.Image], image_size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """A batch (N, C, image_size, image_size) from PIL images: :func:`resize_to_tensor` then
    :func:`normalize_batch`, the two steps of :func:`eval_transform`."""
    if not images:
        raise CoreError("no images to preprocess")
    stacked = torch.stack([resize_to_tensor(im, image_size, len(mean)) for im in images])
    return normalize_batch(stacked, mean, std)
