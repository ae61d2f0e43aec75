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

import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from core.common import filecache
from core.common.cpu import usable_cores
from core.common.diskspace import write_failure
from core.common.errors import DatasetError, ImageError
from core.common.naming import natural_sorted
from core.common.words import SPLITS
from core.datasets.layouts import FOLDER_OUTSIDE, LINK_OUTSIDE, UNLABELLED, Entry, Problem, real
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
UNSPLIT = "unsplit"


@dataclass
class ScanResult:
    """A scanned dataset: the manifest of usable images and the unreadable files with reasons."""

    ref: DatasetRef
    manifest: pd.DataFrame
    unreadable: pd.DataFrame  # columns: path, reason
    seconds: float
    n_opened: int  # files decoded by this scan (0 when everything came from the cache)
    extras: dict[str, dict] = field(default_factory=dict)  # the inspector's results of the files opened, by path
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
    entries, problems = list_entries(ref)
    stats, link_problems = _stat_entries(ref.root, entries, ref.reach)
    cache_file = cache_dir / "manifests" / f"{ref.key}.parquet" if cache_dir else None
    cached = filecache.read_rows(cache_file, CACHE_COLUMNS)
    todo = [e.path for e in entries if e.path in stats and filecache.stale(cached.get(e.path), stats[e.path])]
    found = inspect_many([str(ref.root / p) for p in todo], workers=workers, progress=progress, inspector=inspector)
    opened = dict(zip(todo, found, strict=True))
    facts = {p: opened.get(p) or cached[p] for p in stats}
    warnings = [_save_cache(cache_file, stats, facts)] if cache_file is not None and todo else []
    manifest, bad = _assemble(entries, stats, facts)
    unreadable = _problem_frame([*problems, *link_problems, *bad])
    extras = opened if inspector is not None else {}
    return ScanResult(ref, manifest, unreadable, time.perf_counter() - started, len(todo), extras,
                      [w for w in warnings if w])  # fmt: skip


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
    root: Path, entries: Sequence[Entry], reach: tuple[Path, ...]
) -> tuple[dict[str, tuple[int, int]], list[Problem]]:
    """(size, mtime_ns) per usable path; paths that lead out of ``reach`` and vanished files become problems."""
    folder_inside: dict[Path, bool] = {}  # one realpath per folder, not per file: cheap on 100k-image rescans
    stats: dict[str, tuple[int, int]] = {}
    problems: list[Problem] = []
    for entry in entries:
        full = root / entry.path
        outside = _outside_reason(full, reach, folder_inside)
        if outside:
            problems.append(Problem(entry.path, outside))
            continue
        try:
            st = full.stat()
        except OSError as exc:
            reason = f"broken link ({exc.strerror})" if full.is_symlink() else f"cannot read ({exc.strerror})"
            problems.append(Problem(entry.path, reason))
            continue
        stats[entry.path] = (st.st_size, st.st_mtime_ns)
    return stats, problems


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
    workers: int | None = None,
    progress: Progress | None = None,
    inspector: Inspector | None = None,
) -> list[dict]:
    """Facts (or an ``error`` reason) for each path, in order; in parallel (``map_chunks``) when there are many."""
    run = inspector or _inspect_chunk
    n_workers = min(workers or usable_cores(), max(1, len(paths) // PER_WORKER_MIN))
    size = max(32, min(256, len(paths) // (n_workers * 8))) if n_workers > 1 else 100
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    results: list[dict] = []
    for chunk_result in map_chunks(run, chunks, n_workers, "scan"):
        results.extend(chunk_result)
        if progress:
            progress(len(results), len(paths))
    return results


def map_chunks(run: Callable[[Sequence[str]], list[dict]], chunks: list, workers: int, name: str) -> Iterator[list]:
    """``run`` on each chunk, results in order: on forked worker processes when this process runs no other thread
    (the command line), else on threads (a Streamlit server runs many: forking one is unsafe).

    Decoding releases the GIL but Pillow's header parsing and the per-image Python do not: on 2 idle cores two
    threads reached 1.3-1.7x, two forked processes 1.9x. A forked worker starts in milliseconds and imports
    nothing (spawned ones re-import the main script: 0.5-1 s each).
    """
    if workers <= 1 or len(chunks) <= 1:
        yield from map(run, chunks)
    elif _can_fork(run):
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            yield from pool.map(run, chunks)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
            yield from pool.map(run, chunks)


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


def _save_cache(cache_file: Path, stats: dict[str, tuple[int, int]], facts: dict[str, dict]) -> str:
    """Write the cache; on a full disk the scan still answers, and says its cache was not saved ("" if it was)."""
    rows = [{"path": p, "size": s, "mtime_ns": m, **{c: facts[p].get(c) for c in (*FACT_COLUMNS, "error")}}
            for p, (s, m) in stats.items()]  # fmt: skip
    return cache_write(lambda: filecache.write_table(cache_file, pd.DataFrame(rows, columns=CACHE_COLUMNS)),
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


def _assemble(
    entries: Sequence[Entry], stats: dict[str, tuple[int, int]], facts: dict[str, dict]
) -> tuple[pd.DataFrame, list[Problem]]:
    rows, bad = [], []
    for entry in entries:
        fact = facts.get(entry.path)
        if fact is None:
            continue  # already reported by _stat_entries
        if fact.get("error"):
            bad.append(Problem(entry.path, str(fact["error"])))
            continue
        rows.append({"path": entry.path, "label": entry.label, "split": entry.split,
                     **{c: fact[c] for c in FACT_COLUMNS}})  # fmt: skip
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    for col in ("width", "height", "frames", "bytes"):
        manifest[col] = manifest[col].astype("int64")
    return manifest, bad


def _problem_frame(problems: Sequence[Problem]) -> pd.DataFrame:
    frame = pd.DataFrame([{"path": p.path, "reason": p.reason} for p in problems], columns=["path", "reason"])
    return frame.sort_values("path", kind="stable").reset_index(drop=True)
