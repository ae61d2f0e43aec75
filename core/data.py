"""Training data: splits, a decode-once uint8 tensor cache, oversampling, and augmentation on tensors.

Why this shape (measured on the 2-core VM, research/cpu-training.md section 5): decoding JPEGs through a
DataLoader every epoch fed ResNet-18 at 98 img/s, while indexing a uint8 tensor decoded once fed it at 145
img/s, and loading alone ran 1,690 vs 122,000 img/s. So every image is opened once (through
``core.images.open_image``, on one thread per core), resized to a square and kept as ``N x 3 x S x S`` uint8,
in RAM and in the workspace cache, and batches are cut from that tensor in the training thread
(``num_workers=0``: worker processes would compete with the training threads for the same two cores).
Augmentation runs per batch on tensors, per sample, on the training device.

Every random choice comes from a generator seeded by (seed, epoch, batch), so a batch can be rebuilt
exactly: that is what lets a run resume in the middle of an epoch and match an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core import filecache
from core.checkpoints import resize_to_tensor
from core.cpu import usable_cores
from core.errors import DatasetError, ImageError
from core.images import open_image
from core.naming import natural_sorted

Progress = Callable[[int, int], None]
SPLITS = ("train", "val", "test")
AUGMENTS = ("none", "flip", "crop", "crop-flip", "strong")
CACHE_VERSION = 1  # bump when the decoding/resizing below changes: old cache files are then ignored
# A batch cut from a cache larger than this stays on the CPU and is copied to the GPU per batch.
MAX_DEVICE_CACHE_BYTES = 2 * 1024**3
_PER_WORKER_MIN = 64  # fewer images than this per thread are decoded on the calling thread


# ---------------------------------------------------------------------------------------------------------------
# Splits


def make_splits(
    manifest: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> pd.DataFrame:
    """Assign every image to train, val or test.

    Split folders (or a CSV split column) are kept as they are. Where the data has none, each class is split
    on its own (stratified): its images are ordered by a seeded hash of their path, the first
    ``n * test_fraction`` (rounded half up) go to test, the next ``round(n * val_fraction)`` to val, the rest to train.
    Ordering by hash rather than by a shuffled row order makes the split independent of listing order, and
    adding images to a folder moves no other image between splits. A class always keeps at least one training
    image, so a class of one or two images is train-only (it cannot be measured, but it can be learned).
    When the data has a train folder but no val (or no test) folder, the missing split is carved out of the
    training images the same way; images outside every split folder count as training images.

    Args:
        manifest: the scan's manifest (``path``, ``label``, ``split`` with "" or ``unsplit`` for none).
        val_fraction: share of each class for validation when the data has no val split.
        test_fraction: share of each class for the test when the data has no test split.
        seed: changes which images land where; the same seed always gives the same split.

    Returns:
        A frame ``path, label, split`` (strings; split is train/val/test), sorted by path.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise DatasetError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be >= 0 and < 1")
    frame = manifest[["path", "label", "split"]].astype(str).copy()
    frame["split"] = frame["split"].where(frame["split"].isin(SPLITS), "train")
    present = set(frame["split"])
    carve = {"test": 0.0 if "test" in present else test_fraction, "val": 0.0 if "val" in present else val_fraction}
    if carve["test"] or carve["val"]:
        train = frame["split"] == "train"
        frame.loc[train, "split"] = _stratified(frame[train], carve["val"], carve["test"], seed)
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def _stratified(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    split = pd.Series("train", index=frame.index)
    for _, group in frame.groupby("label", sort=False):
        order = sorted(group.index, key=lambda i: _path_hash(group.at[i, "path"], seed))
        n_test, n_val = _class_shares(len(order), val_fraction, test_fraction)
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_val]] = "val"
    return split


