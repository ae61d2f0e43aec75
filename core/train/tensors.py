"""Decode once: every image opened once, resized to a square and kept as ``N x 3 x S x S`` uint8, in RAM and in
the workspace cache; and the evaluation transform, which must cut and scale exactly as the cache does.

Why this shape (measured on the 2-core VM, 1,000 JPEGs of 160 px trained at 32 px): decoding JPEGs through a
DataLoader every epoch fed ResNet-18 at 98 img/s, while indexing a uint8 tensor decoded once fed it at 145
img/s, and loading alone ran 1,690 vs 122,000 img/s. So every image is opened once (through
``core.images.opener.open_image``, on one thread per core) and batches are cut from that tensor in the
training thread (``core.train.batches``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from core.common import filecache
from core.common.atomic import write_atomic
from core.common.cpu import usable_cores
from core.common.errors import CoreError, ImageError
from core.images.opener import open_image

Progress = Callable[[int, int], None]
CACHE_VERSION = 1  # bump when the decoding/resizing below changes: old cache files are then ignored
_PER_WORKER_MIN = 64  # fewer images than this per thread are decoded on the calling thread
# channel_stats sums this many float64 bytes at once (about 3x that at its peak, measured): chunks of 4,096 images
# at 224 px took 4.9 GB each, 1,000 such images 2.3 GB of peak RSS (now 0.4 GB). 4,096 images of up to 36 px
# (every LeNet input) still fit in one chunk, so their sums are unchanged.
STATS_CHUNK_BYTES = 128 * 1024**2


@dataclass
class TensorSet:
    """Decoded images: ``images[i]`` is ``paths[i]`` as a 3 x S x S uint8 tensor (RGB)."""

    images: torch.Tensor
    paths: list[str]
    dropped: pd.DataFrame  # path, reason: files asked for that could not be decoded
    n_decoded: int  # images decoded by this call (0 when everything came from the cache)
    image_size: int


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
) -> TensorSet:
    """Decode ``paths`` (relative to ``root``) once into a uint8 tensor, reusing the on-disk cache.

    The cache (``cache_dir/tensors/<dataset>-<S>.npy`` + ``.json``) remembers each file's size and mtime:
    only new or changed files are decoded, so a second run, or a resume, decodes nothing. Files that fail to
    open are dropped and listed in ``dropped`` with their reason (and remembered, so they are not retried
    until they change). The cache is memory-mapped copy-on-write: a dataset larger than RAM still trains.

    Args:
        root: the dataset root that ``paths`` are relative to.
        paths: images to load, in the order wanted.
        image_size: side S of the square images.
        progress: called with (decoded, to decode) while images are decoded.
        workers: decoding threads (default: usable cores; Pillow releases the GIL while decoding).
        cache_dir: the workspace cache folder; None keeps nothing on disk.
    """
    root = Path(root)
    stats = {p: _stat(root / p) for p in paths}
    base = cache_dir / "tensors" / f"{_root_key(root)}-{image_size}" if cache_dir else None
    cached_rows, cached_images = _read_cache(base, image_size)
    todo = [p for p in paths if filecache.stale(cached_rows.get(p), stats[p])]
    fresh = dict(zip(todo, _decode_many([str(root / p) for p in todo], image_size, workers, progress), strict=True))
    rows = [_row(p, stats[p], fresh, cached_rows) for p in paths]
    images = _gather(rows, fresh, cached_images, image_size)
    if base is not None and todo:  # a subset or another order of cached images needs no new file
        _write_cache(base, rows, images)
    kept = [r["path"] for r in rows if not r["reason"]]
    dropped = pd.DataFrame([{"path": r["path"], "reason": r["reason"]} for r in rows if r["reason"]],
                           columns=["path", "reason"])  # fmt: skip
    return TensorSet(torch.from_numpy(images), kept, dropped, len(todo), image_size)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)  # decoding will report the reason
    return (st.st_size, st.st_mtime_ns)


def _root_key(root: Path) -> str:
    return hashlib.sha1(f"{CACHE_VERSION}\0{os.path.realpath(root)}".encode()).hexdigest()[:16]


def _decode_many(paths: list[str], size: int, workers: int | None, progress: Progress | None) -> list:
    """``3 x S x S`` arrays, or reason strings for files that cannot be used, in order."""
    n_workers = min(workers or usable_cores(), max(1, len(paths) // _PER_WORKER_MIN))
    chunk = max(16, min(256, len(paths) // (n_workers * 8) or 1))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    results: list = []
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="decode") as pool:
        for part in pool.map(lambda c: [_decode_or_reason(p, size) for p in c], chunks):
            results.extend(part)
            if progress:
                progress(len(results), len(paths))
    return results


def _decode_or_reason(path: str, size: int) -> np.ndarray | str:
    try:
        return decode_square(path, size).numpy()
    except ImageError as exc:
        return exc.reason


def _row(path: str, stat: tuple[int, int], fresh: dict, cached_rows: dict[str, dict]) -> dict:
    """The cache row of ``path``: its stat, why it cannot be used ("" if it can), where its pixels are."""
    if path in fresh:
        got = fresh[path]
        reason, source = (got, None) if isinstance(got, str) else ("", ("fresh", path))
    else:
        old = cached_rows[path]
        reason, source = old["reason"], None if old["reason"] else ("cache", old["slot"])
    return {"path": path, "size": stat[0], "mtime_ns": stat[1], "reason": reason, "source": source}


def _gather(rows: list[dict], fresh: dict, cached_images: np.ndarray | None, size: int) -> np.ndarray:
    """The usable images in row order (numbering their slots); the mapped cache itself when it is exactly that."""
    sources = [r.pop("source") for r in rows]
    kept = [s for s in sources if s is not None]
    slots = iter(range(len(kept)))
    for r in rows:
        r["slot"] = -1 if r["reason"] else next(slots)
    if (
        cached_images is not None
        and len(kept) == len(cached_images)
        and kept == [("cache", i) for i in range(len(kept))]
    ):
        return cached_images  # unchanged dataset: no copy at all
    out = np.empty((len(kept), 3, size, size), np.uint8)
    from_cache = [(i, s[1]) for i, s in enumerate(kept) if s[0] == "cache"]
    if from_cache:
        at, old = zip(*from_cache, strict=True)
        out[list(at)] = cached_images[list(old)]  # one vectorised read of the mapped file
    for i, s in enumerate(kept):
        if s[0] == "fresh":
            out[i] = fresh[s[1]]
    return out


def _read_cache(base: Path | None, size: int) -> tuple[dict[str, dict], np.ndarray | None]:
    index = base.with_suffix(".json") if base else None
    if index is None or not index.is_file():
        return {}, None
    try:
        doc = json.loads(index.read_text())
        images = np.load(index.parent / doc["npy"], mmap_mode="c")  # copy-on-write: the file never changes
        rows = doc["rows"]
    except (OSError, ValueError, KeyError, TypeError):  # a damaged cache only costs a decode, never an error
        return {}, None
    if images.shape[1:] != (3, size, size) or any(r["slot"] >= len(images) for r in rows):
        return {}, None
    return {r["path"]: r for r in rows}, images


def _write_cache(base: Path, rows: list[dict], images: np.ndarray) -> None:
    """Write the pixels under a fresh name, then the index naming them: readers never see a mixed pair."""
    npy = base.with_name(f"{base.name}-{uuid.uuid4().hex[:12]}.npy")
    write_atomic(npy, lambda fh: np.save(fh, images), durable=False)  # a cache: rebuilt when lost
    write_atomic(base.with_suffix(".json"), json.dumps({"npy": npy.name, "rows": rows}), durable=False)
    for old in base.parent.glob(f"{base.name}-*.npy"):
        if old != npy:  # a reader that mapped it keeps its pages (unlinked files stay readable on POSIX)
            old.unlink(missing_ok=True)


def channel_stats(images: torch.Tensor, indices: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation, in 0..1 units, of ``images[indices]`` (the training images).

    Summed in chunks of float64 (:func:`stats_chunk`), so 100k images need no 100k-image float copy.
    """
    chosen = torch.as_tensor(indices if indices is not None else np.arange(len(images)), dtype=torch.long)
    if len(chosen) == 0:
        return [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for part in chosen.split(stats_chunk(images.shape[2])):
        x = images[part].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = len(chosen) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)  # a blank channel must not divide by 0
    return mean.tolist(), std.tolist()


def stats_chunk(image_size: int) -> int:
    """Images :func:`channel_stats` sums at once at ``image_size`` px (at most 4,096, at most
    ``STATS_CHUNK_BYTES`` of float64)."""
    return max(1, min(4096, STATS_CHUNK_BYTES // (3 * image_size * image_size * 8)))


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
