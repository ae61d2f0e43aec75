"""Duplicate groups in a dataset: exact copies, verified near copies, label conflicts and split leaks.

The pipeline (``find_duplicates``):

1. scan the dataset (``core.datasets.scan``, cached) and fingerprint every image once (``core.dedup.fingerprints``, cached);
2. files with the same exact content key are copies; one representative of each goes on;
3. ``core.dedup.hamming.near_pairs`` finds representative pairs whose perceptual hashes differ in at most
   ``threshold + borderline`` bits; each candidate is **verified on pixels** (``verify_pairs``): the 16x16
   gray thumbnails must correlate (so re-encoded, resized and brightened copies pass) and the mean colours
   must agree, so flat or low-texture pictures that merely share a hash are not called copies;
4. exact copies and verified pairs within ``threshold`` are joined into groups (connected components, i.e.
   union-find); each group says whether it is exact or near, which labels and splits it holds, and whether
   that is a label ``conflict`` or a train/val/test ``leak``.

The candidate pairs around the threshold are kept as ``borderline`` so a page can show what one bit more or
less would add or drop; the leak report per split pair (``leakage``) is a function of its own for other pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.common.errors import DedupError
from core.common.naming import natural_key
from core.datasets.layouts import one_line
from core.datasets.scan import UNSPLIT, ScanResult, scan_dataset
from core.datasets.sources import DatasetRef
from core.dedup.fingerprints import (
    HASH_METHODS,
    HashTable,
    check_method,
    fingerprint_cache,
    hash_dataset,
    scan_inspector,
)
from core.dedup.hamming import BITS, near_pairs
from core.dedup.leakage import SPLIT_ORDER, LeakageReport, leakage_from_members
from core.dedup.tables import Borderline
from core.dedup.verify import DEFAULT_MIN_CORRELATION, verify_pairs

LOOK_ALIKE_COLUMNS = ["path_a", "path_b", "distance", "correlation", "residual"]
GRAY_SPREAD = 4.0  # colourfulness (mean max-min of R, G, B) under which an image counts as gray (quality's default)

Progress = Callable[[int, int], None]
# Default thresholds, in bits of 64. Tuned on bench.bench_scan's photo-like generator (1,000 base images, half of
# them with a copy: byte copy, JPEG re-encode at q50-95, 0.5x-2x resize, +-15% brightness, lossless PNG, or
# resize + brightness + re-encode; 30% of copies under another class). phash: every true pair within 6 bits (95%
# within 4), the closest distinct pair 12 bits apart, so 8 leaves a margin both ways (phash distances are always
# even: its bits split at the median, so 8 and 9 are the same). dhash: true pairs <= 6, distinct >= 10 -> 8.
# whash and average_hash: 99% of true pairs <= 4-5 bits but distinct pairs from 4 bits up (smooth pictures
# look alike to them), so 6, and pixel verification does the rest. The acceptance test checks the phash default
# on tests/imagefactory.py's different generator (recall and precision >= 95%); 1M random hashes at 8 bits
# search in ~30 s with 21-bit multi-index bands, at 10 bits it would take minutes.
DEFAULT_THRESHOLDS = {"phash": 8, "dhash": 8, "whash": 6, "average_hash": 6}


@dataclass
class DedupConfig:
    """Settings of one duplicate search; every field has a default that works on ordinary photos."""

    method: str = "phash"  # perceptual hash: phash (robust to resizing and re-encoding), dhash, whash, average_hash
    threshold: int | None = None  # max differing hash bits for a near copy; None: the method's tuned default
    verify: bool = True  # check every near pair on pixels, so images that only share a hash are not grouped
    min_correlation: float = DEFAULT_MIN_CORRELATION  # thumbnail correlation a verified pair needs
    borderline: int = 2  # also report candidate pairs this many bits either side of the threshold
    workers: int | None = None  # decoding and search threads; None: one per usable core

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[self.method]
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or not 0 <= self.threshold < BITS:
            raise DedupError(f"threshold must be a whole number of bits from 0 to {BITS - 1}, got {self.threshold!r}")
        if not -1.0 <= self.min_correlation <= 1.0:
            raise DedupError(f"min_correlation must be between -1 and 1, got {self.min_correlation}")
        if not isinstance(self.borderline, int) or not 0 <= self.borderline <= 8:
            raise DedupError(f"borderline must be a whole number of bits from 0 to 8, got {self.borderline!r}")
        if self.workers is not None and self.workers < 1:
            raise DedupError(f"workers must be at least 1, got {self.workers}")

    @property
    def limit(self) -> int:
        """The search radius: the threshold plus the borderline margin."""
        assert self.threshold is not None
        return min(self.threshold + self.borderline, BITS)


# --------------------------------------------------------------------------------------------------------------
# The result


@dataclass
class DedupResult:
    """Everything a page or the CLI shows about the duplicates of one dataset.

    ``groups``: one row per group (group, size, kind, labels, splits, conflict, leak, distance, min_distance);
    ``members``: one row per image in a group (group, path, label, split, width, height, content);
    ``borderline``: candidate pairs near the threshold (path_a, path_b, labels, distance, correlation, residual,
    verified, look_alike, counted); ``look_alikes``: pairs within the threshold that resemble each other but are
    not the same picture (path_a, path_b, distance, correlation, residual), never grouped nor counted as leaks;
    ``leakage``: see ``LeakageReport``; ``failed``: images that could not be fingerprinted.
    """

    ref: DatasetRef
    config: DedupConfig
    scan: ScanResult
    hashes: HashTable
    groups: pd.DataFrame
    members: pd.DataFrame
    borderline: pd.DataFrame
    leakage: LeakageReport
    seconds: float
    n_candidates: int = 0  # near pairs the hash search proposed (up to the threshold + borderline margin)
    look_alikes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LOOK_ALIKE_COLUMNS))

    @property
    def n_redundant(self) -> int:
        """Images that keeping one per group would remove."""
        return int((self.groups["size"] - 1).sum()) if len(self.groups) else 0

    @property
    def near_threshold(self) -> Borderline:
        """The borderline pairs counted by distance: what one or two bits more or less would change."""
        assert self.config.threshold is not None
        return Borderline(self.config.threshold, self.config.borderline, self.borderline)

    @property
    def failed(self) -> pd.DataFrame:
        """Unreadable files: the scan's and those that failed to decode while hashing (path, reason)."""
        return pd.concat([self.scan.unreadable, self.hashes.failed], ignore_index=True)

    def summary(self, cleaned: dict | None = None) -> dict[str, object]:
        """The ``dedup --json`` object of the command-line contract (plus ``cleaned`` after ``--apply``)."""
        files = self.members.groupby("group", sort=False)["path"].apply(list)
        groups = [{"files": files[g.group], "kind": g.kind, "labels": list(g.labels), "splits": list(g.splits),
                   "conflict": bool(g.conflict), "leak": bool(g.leak), "distance": int(g.distance),
                   "min_distance": int(g.min_distance)} for g in self.groups.itertuples()]  # fmt: skip
        out: dict[str, object] = {
            "dataset": self.ref.spec,
            "n_images": len(self.hashes.table),
            "groups": groups,
            "n_groups": len(groups),
            "n_redundant": self.n_redundant,
            "n_conflicts": int(self.groups["conflict"].sum()) if len(self.groups) else 0,
            "n_leaks": int(self.groups["leak"].sum()) if len(self.groups) else 0,
            "leakage": self.leakage.to_dict(),
            "n_look_alikes": len(self.look_alikes),
            "look_alikes": [
                {
                    "files": [r.path_a, r.path_b],
                    "distance": int(r.distance),
                    "correlation": round(float(r.correlation), 3),
                    "residual": round(float(r.residual), 2),
                }
                for r in self.look_alikes.itertuples()
            ],  # fmt: skip
            "borderline": self.near_threshold.to_dict(),
            "settings": {**asdict(self.config), "search_limit": self.config.limit},
            "unreadable": self.failed.to_dict("records"),
            "seconds": round(self.seconds, 3),
            "n_opened": self.hashes.n_opened,
            **({"warnings": self.hashes.warnings} if self.hashes.warnings else {}),
        }
        if cleaned is not None:
            out["cleaned"] = cleaned
        return out

    def text_lines(self, max_groups: int = 20) -> list[str]:
        """A human-readable report for the command line without --json."""
        lines = [f"{len(self.groups)} duplicate groups, {self.n_redundant} redundant images among "
                 f"{len(self.hashes.table)} ({self.config.method}, threshold {self.config.threshold})"]  # fmt: skip
        files = self.members.groupby("group", sort=False)["path"].apply(list)
        for g in self.groups.head(max_groups).itertuples():
            flags = "".join([" CONFLICT" if g.conflict else "", " LEAK" if g.leak else ""])
            lines.append(f"  [{g.kind}, {g.distance} bits]{flags} {', '.join(map(one_line, files[g.group]))}")
        if len(self.groups) > max_groups:
            lines.append(f"  ... and {len(self.groups) - max_groups} more groups (--json lists all)")
        lines += [f"leakage {key}: {value['n_images']} images" for key, value in self.leakage.to_dict().items()]
        if len(self.look_alikes):
            lines.append(f"{len(self.look_alikes)} look-alike pairs: similar pictures that are not copies "
                         "(not grouped, not counted as leaks; --json lists them)")  # fmt: skip
        lines.append(self.near_threshold.text_line())
        lines += [f"unreadable: {one_line(r.path)}: {r.reason}" for r in self.failed.itertuples()]
        lines += [f"warning: {w}" for w in self.hashes.warnings]
        return lines


