"""Fingerprints of every image in a dataset, from ONE decode per image, cached like the scan's manifest.

For each image ``fingerprint_batch`` opens the file once (``core.images.opener.open_with_info``, with a draft
size so a JPEG decodes at 1/2..1/8 scale) and computes:

* ``content``: an exact key. Two files with the same key show the same pixels. For PNG, BMP, GIF, TIFF, PNM and
  WebP it is a BLAKE2b of the full-resolution RGB pixels (so one picture saved as PNG and as BMP is an exact
  match); a JPEG is decoded at reduced size for speed, so its key is a BLAKE2b of the file's bytes (a byte copy
  is exact, a re-encode is not, and a JPEG and a PNG of its decoded pixels meet as a distance-0 near pair);
* ``hash``: the perceptual hash (imagehash's phash of the 32x32 gray reduction by default; dhash, whash,
  average_hash of the 64x64 one), a uint64;
* ``thumb``: a 16x16 grayscale thumbnail (uint8) and the mean RGB colour, to verify near pairs on pixels;
* the quality features of ``core.dedup.features``;
* with ``facts=True``, the scan's facts too (``core.datasets.scan.FACT_COLUMNS``): a dataset the duplicate
  search sees first is scanned *and* fingerprinted by this one decode (``scan_inspector``).

All of it comes from one 64x64 RGB reduction of the decoded image (and its gray version, halved for the hash and
halved again for the thumbnail: integer reductions, cheap), cached per dataset and method in
``<cache>/hashes/<ref.key>-<method>.parquet`` keyed by each file's size and modification time, so a second
run opens nothing.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.fftpack
from PIL import Image

from core.common import filecache
from core.common.cpu import usable_cores
from core.common.errors import DedupError, ImageError
from core.datasets.scan import ScanResult, cache_write, collect, map_chunks, path_chunks
from core.datasets.sources import DatasetRef
from core.dedup.features import FEATURE_COLUMNS, quality_features_batch
from core.images.opener import ImageInfo, open_with_info

Progress = Callable[[int, int], None]
HASH_METHODS: dict[str, Callable[[Image.Image], imagehash.ImageHash]] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "whash": lambda im: imagehash.whash(im, image_scale=64),  # the default scale grows with the image
    "average_hash": imagehash.average_hash,
}
WORK_SIDE = 64  # every fingerprint is computed from a WORK_SIDE x WORK_SIDE RGB reduction
HASH_SIDE = 32  # pHash's input: the gray work image halved (imagehash would LANCZOS-resize to 32; BOX is cheaper)
THUMB_SIDE = 16  # verification thumbnail: the hash input halved again
CACHE_VERSION = 2  # bump when a fingerprint's definition changes: older caches are then recomputed
FINGERPRINT_COLUMNS = ["content", "hash", "thumb", "mean_r", "mean_g", "mean_b", *FEATURE_COLUMNS]
CACHE_COLUMNS = ["path", "size", "mtime_ns", "version", "error", *FINGERPRINT_COLUMNS]
PER_WORKER_MIN = 32  # fewer files than this per thread are hashed on the calling thread alone
BATCH = 64  # images whose hashes and features are computed together (64 x 64 x 64 x 3 floats: 3 MiB)
_JPEG_MAGIC = b"\xff\xd8\xff"


def check_method(method: str) -> str:
    """``method`` if it is a known perceptual hash, else a DedupError listing the known ones."""
    if method not in HASH_METHODS:
        raise DedupError(f"unknown hash method {method!r}; choose one of {', '.join(HASH_METHODS)}")
    return method


# --------------------------------------------------------------------------------------------------------------
# One image


def image_fingerprint(path: str | os.PathLike[str], method: str = "phash") -> dict:
    """Everything the duplicate search and the quality checks need from one image, from a single decode.

    Raises:
        ImageError: the file cannot be read or decoded.
    """
    result = fingerprint_batch([os.fspath(path)], method)[0]
    if result["error"]:
        raise ImageError(result["error"], os.fspath(path))
    return result


def fingerprint_batch(paths: Sequence[str], method: str = "phash", *, facts: bool = False) -> list[dict]:
    """Fingerprints of ``paths`` (``{"error": reason}`` for a file that fails), in order, on this thread.

    Each image is decoded and reduced on its own; the hashes (phash), thumbnails and quality features are then
    computed for the whole batch at once, so a thread spends its time in Pillow and numpy (which release the
    GIL) instead of in per-image Python. ``facts`` adds the scan's facts (width, height, mode, format, frames,
    bytes) of each image.
    """
    hasher = HASH_METHODS[check_method(method)]
    results: list[dict] = [{"error": ""} for _ in paths]
    reduced: list[tuple[int, Image.Image]] = []
    for k, path in enumerate(paths):
        try:
            content, work, info = _decode_reduced(path)
        except ImageError as exc:
            results[k]["error"] = exc.reason
            continue
        results[k]["content"] = content
        if facts:
            results[k].update(width=info.width, height=info.height, mode=info.mode, format=info.format,
                              frames=info.frames, bytes=info.bytes, method=method)  # fmt: skip
        reduced.append((k, work))
    if reduced:
        _fill_batch(results, reduced, method, hasher)
    return results


def scan_inspector(method: str = "phash") -> Callable[[Sequence[str]], list[dict]]:
    """An inspector for ``core.datasets.scan.scan_dataset``: facts and fingerprints from one decode per file.

    A ``partial`` of a module function, not a closure: a worker process can be sent it.
    """
    return functools.partial(fingerprint_batch, method=check_method(method), facts=True)


def _decode_reduced(path: str) -> tuple[str, Image.Image, ImageInfo]:
    """The exact content key, the WORK_SIDE x WORK_SIDE RGB reduction and the facts of one image: its only decode."""
    data = _read_bytes(path)
    info, im = open_with_info(data, draft_size=(WORK_SIDE, WORK_SIDE))
    # BOX = area average: no aliasing whatever the input size, and small inputs are enlarged without blur.
    return _content_key(data, im), im.resize((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX), info


def _fill_batch(results: list[dict], reduced: list[tuple[int, Image.Image]], method: str, hasher) -> None:
    rgb = np.stack([np.asarray(work) for _, work in reduced])
    grays = [work.convert("L") for _, work in reduced]
    halves = [g.reduce(WORK_SIDE // HASH_SIDE) for g in grays]
    hashes = phash_batch(halves) if method == "phash" else [_hash_to_int(hasher(g)) for g in grays]
    # Pillow's 64x reduction is the mean colour, to the level: a numpy mean over the strided colour axis costs 5x more.
    means = np.array([work.reduce(WORK_SIDE).getpixel((0, 0)) for _, work in reduced], np.float64)
    features = quality_features_batch(rgb, np.stack([np.asarray(g) for g in grays]))
    for row, (k, _) in enumerate(reduced):
        results[k].update(
            hash=int(hashes[row]),
            thumb=halves[row].reduce(HASH_SIDE // THUMB_SIDE).tobytes(),
            mean_r=float(means[row, 0]),
            mean_g=float(means[row, 1]),
            mean_b=float(means[row, 2]),
            **{name: float(values[row]) for name, values in features.items()},
        )


def phash_batch(grays: Sequence[Image.Image]) -> np.ndarray:
    """imagehash.phash of each image, bit for bit, as int64 (see ``_hash_to_int``), for a whole batch at once.

    The same steps as imagehash 4.3's phash: LANCZOS to 32x32 (nothing for an image already that size),
    scipy.fftpack DCT down the columns then along the rows, the top-left 8x8 coefficients compared with their
    median; here one DCT call covers the batch (tests/dedup checks the result equals imagehash.phash).
    """
    side = (HASH_SIDE, HASH_SIDE)
    pixels = np.stack([np.asarray(g if g.size == side else g.resize(side, Image.Resampling.LANCZOS)) for g in grays])
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)[:, :8, :8].reshape(len(grays), 64)
    bits = dct > np.median(dct, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64).view(np.int64)


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole file, read once: it is both hashed (JPEG content key) and decoded from memory."""
    try:
        with open(path, "rb") as fp:
            return fp.read()
    except FileNotFoundError as exc:
        raise ImageError("file not found", os.fspath(path)) from exc
    except OSError as exc:
        raise ImageError(f"cannot read ({exc.strerror or exc})", os.fspath(path)) from exc