def _class_shares(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(test, val) counts for a class of n images, leaving at least one image for training."""
    n_test = min(_half_up(n * test_fraction), max(0, n - 1))
    n_val = min(_half_up(n * val_fraction), max(0, n - 1 - n_test))
    return n_test, n_val


def _half_up(x: float) -> int:
    # round() rounds halves to even (1.5 -> 2 but 2.5 -> 2); shares should grow steadily with the class size.
    return math.floor(x + 0.5 + 1e-9)


def _path_hash(path: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}\0{path}".encode()).hexdigest()


def split_indices(splits: pd.DataFrame, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """Positions in ``paths`` (e.g. a ``TensorSet``'s kept images) of each split's images."""
    where = dict(zip(splits["path"], splits["split"], strict=True))
    kinds = np.array([where.get(p, "") for p in paths])
    return {s: np.flatnonzero(kinds == s) for s in SPLITS}


def class_names(splits: pd.DataFrame) -> list[str]:
    """The classes in reading order ("2" before "10"); a label's position is its class index."""
    return natural_sorted(splits["label"].unique())


# ---------------------------------------------------------------------------------------------------------------
# Decode-once tensor cache


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

    The first half of ``core.checkpoints.eval_transform`` itself, so what the model sees in training is what it
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
    base.parent.mkdir(parents=True, exist_ok=True)
    npy = base.with_name(f"{base.name}-{uuid.uuid4().hex[:12]}.npy")
    tmp = base.with_name(f".{npy.name}.tmp")
    with open(tmp, "wb") as fp:
        np.save(fp, images)
    os.replace(tmp, npy)
    tmp.write_text(json.dumps({"npy": npy.name, "rows": rows}))
    os.replace(tmp, base.with_suffix(".json"))
    for old in base.parent.glob(f"{base.name}-*.npy"):
        if old != npy:  # a reader that mapped it keeps its pages (unlinked files stay readable on POSIX)
            old.unlink(missing_ok=True)


def channel_stats(images: torch.Tensor, indices: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation, in 0..1 units, of ``images[indices]`` (the training images).

    Summed in chunks of float64, so 100k images need no 100k-image float copy.
    """
    chosen = torch.as_tensor(indices if indices is not None else np.arange(len(images)), dtype=torch.long)
    if len(chosen) == 0:
        return [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for part in chosen.split(4096):
        x = images[part].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = len(chosen) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)  # a blank channel must not divide by 0
    return mean.tolist(), std.tolist()


# ---------------------------------------------------------------------------------------------------------------
# Oversampling rare classes


@dataclass
class RareClassSampler:
    """One epoch = every training image once, plus random repeats of rare classes' images.

    A class with fewer than ``rare_threshold`` images is topped up to ``rare_threshold`` draws per epoch (the
    whale report's "classes with fewer than 10 images"). Unlike a weighted random sampler, every image is
    still seen every epoch, and the epoch length is fixed, which the LR schedule and resume rely on.
    """

    labels: torch.Tensor  # class index per training image
    rare_threshold: int
    extra: dict[int, int] = field(init=False)  # class -> repeats added per epoch

    def __post_init__(self) -> None:
        counts = torch.bincount(self.labels).tolist() if len(self.labels) else []
        self.extra = {c: self.rare_threshold - n for c, n in enumerate(counts) if 0 < n < self.rare_threshold}

    def __len__(self) -> int:
        return len(self.labels) + sum(self.extra.values())

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """Positions into the training images for one epoch, shuffled."""
        parts = [torch.arange(len(self.labels))]
        for cls, n_extra in self.extra.items():
            members = torch.nonzero(self.labels == cls).flatten()
            parts.append(members[torch.randint(len(members), (n_extra,), generator=generator)])
        order = torch.cat(parts)
        return order[torch.randperm(len(order), generator=generator)]


def weighted_sampler(labels: torch.Tensor, rare_threshold: int) -> RareClassSampler | None:
    """A sampler that oversamples classes below ``rare_threshold`` images; None when no class is that rare."""
    sampler = RareClassSampler(labels, rare_threshold)
    return sampler if sampler.extra else None


# ---------------------------------------------------------------------------------------------------------------
# Augmentation on batched tensors (per sample, on the device)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (``N x 3 x S x S``, values 0..1); each sample gets its own random draw.

    Modes: ``flip`` (mirror left-right), ``crop`` (shift by up to S/8 px, reflect-padded: the tensor form of
    ``RandomCrop(S, padding=S/8)``), ``crop-flip`` (both), ``strong`` (both, plus rotation up to 15 degrees,
    scaling 0.9-1.1 and brightness/contrast/saturation jitter of 20%). torchvision's v2 transforms draw one
    random parameter per call, i.e. one per *batch*; these draw one per sample, vectorised.
    """
    if mode not in AUGMENTS:
        raise ValueError(f"augment {mode!r}; expected one of {', '.join(AUGMENTS)}")
    if mode in ("crop", "crop-flip", "strong"):
        x = random_translate(x, max(1, x.shape[-1] // 8), generator)
    if mode in ("flip", "crop-flip", "strong"):
        x = random_flip(x, generator)
    if mode == "strong":
        x = colour_jitter(random_affine(x, generator), generator)
    return x


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device, non_blocking=True)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own (dy, dx) in [-pad, pad], filling the border by reflection."""
    n, c, h, w = x.shape
    pad = min(pad, h - 1, w - 1)
    if pad < 1:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device, non_blocking=True)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 15.0) -> torch.Tensor:
    """Rotate by up to ``degrees`` and scale by 0.9-1.1, each sample its own, via one ``grid_sample``."""
    n = len(x)
    angle = _uniform(n, -math.radians(degrees), math.radians(degrees), generator, x.device)
    scale = _uniform(n, 0.9, 1.1, generator, x.device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1 - strength, 1 + strength], per sample."""
    n = len(x)
    low, high = 1 - strength, 1 + strength
    brightness, contrast, saturation = (_uniform(n, low, high, generator, x.device)[:, None, None, None]
                                        for _ in range(3))  # fmt: skip
    x = x * brightness
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
    x = (x - grey) * saturation + grey
    return x.clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Batches


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of one batch's random draws: any batch of any epoch can be rebuilt exactly (mid-epoch resume)."""
    return (seed * 1_000_003 + epoch * 100_003 + batch) % (2**63)


class Batches:
    """Batches of one split, cut from the uint8 cache, moved to the device, augmented and normalised there.

    On CUDA the whole cache is copied to the GPU once when it fits (``MAX_DEVICE_CACHE_BYTES``), so a batch
    is one index on the device; otherwise each batch goes over with ``non_blocking`` from pinned memory.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        augment: str = "none",
        shuffle: bool = False,
        sampler: RareClassSampler | None = None,
        seed: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.images, self.labels, self.indices = _place(images, labels, self.indices, self.device)
        self.batch_size, self.augment, self.shuffle, self.sampler, self.seed = (
            batch_size,
            augment,
            shuffle,
            sampler,
            seed,
        )
        # Normalising as (x - 255 mean) / (255 std) on the uint8 values saves one pass over the batch.
        self.shift = torch.tensor(mean, dtype=torch.float32, device=self.device).mul(255).view(1, 3, 1, 1)
        self.scale = torch.tensor(std, dtype=torch.float32, device=self.device).mul(255).reciprocal().view(1, 3, 1, 1)

    @property
    def n_samples(self) -> int:
        """Samples per epoch (oversampled repeats included)."""
        return len(self.sampler) if self.sampler is not None else len(self.indices)

    def __len__(self) -> int:
        n = self.n_samples
        # Training drops a last batch of one image: BatchNorm cannot normalise a single sample.
        return n // self.batch_size + (1 if n % self.batch_size > (1 if self.shuffle else 0) else 0)

    def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches of one epoch, starting at batch ``start_batch`` (for a mid-epoch resume)."""
        order = self._order(epoch)
        generator = torch.Generator()
        for b in range(start_batch, len(self)):
            rows = self.indices[order[b * self.batch_size : (b + 1) * self.batch_size]]
            generator.manual_seed(batch_seed(self.seed, epoch, b))
            yield self._batch(rows, generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.indices))
        generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, -1))
        if self.sampler is not None:
            return self.sampler.epoch_order(generator)
        return torch.randperm(len(self.indices), generator=generator)

    def _batch(self, rows: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.to(self.images.device, non_blocking=True)
        x, y = self.images.index_select(0, rows), self.labels.index_select(0, rows)
        if x.device != self.device:  # a CPU cache feeding a GPU: pinned pages let the copy run asynchronously
            x, y = x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        if self.augment != "none":
            x = augment_batch(x.float().div_(255), self.augment, generator).mul_(255)
        x = (x - self.shift).mul_(self.scale)
        if x.device.type == "cuda":  # the model is channels_last there (tensor cores); match it
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def _place(
    images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where batches are cut from: the shared CPU cache, or this split's images copied to the GPU once."""
    if device.type == "cpu":
        return images, labels, indices
    if len(indices) * images[0].numel() <= MAX_DEVICE_CACHE_BYTES:
        mine = indices.to(images.device)
        return images[mine].to(device), labels[mine].to(device), torch.arange(len(indices))
    return images, labels, indices  # too large for the GPU: each batch is pinned and copied (see _batch)