# --------------------------------------------------------------------------------------------------------------
# The pipeline


def find_duplicates(
    ref: DatasetRef,
    cache_dir: Path | None = None,
    config: DedupConfig | None = None,
    *,
    scan: ScanResult | None = None,
    progress: Progress | None = None,
) -> DedupResult:
    """Scan (unless ``scan`` is given), fingerprint and group the duplicates of ``ref``.

    Args:
        ref: the dataset.
        cache_dir: ``Workspace.cache``: the scan and the fingerprints are cached there; None caches nothing.
        config: search settings (default ``DedupConfig()``).
        scan: an earlier ``scan_dataset`` result of ``ref``, to skip the (cached, fast) rescan.
        progress: called with (done, total) by the scan, then by the fingerprinting pass (each from 0).
    """
    started = time.perf_counter()
    config = config or DedupConfig()
    # A scan that has to open files fingerprints them in the same decode (nothing is decoded twice).
    inspector = scan_inspector(config.method)
    own_scan = scan is None
    scan = scan or scan_dataset(ref, cache_dir, workers=config.workers, progress=progress, inspector=inspector)
    hashes = hash_dataset(scan, cache_dir, method=config.method, workers=config.workers, progress=progress)
    if own_scan:  # its fingerprints went into ``hashes``; the result keeps the scan, not a second copy of them
        scan = replace(scan, extras=pd.DataFrame())
    return group_duplicates(hashes, scan, config, started=started)