def _content_key(data: bytes, im: Image.Image) -> str:
    if data.startswith(_JPEG_MAGIC):  # decoded at reduced size: the pixels seen here are not the file's own
        return "jpeg:" + hashlib.blake2b(data, digest_size=16).hexdigest()
    digest = hashlib.blake2b(f"RGB {im.width}x{im.height}".encode(), digest_size=16)
    digest.update(im.tobytes())
    return "rgb:" + digest.hexdigest()


def _hash_to_int(h: imagehash.ImageHash) -> int:
    """The 64 hash bits as a signed int64 (parquet and SQLite have no uint64); ``.view(np.uint64)`` undoes it."""
    bits = np.packbits(np.asarray(h.hash, dtype=bool).ravel())
    return int(bits.view(">u8")[0].astype(np.uint64).view(np.int64))


# --------------------------------------------------------------------------------------------------------------
# A dataset


@dataclass
class HashTable:
    """Fingerprints of a scanned dataset: one row per usable image, in manifest order.

    ``table`` has the manifest's columns (path, label, split, width, height, ...) plus FINGERPRINT_COLUMNS;
    ``failed`` lists images the scan accepted but this pass could not open (path, reason).
    """

    method: str
    table: pd.DataFrame
    failed: pd.DataFrame
    n_opened: int  # images decoded by this call: 0 when everything came from the cache
    seconds: float
    warnings: list[str] = field(default_factory=list)  # the scan's and this pass's (a cache not saved: disk full)
    thumb_file: Path | None = None  # set when ``table`` has no thumbnails: the cache they are read from

    @property
    def hashes(self) -> np.ndarray:
        return self.table["hash"].to_numpy(np.int64).view(np.uint64)

    @property
    def thumbs(self) -> np.ndarray:
        """(n, THUMB_SIDE**2) uint8 gray thumbnails."""
        return self.thumbs_at(np.arange(len(self.table)))

    def thumbs_at(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), THUMB_SIDE**2) uint8 gray thumbnails of the given rows only."""
        if "thumb" not in self.table.columns:
            assert self.thumb_file is not None
            return read_thumbs(self.thumb_file, self.table["path"].iloc[rows])
        column = self.table["thumb"].to_numpy()
        return np.frombuffer(b"".join(column[rows]), np.uint8).reshape(len(rows), THUMB_SIDE * THUMB_SIDE)

    @property
    def colours(self) -> np.ndarray:
        """(n, 3) float mean RGB."""
        return self.table[["mean_r", "mean_g", "mean_b"]].to_numpy(np.float32)


def hash_dataset(
    scan: ScanResult,
    cache_dir: Path | None = None,
    *,
    method: str = "phash",
    workers: int | None = None,
    progress: Progress | None = None,
) -> HashTable:
    """Fingerprint every image of ``scan.manifest``, opening only files new or changed since the cached run.

    Images the scan itself fingerprinted (``scan_inspector``, in ``scan.extras``) are not opened again.

    Args:
        scan: the scanned dataset (its unreadable files are already left out).
        cache_dir: ``Workspace.cache``; None computes everything without a cache.
        method: the perceptual hash (a key of HASH_METHODS).
        workers: decoding threads; default one per usable core.
        progress: called with (images done, images to open) while images are opened.
    """
    started = time.perf_counter()
    check_method(method)
    root, paths = scan.ref.root, scan.manifest["path"]
    sizes, mtimes = _stat_all(root, paths)
    cache_file = fingerprint_cache(scan.ref, cache_dir, method) if cache_dir else None
    source = _open_cache(cache_file)
    keys = filecache.read_columns(source, ["path", "size", "mtime_ns"]) if source else None
    rows = filecache.match(keys, paths, sizes, mtimes)
    # Nothing changed: the table without the thumbnails (half of it: 51 MB and ~130 MB of peak at 200,000 images);
    # the search compares only the images in a candidate pair, and reads theirs when it does (``thumbs_at``).
    # Something changed: the cache is written again, whole, so every row's thumbnail is needed until it is.
    wanted = [c for c in CACHE_COLUMNS if c != "thumb" or (rows < 0).any()]
    cached = filecache.read_columns(source, wanted) if keys is not None and (rows >= 0).any() else None
    if cached is None:  # no cache, or one damaged past its first columns: every image is fingerprinted
        rows = np.full(len(paths), -1, np.int64)
    stale = np.flatnonzero(rows < 0)
    from_scan = _scan_rows(scan.extras, paths.iloc[stale], method)
    todo = stale[from_scan < 0]
    fresh = fingerprint_many(paths.iloc[todo].reset_index(drop=True), method, root=root, workers=workers,
                             progress=progress)  # fmt: skip
    n = len(paths)
    own = filecache.placed(np.arange(len(todo)), todo, n)
    lazy = cached is not None and "thumb" not in cached.columns  # then nothing is stale: the cache is the source
    prints = _combine([(cached, rows), (scan.extras, filecache.placed(from_scan, stale, n)), (fresh, own)], n, lazy)
    del cached, fresh
    warnings = list(scan.warnings)
    if cache_file is not None and len(stale):  # what was fingerprinted now, by the scan or here, is saved
        values = prints.assign(version=CACHE_VERSION)
        save = cache_write(lambda: filecache.save_rows(cache_file, CACHE_COLUMNS, paths, sizes, mtimes, values),
                           cache_file.parent,
                           "the fingerprints were not cached: the next search decodes every image again")  # fmt: skip
        warnings += [save] if save else []
        if not save:  # cached with every thumbnail: from here on read from there, for the pairs only (as above)
            prints, lazy = prints.drop(columns="thumb"), True
    table, failed = _assemble(scan.manifest, prints)
    return HashTable(method, table, failed, len(stale), time.perf_counter() - started, warnings,
                     cache_file if lazy else None)  # fmt: skip


def fingerprint_cache(ref: DatasetRef, cache_dir: Path, method: str = "phash") -> Path:
    """Where the fingerprints of ``ref`` by ``method`` are cached (the file may not exist yet)."""
    return cache_dir / "hashes" / f"{ref.key}-{method}.parquet"


def _stat_all(root: Path, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, mtimes) of ``paths``: -1 for a file vanished since the scan (opened again, listed as failed)."""
    sizes, mtimes = np.full(len(paths), -1, np.int64), np.full(len(paths), -1, np.int64)
    for k, p in enumerate(paths):
        try:
            st = (root / p).stat()
        except OSError:
            continue
        sizes[k], mtimes[k] = st.st_size, st.st_mtime_ns
    return sizes, mtimes


