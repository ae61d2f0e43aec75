"""Scanning a dataset: every image opened once through ``core.images.opener``, facts cached, problems listed.

The result is the *manifest*: one row per usable image (``path`` relative to the dataset root, ``label``,
``split``, ``width``, ``height``, ``mode``, ``format``, ``frames``, ``bytes``), and a second table of the files
that cannot be used, each with a reason. One bad file never stops a scan.

Facts are cached per dataset in ``<workspace>/cache/manifests/<key>.parquet`` keyed by each file's size and
modification time, so a rescan only opens new or changed files: a 100k-image folder is decoded once.
Images are decoded on one thread per usable core (Pillow releases the GIL while decoding). A caller that needs
more from each image than the facts (the duplicate search: fingerprints) passes an ``inspector`` that opens
each file once and returns the facts plus its own results, kept in ``ScanResult.extras``.

Images of a flat folder have no label (``UNLABELLED``): they are counted in ``n_unlabelled``, not as a class.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from core.common import filecache
from core.common.cpu import usable_cores
from core.common.diskspace import write_failure
from core.common.errors import DatasetError, ImageError
from core.common.naming import natural_sorted
from core.common.words import SPLITS
from core.datasets.layouts import FOLDER_OUTSIDE, LINK_OUTSIDE, UNLABELLED, Problem, real
from core.datasets.sources import DatasetRef, list_entries
from core.images.opener import inspect_image

Progress = Callable[[int, int], None]
# Opens a batch of files (absolute paths) and returns, per file, FACT_COLUMNS and "error" plus anything else.
Inspector = Callable[[Sequence[str]], list[dict]]
FACT_COLUMNS = ["width", "height", "mode", "format", "frames", "bytes"]
MANIFEST_COLUMNS = ["path", "label", "split", *FACT_COLUMNS]
CACHE_COLUMNS = ["path", "size", "mtime_ns", *FACT_COLUMNS, "error"]
# Each decoding thread gets at least this many files; fewer are opened on the calling thread alone.
PER_WORKER_MIN = 64
WINDOW = 4  # chunks in flight per worker (map_chunks)
UNSPLIT = "unsplit"


@dataclass
class ScanResult:
    """A scanned dataset: the manifest of usable images and the unreadable files with reasons."""

    ref: DatasetRef
    manifest: pd.DataFrame
    unreadable: pd.DataFrame  # columns: path, reason
    seconds: float
    n_opened: int  # files decoded by this scan (0 when everything came from the cache)
    # the inspector's results for the files this scan opened: one row each, with ``path`` (empty without one)
    extras: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)  # e.g. the cache could not be saved (disk full)

    @property
    def root(self) -> Path:
        return self.ref.root

    @cached_property
    def classes(self) -> dict[str, int]:
        """Images per label, in natural order; unlabelled images are not a class (see ``n_unlabelled``)."""
        counts = self.manifest["label"].value_counts()
        return {label: int(counts[label]) for label in natural_sorted(counts.index) if label != UNLABELLED}

    @property
    def n_unlabelled(self) -> int:
        return int((self.manifest["label"] == UNLABELLED).sum())

    @cached_property
    def splits(self) -> dict[str, int]:
        counts = self.manifest["split"].replace("", UNSPLIT).value_counts()
        order = [s for s in (*SPLITS, UNSPLIT) if s in counts.index]
        return {s: int(counts[s]) for s in order}

    def summary(self) -> dict[str, object]:
        """The ``scan --json`` object of the command-line contract."""
        return {
            "dataset": self.ref.spec,
            "kind": self.ref.kind,
            "root": str(self.root),
            "n_images": len(self.manifest),
            "n_classes": len(self.classes),
            "classes": self.classes,
            "n_unlabelled": self.n_unlabelled,
            "splits": self.splits,
            "unreadable": self.unreadable.to_dict("records"),
            "seconds": round(self.seconds, 3),
            "n_opened": self.n_opened,
            **({"warnings": self.warnings} if self.warnings else {}),
        }


def scan_dataset(
    ref: DatasetRef,
    cache_dir: Path | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    inspector: Inspector | None = None,
) -> ScanResult:
    """Scan ``ref``: list its entries, open every new or changed image, and build the manifest.

    Args:
        ref: the dataset.
        cache_dir: where manifests are cached (``Workspace.cache``); None scans without a cache.
        workers: decoding threads; default one per usable core.
        progress: called with (files done, files to open) while images are opened.
        inspector: opens the files instead of ``inspect_image`` (see ``Inspector``); what it returns beyond the
            facts is kept in ``ScanResult.extras`` for the files this scan opened.
    """
    started = time.perf_counter()
    listing, problems = _listing(ref)
    sizes, mtimes, link_problems = _stat_entries(ref.root, listing["path"], ref.reach)
    usable = sizes >= 0
    listing, sizes, mtimes = listing[usable].reset_index(drop=True), sizes[usable], mtimes[usable]
    cache_file = cache_dir / "manifests" / f"{ref.key}.parquet" if cache_dir else None
    cached = filecache.read_table(cache_file, CACHE_COLUMNS)
    rows = filecache.match(cached, listing["path"], sizes, mtimes)
    todo = np.flatnonzero(rows < 0)
    opened = listing["path"].iloc[todo].reset_index(drop=True)
    found = inspect_many(opened, root=ref.root, workers=workers, progress=progress, inspector=inspector)
    own = filecache.placed(np.arange(len(todo)), todo, len(listing))
    facts = filecache.gather([(cached, rows), (found, own)], [*FACT_COLUMNS, "error"], len(listing))
    del cached  # the columnar cache: kept rows are in ``facts`` now
    warnings = [_save_cache(cache_file, listing["path"], sizes, mtimes, facts)] if cache_file and len(todo) else []
    manifest, bad = _assemble(listing, facts)
    unreadable = _problem_frame([*problems, *link_problems, *bad])
    extras = found.assign(path=opened) if inspector is not None else pd.DataFrame()
    return ScanResult(ref, manifest, unreadable, time.perf_counter() - started, len(todo), extras,
                      [w for w in warnings if w])  # fmt: skip


def _listing(ref: DatasetRef) -> tuple[pd.DataFrame, list[Problem]]:
    """The entries as a table (path, label, split): three columns, not one object per image."""
    entries, problems = list_entries(ref)
    columns = {c: [getattr(e, c) for e in entries] for c in ("path", "label", "split")}
    return pd.DataFrame(columns, columns=["path", "label", "split"], dtype=str), problems


def require_labels(scan: ScanResult) -> None:
    """Refuse a dataset whose images have no labels (a flat folder): training needs classes.

    Raises:
        DatasetError: every usable image is unlabelled.
    """
    if len(scan.manifest) and scan.n_unlabelled == len(scan.manifest):
        raise DatasetError(
            f"this dataset has no labels: its {scan.n_unlabelled} images lie directly in {scan.ref.display}, "
            "not in one folder per class; to train, put each class's images in a folder named after the class "
            "(or give a CSV of image,label)"
        )


def _stat_entries(
    root: Path, paths: Sequence[str], reach: tuple[Path, ...]
) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """(size, mtime_ns) per path, -1 where it cannot be used: paths that lead out of ``reach`` and vanished files
    become problems."""
    folder_inside: dict[Path, bool] = {}  # one realpath per folder, not per file: cheap on 100k-image rescans
    sizes, mtimes = np.full(len(paths), -1, np.int64), np.full(len(paths), -1, np.int64)
    problems: list[Problem] = []
    for k, path in enumerate(paths):
        full = root / path
        outside = _outside_reason(full, reach, folder_inside)
        if outside:
            problems.append(Problem(path, outside))
            continue
        try:
            st = full.stat()
        except OSError as exc:
            reason = f"broken link ({exc.strerror})" if full.is_symlink() else f"cannot read ({exc.strerror})"
            problems.append(Problem(path, reason))
            continue
        sizes[k], mtimes[k] = st.st_size, st.st_mtime_ns
    return sizes, mtimes, problems


def _outside_reason(full: Path, reach: tuple[Path, ...], folder_inside: dict[Path, bool]) -> str:
    """Why ``full`` leads out of ``reach`` ("" if it does not): the same rule as ``Workspace.confine``.

    Folder and JSON listings never enter linked folders, but a CSV may name ``linked/x.jpg``, so the folder is
    checked as well as the file. A link that stays inside the reach (another allowed folder) is followed.
    """
    if full.parent not in folder_inside:
        folder_inside[full.parent] = _inside(real(full.parent), reach)
    if not folder_inside[full.parent]:
        return FOLDER_OUTSIDE
    if full.is_symlink() and not _inside(real(full), reach):
        return LINK_OUTSIDE  # where it points is not the page's to show
    return ""


def _inside(resolved: Path, reach: tuple[Path, ...]) -> bool:
    return any(resolved.is_relative_to(folder) for folder in reach)


def inspect_many(
    paths: Sequence[str],
    *,
    root: Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    inspector: Inspector | None = None,
) -> pd.DataFrame:
    """Facts (or an ``error`` reason) for each path (under ``root`` when given), one row each, in order; in
    parallel (``map_chunks``) when there are many.

    Chunks are made as the workers take them and their rows become a small table as they arrive: a dict per
    image for 200,000 images is over 1 GB, their absolute paths alone 20 MB.
    """
    run = inspector or _inspect_chunk
    n_workers = min(workers or usable_cores(), max(1, len(paths) // PER_WORKER_MIN))
    size = max(32, min(256, len(paths) // (n_workers * 8))) if n_workers > 1 else 100
    frame = collect(map_chunks(run, path_chunks(paths, size, root), n_workers, "scan"), len(paths), progress)
    return frame.reindex(columns=list(dict.fromkeys([*FACT_COLUMNS, "error", *frame.columns])))


def path_chunks(paths: Sequence[str], size: int, root: Path | None = None) -> Iterator[list[str]]:
    """``paths`` (a list or a Series) in chunks of ``size``, made one at a time, joined to ``root`` if given."""
    prefix = f"{root}{os.sep}" if root is not None else ""
    for start in range(0, len(paths), size):
        part = (
            paths.iloc[start : start + size].tolist() if isinstance(paths, pd.Series) else paths[start : start + size]
        )
        yield [prefix + p for p in part]


def collect(results: Iterable[list[dict]], total: int, progress: Progress | None = None) -> pd.DataFrame:
    """One table from chunks of per-file dicts, each chunk made a table as it arrives (see ``records_frame``)."""
    frames: list[pd.DataFrame] = []
    done = 0
    for chunk_result in results:
        frames.append(records_frame(chunk_result))
        done += len(chunk_result)
        if progress:
            progress(done, total)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def records_frame(records: list[dict]) -> pd.DataFrame:
    """A table of ``records``; an integer column with gaps (a file that failed) is nullable Int64, not float64,
    whose 53 bits would round a 64-bit perceptual hash."""
    frame = pd.DataFrame.from_records(records)
    for col in frame.columns:
        if frame[col].dtype == np.float64 and frame[col].isna().any():
            values = [r.get(col) for r in records]
            if any(isinstance(v, int) and not isinstance(v, bool) for v in values):
                frame[col] = pd.array(values, dtype="Int64")
    return frame


def map_chunks(run: Callable[[Sequence[str]], list], chunks: Iterable, workers: int, name: str) -> Iterator[list]:
    """``run`` on each chunk, results in order: on forked worker processes when this process runs no other thread
    (the command line), else on threads (a Streamlit server runs many: forking one is unsafe).

    Decoding releases the GIL but Pillow's header parsing and the per-image Python do not: on 2 idle cores two
    threads reached 1.3-1.7x, two forked processes 1.9x. A forked worker starts in milliseconds and imports
    nothing (spawned ones re-import the main script: 0.5-1 s each). At most WINDOW chunks per worker are in
    flight (``Executor.map`` would take every chunk at once), so neither the chunks nor their results pile up.
    """
    chunks = iter(chunks)
    first = list(itertools.islice(chunks, 2))
    chunks = itertools.chain(first, chunks)
    if workers <= 1 or len(first) <= 1:
        yield from map(run, chunks)
        return
    pool: Executor
    if _can_fork(run):
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    with pool:
        pending: collections.deque[Future] = collections.deque()
        for chunk in chunks:
            pending.append(pool.submit(run, chunk))
            if len(pending) >= WINDOW * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _can_fork(run: Callable) -> bool:
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        pickle.dumps(run)  # what a worker process is sent (a closure cannot be)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def _inspect_chunk(paths: Sequence[str]) -> list[dict]:
    return [_inspect_one(path) for path in paths]


def _inspect_one(path: str) -> dict:
    try:
        info = inspect_image(path)
    except ImageError as exc:
        return {"error": exc.reason}
    return {"width": info.width, "height": info.height, "mode": info.mode, "format": info.format,
            "frames": info.frames, "bytes": info.bytes, "error": ""}  # fmt: skip


def _save_cache(cache_file: Path, paths: pd.Series, sizes: np.ndarray, mtimes: np.ndarray, facts: pd.DataFrame) -> str:
    """Write the cache; on a full disk the scan still answers, and says its cache was not saved ("" if it was)."""
    return cache_write(lambda: filecache.save_rows(cache_file, CACHE_COLUMNS, paths, sizes, mtimes, facts),
                       cache_file.parent, "the scan was not cached: the next scan opens every file again")  # fmt: skip


def cache_write(write: Callable[[], object], folder: Path, what: str) -> str:
    """Run ``write`` (a cache's); "" when done, the reason when a full disk refused it (a cache is optional)."""
    try:
        write()
    except Exception as exc:  # pyarrow reports a short write with its own exception types
        full = write_failure(exc, folder, what)
        if full is None:
            raise
        return str(full)
    return ""


def _assemble(listing: pd.DataFrame, facts: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """The manifest (the entries whose file opened, with their facts) and a problem per file that did not."""
    manifest, failed = filecache.with_values(listing, facts)
    manifest = manifest.astype(
        {"width": "int64", "height": "int64", "frames": "int64", "bytes": "int64", "mode": "str", "format": "str"}
    )  # the same whether the facts were cached or new
    return manifest[MANIFEST_COLUMNS], [Problem(p, r) for p, r in zip(failed["path"], failed["reason"], strict=True)]


def _problem_frame(problems: Sequence[Problem]) -> pd.DataFrame:
    frame = pd.DataFrame([{"path": p.path, "reason": p.reason} for p in problems], columns=["path", "reason"])
    return frame.sort_values("path", kind="stable").reset_index(drop=True)