def group_duplicates(
    hashes: HashTable, scan: ScanResult, config: DedupConfig, *, started: float | None = None
) -> DedupResult:
    """Groups from fingerprints already computed (fast: a threshold slider can call this on every change)."""
    started = time.perf_counter() if started is None else started
    table = hashes.table
    exact_id, reps = _exact_ids(table)
    cand = _candidates(hashes, reps, config)
    edges = cand[(cand["distance"] <= config.threshold) & cand["verified"]]
    component = _components(exact_id, reps, edges)
    members, groups = _describe_groups(table, component, exact_id, edges)
    borderline = _borderline(table, cand, config)
    leakage = leakage_from_members(members, hashes)
    alike = cand[cand["look_alike"] & (cand["distance"] <= config.threshold)]
    look_alikes = pd.DataFrame({"path_a": table["path"].to_numpy()[alike["i"]], "path_b": table["path"].to_numpy()[alike["j"]],
                                **{c: alike[c].to_numpy() for c in ("distance", "correlation", "residual")}})  # fmt: skip
    seconds = time.perf_counter() - started
    return DedupResult(scan.ref, config, scan, hashes, groups, members, borderline, leakage, seconds, len(cand),
                       look_alikes)  # fmt: skip


def _exact_ids(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Exact-copy id of each row (same content key, same id) and the first row of each id (its representative)."""
    exact_id, _ = pd.factorize(table["content"])
    _, reps = np.unique(exact_id, return_index=True)
    return exact_id.astype(np.int64), reps.astype(np.int64)


def _candidates(hashes: HashTable, reps: np.ndarray, config: DedupConfig) -> pd.DataFrame:
    """Representative pairs within the search limit, as rows of the table, verified on pixels."""
    i, j, dist = near_pairs(hashes.hashes[reps], config.limit, workers=config.workers)
    i, j = reps[i], reps[j]
    table = hashes.table
    sides = np.minimum(table["width"].to_numpy(), table["height"].to_numpy())
    gray = table["colourfulness"].to_numpy(float) < GRAY_SPREAD
    # Only the rows in a pair are compared: their thumbnails, not all 200,000 (51 MB), are gathered.
    rows, at = np.unique(np.concatenate([i, j]), return_inverse=True)
    check = verify_pairs(at[: len(i)], at[len(i) :], hashes.thumbs_at(rows), hashes.colours[rows],
                         config.min_correlation, sides=sides[rows], gray=gray[rows])  # fmt: skip
    verified = check.verified if config.verify else np.ones(len(i), bool)
    return pd.DataFrame({"i": i, "j": j, "distance": dist.astype(int), "correlation": check.correlation,
                         "residual": check.residual, "verified": verified,
                         "look_alike": check.look_alike & ~verified})  # fmt: skip


def _components(exact_id: np.ndarray, reps: np.ndarray, edges: pd.DataFrame) -> np.ndarray:
    """Group number of every row: union of the exact copies and the verified near edges (connected components)."""
    n = len(exact_id)
    rows = np.concatenate([np.arange(n), edges["i"].to_numpy()])
    cols = np.concatenate([reps[exact_id], edges["j"].to_numpy()])  # every row linked to its representative
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1] if n else np.zeros(0, np.int64)


def _describe_groups(
    table: pd.DataFrame, component: np.ndarray, exact_id: np.ndarray, edges: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Members (images in groups of two or more) and one descriptive row per group, biggest groups first."""
    sizes = np.bincount(component) if len(component) else np.zeros(0, np.int64)
    in_group = sizes[component] > 1 if len(component) else np.zeros(0, bool)
    members = table.loc[in_group, ["path", "label", "split", "width", "height", "content"]].copy()
    members.insert(0, "group", component[in_group])
    members["exact_id"] = exact_id[in_group]
    members["rank"] = _natural_rank(members["path"])
    groups = _group_rows(members, component, edges)
    renumber = {g: k for k, g in enumerate(groups["group"])}  # 0.. in the groups' display order
    groups["group"] = groups["group"].map(renumber)
    members["group"] = members["group"].map(renumber)
    members = members.sort_values(["group", "rank"]).drop(columns="rank").reset_index(drop=True)
    return members, groups


def _natural_rank(paths: pd.Series) -> np.ndarray:
    """Position of each path in natural order ("img2" before "img10")."""
    values = paths.tolist()  # a list: pandas' per-item access would cost more than the sort itself
    order = sorted(range(len(values)), key=lambda k: natural_key(values[k]))
    rank = np.empty(len(paths), np.int64)
    rank[order] = np.arange(len(paths))
    return rank


def _group_rows(members: pd.DataFrame, component: np.ndarray, edges: pd.DataFrame) -> pd.DataFrame:
    """One descriptive row per group, biggest first, then by first path. One pass in Python over the members
    (pandas per-group calls cost ~2 ms a group: seconds for thousands of groups)."""
    edge_group = component[edges["i"].to_numpy()] if len(edges) else np.zeros(0, np.int64)
    dist = edges["distance"].groupby(edge_group).agg(["max", "min"]) if len(edges) else pd.DataFrame()
    near = (
        {int(g): (int(hi), int(lo)) for g, hi, lo in zip(dist.index, dist["max"], dist["min"], strict=True)}
        if len(dist)
        else {}
    )
    collected: dict[int, dict[str, list]] = {}
    for group, label, split, exact, rank in zip(members["group"], members["label"], members["split"],
                                                members["exact_id"], members["rank"], strict=True):  # fmt: skip
        entry = collected.setdefault(int(group), {"labels": [], "splits": [], "exact": [], "rank": []})
        for key, value in (("labels", label), ("splits", split), ("exact", exact), ("rank", rank)):
            entry[key].append(value)
    rows = [_group_row(g, entry, near.get(g)) for g, entry in collected.items()]
    columns = ["group", "size", "kind", "labels", "splits", "conflict", "leak", "distance", "min_distance"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows).sort_values(["size", "first"], ascending=[False, True], kind="stable")
    return frame[columns].reset_index(drop=True)


def _group_row(group: int, entry: dict[str, list], near: tuple[int, int] | None) -> dict[str, object]:
    """One group's description; distances are those of the near pairs that joined it (0 for exact copies)."""
    present = set(entry["splits"])
    labels = sorted(set(entry["labels"]), key=natural_key)
    has_exact_pair = len(set(entry["exact"])) < len(entry["exact"])
    return {
        "group": group,
        "size": len(entry["labels"]),
        "kind": "exact" if len(set(entry["exact"])) == 1 else "near",
        "labels": labels,
        "splits": [s for s in SPLIT_ORDER if s in present] + ([UNSPLIT] if "" in present else []),
        "conflict": len(labels) > 1,
        "leak": len(present & set(SPLIT_ORDER)) > 1,
        "distance": near[0] if near else 0,
        "min_distance": 0 if has_exact_pair or not near else near[1],
        "first": min(entry["rank"]),
    }


def _borderline(table: pd.DataFrame, cand: pd.DataFrame, config: DedupConfig) -> pd.DataFrame:
    """Candidate pairs within ``borderline`` bits of the threshold, nearest first; ``counted`` = grouped now."""
    assert config.threshold is not None
    near = cand.assign(off=(cand["distance"] - config.threshold).abs())
    near = near[near["off"] <= config.borderline].sort_values(["off", "distance", "i", "j"])
    a, b = table.iloc[near["i"]], table.iloc[near["j"]]
    return pd.DataFrame(
        {
            "path_a": a["path"].to_numpy(),
            "path_b": b["path"].to_numpy(),
            "label_a": a["label"].to_numpy(),
            "label_b": b["label"].to_numpy(),
            "distance": near["distance"].to_numpy(),
            "correlation": near["correlation"].to_numpy(),
            "residual": near["residual"].to_numpy(),
            "verified": near["verified"].to_numpy(),
            "look_alike": near["look_alike"].to_numpy(),
            "counted": (near["verified"] & (near["distance"] <= config.threshold)).to_numpy(),
        }
    )


# --------------------------------------------------------------------------------------------------------------
# Leakage across splits (the report itself: core.dedup.leakage)


def leakage_report(
    ref: DatasetRef, cache_dir: Path | None, config: DedupConfig | None = None, *, scan: ScanResult | None = None
) -> LeakageReport:
    """Copies across train/val/test for a dataset; quick once the scan and the fingerprints are cached."""
    return find_duplicates(ref, cache_dir, config, scan=scan).leakage


def cached_leakage_report(ref: DatasetRef, cache_dir: Path, *, scan: ScanResult | None = None) -> LeakageReport | None:
    """The leak report of ``ref`` when its fingerprints are cached, else None: a page that shows a score asks
    here, and must never start a long hashing pass."""
    if not fingerprint_cache(ref, cache_dir).is_file():
        return None
    return leakage_report(ref, cache_dir, scan=scan)


def known_methods() -> list[str]:
    return list(HASH_METHODS)