def _scan_rows(extras: pd.DataFrame, paths: pd.Series, method: str) -> np.ndarray:
    """For each of ``paths``, its row in the scan's ``extras`` when the scan fingerprinted it by ``method``, else -1."""
    if extras.empty or "method" not in extras.columns:
        return np.full(len(paths), -1, np.int64)
    first = pd.Series(np.arange(len(extras)), index=extras["path"])
    first = first[~first.index.duplicated()]  # a path listed twice was opened twice: either row will do
    rows = first.reindex(pd.Index(paths)).fillna(-1).to_numpy(np.int64)
    return np.where((rows >= 0) & (extras["method"].to_numpy()[rows] == method), rows, -1)


def _combine(sources: list[tuple[pd.DataFrame | None, np.ndarray]], n: int, lazy: bool = False) -> pd.DataFrame:
    """One row per image from the cache, the scan's extras and the files opened now (``filecache.gather``);
    without the thumbnails when ``lazy``."""
    prints = filecache.gather(sources, [c for c in ("error", *FINGERPRINT_COLUMNS) if not (lazy and c == "thumb")], n)
    prints["hash"] = prints["hash"].astype("Int64")  # failed files have none; float64 would round the 64 bits
    return prints


def fingerprint_many(
    paths: Sequence[str],
    method: str = "phash",
    *,
    root: Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """``image_fingerprint`` of each path (under ``root`` if given), one row each, in order (``error`` holds the
    reason a file failed); in parallel.

    Workers as the scan's (``core.datasets.scan.map_chunks``): forked processes from the command line, threads in
    a server. Measured on the 2-core VM with 2,000 photo-like JPEGs (bench.bench_dedup, quiet machine): 1 thread
    2.13 s, 2 threads 1.55 s (1.37x: decoding and resizing release the GIL, the rest is batched numpy).
    """
    n_workers = min(workers or usable_cores(), max(1, len(paths) // PER_WORKER_MIN))
    size = max(16, min(4 * BATCH, len(paths) // (n_workers * 4))) if n_workers > 1 else BATCH
    run = functools.partial(_fingerprint_chunk, method=method)
    frame = collect(map_chunks(run, path_chunks(paths, size, root), n_workers, "hash"), len(paths), progress)
    return frame.reindex(columns=["error", *FINGERPRINT_COLUMNS])


def _fingerprint_chunk(paths: Sequence[str], method: str) -> list[dict]:
    results: list[dict] = []
    for start in range(0, len(paths), BATCH):
        results += fingerprint_batch(paths[start : start + BATCH], method)
    return results


def read_thumbs(cache_file: Path, paths: pd.Series) -> np.ndarray:
    """The cached thumbnails of ``paths``, one row group of the cache at a time (a few MB, whatever its size).

    Raises:
        DedupError: the cache no longer holds one of them (rewritten by another search meanwhile).
    """
    unique = pd.Index(paths).drop_duplicates()
    out = np.zeros((len(unique), THUMB_SIDE * THUMB_SIDE), np.uint8)
    found = np.zeros(len(unique), bool)
    try:
        cache = pq.ParquetFile(cache_file)
        for group in range(cache.num_row_groups):
            part = cache.read_row_group(group, columns=["path", "thumb"])
            at = unique.get_indexer(part.column("path").to_pandas())
            hit = np.flatnonzero(at >= 0)
            if len(hit):
                thumbs = part.column("thumb").take(hit).to_pylist()
                out[at[hit]] = np.frombuffer(b"".join(thumbs), np.uint8).reshape(len(hit), -1)
                found[at[hit]] = True
    except (OSError, ValueError) as exc:
        raise DedupError("the fingerprint cache could not be read again; search again") from exc
    if not found.all():
        raise DedupError("the fingerprint cache changed during the search (another search rewrote it); search again")
    return out[unique.get_indexer(paths)]


def _open_cache(cache_file: Path | None) -> pq.ParquetFile | None:
    """The fingerprint cache, opened, when it holds fingerprints of the current definition (``CACHE_VERSION``)."""
    source = filecache.open_table(cache_file, CACHE_COLUMNS)
    versions = filecache.read_columns(source, ["version"]) if source is not None else None
    return source if versions is not None and (versions["version"] == CACHE_VERSION).all() else None


def _assemble(manifest: pd.DataFrame, prints: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    table, failed = filecache.with_values(manifest, prints)
    table["hash"] = table["hash"].astype(np.int64)
    return table, failed
