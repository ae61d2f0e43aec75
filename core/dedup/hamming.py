"""All pairs of 64-bit hashes within a Hamming distance: ``near_pairs``, without an all-pairs Python loop.

Two exact methods, chosen by a cost estimate (both return the same pairs):

* **tiled brute force**: XOR + ``np.bitwise_count`` over the upper triangle in tiles of ``ROW_BLOCK`` x
  ``COL_BLOCK`` hashes, so memory stays a few MiB per thread whatever n is. ~200 M pairs/s per core: 20k
  hashes take about a second, but 1M would take ~40 core-minutes.
* **multi-index hashing** (Norouzi et al.): cut the 64 bits into m bands. If two hashes differ in at most T
  bits, one band differs in at most r = T // m bits (pigeonhole: m * (r + 1) > T). So for each band, sort the
  hashes by band value and look up, for each hash, the buckets whose band value is within r bits of its own
  (every XOR mask of <= r bits). Only those candidates get the full popcount. A pair found in an earlier band
  is skipped in later ones, so each pair comes out once. With 21-bit bands, 1M random hashes at T = 8 give a few
  hundred million candidates instead of 5e11 pairs.

Work is spread over threads (numpy's ufuncs release the GIL); candidate batches are cut to ``MAX_BATCH`` so
memory is bounded by the batch size (plus the pairs found), not by n squared.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from core.common.cpu import usable_cores
from core.common.errors import DedupError

BITS = 64
ROW_BLOCK = 256
COL_BLOCK = 4096  # 256 x 4096 x 8 bytes = 8 MiB of XOR per thread: numpy overhead amortised (8192: slower, 2x memory)
# Candidate pairs checked at once in multi-index search. 190,814 hashes of the scale bench at T = 10: 2**21 traced
# 77 MiB at peak (3.3 s), 2**19 57 MiB (3.2 s), 2**18 44 MiB (2.9 s): smaller batches cost no time at this size.
MAX_BATCH = 1 << 18
DIRECT_TABLE_BITS = 24  # bands up to this wide get a direct bucket table (2**24 int32 = 64 MiB at most)
# Approximate costs (ns per operation, one core of the 2-core VM), used only to choose the method: one brute-force
# pair, one hash looked up in one band for one XOR mask, one multi-index candidate checked. With them the estimates
# came within ~2x of measured runs (20k brute force ~0.9 s; 100k multi-index ~1.1 s; 1M ~30 s on a busy machine).
_NS_PAIR, _NS_LOOKUP, _NS_CANDIDATE = 5.0, 15.0, 25.0

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def near_pairs(hashes: np.ndarray, threshold: int, *, workers: int | None = None, method: str = "auto") -> Pairs:
    """Every pair (i < j) of ``hashes`` whose Hamming distance is at most ``threshold``.

    Args:
        hashes: 1-D array of 64-bit hashes (uint64, or int64 holding the same bits).
        threshold: largest distance reported, 0..64.
        workers: threads; default one per usable core.
        method: "auto" (the cheaper by estimate), "brute" or "mih".

    Returns:
        (i, j, dist): int64, int64 and uint8 arrays, sorted by (i, j).

    Raises:
        DedupError: threshold outside 0..64 or an unknown method.
    """
    h = _as_uint64(hashes)
    _check_args(threshold, method)
    if len(h) < 2:
        return _empty()
    plan = choose_plan(len(h), threshold) if method == "auto" else method
    if plan == "mih":
        plan = choose_plan(len(h), threshold, brute_allowed=False)
    n_workers = max(1, workers or usable_cores())
    tasks = _brute_tasks(h, threshold) if plan == "brute" else _mih_tasks(h, threshold, plan)
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="hamming") as pool:
        parts = list(pool.map(lambda task: task(), tasks))
    return _sorted_pairs(parts)


def _as_uint64(hashes: np.ndarray) -> np.ndarray:
    h = np.asarray(hashes)
    if h.ndim != 1:
        raise DedupError(f"hashes must be a 1-D array, got shape {h.shape}")
    if h.dtype == np.int64:
        return np.ascontiguousarray(h).view(np.uint64)
    return np.ascontiguousarray(h, dtype=np.uint64)


def _check_args(threshold: int, method: str) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer) or not 0 <= threshold <= BITS:
        raise DedupError(f"threshold must be a whole number of bits from 0 to {BITS}, got {threshold!r}")
    if method not in ("auto", "brute", "mih"):
        raise DedupError(f"unknown search method {method!r}; choose auto, brute or mih")


def _empty() -> Pairs:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)


def _concat(parts: list[Pairs]) -> Pairs:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _empty()
    i, j, d = (np.concatenate(cols) for cols in zip(*parts, strict=True))
    return i.astype(np.int64), j.astype(np.int64), d.astype(np.uint8)


def _sorted_pairs(parts: list[Pairs]) -> Pairs:
    i, j, d = _concat(parts)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


# --------------------------------------------------------------------------------------------------------------
# Choosing the method


@dataclass(frozen=True)
class MihPlan:
    """Multi-index search with ``len(widths)`` bands of these bit widths, each searched within ``radius`` bits."""

    widths: tuple[int, ...]
    radius: int

    @property
    def n_masks(self) -> int:
        return sum(math.comb(max(self.widths), k) for k in range(self.radius + 1))

    def cost(self, n: int) -> float:
        """Estimated ns for n uniformly spread hashes: lookups plus candidates, per band and XOR mask."""
        per_mask = n * _NS_LOOKUP + n * n / 2 ** (min(self.widths) + 1) * _NS_CANDIDATE
        return len(self.widths) * self.n_masks * per_mask


def mih_plan(n_bands: int, threshold: int) -> MihPlan:
    """Bands as equal as possible (64 = 22 + 21 + 21 for 3), radius T // m so that m * (r + 1) > T."""
    base, extra = divmod(BITS, n_bands)
    return MihPlan(tuple(base + (k < extra) for k in range(n_bands)), threshold // n_bands)


def choose_plan(n: int, threshold: int, *, brute_allowed: bool = True) -> str | MihPlan:
    """ "brute" or the cheapest MihPlan for n hashes at ``threshold``, by the cost model above."""
    # m > T + 1 bands never beat m = T + 1 (radius 0 either way, narrower bands); wide bands with a radius
    # would need a searchsorted per XOR mask: too slow to consider.
    plans = [mih_plan(m, threshold) for m in range(1, min(threshold + 1, 8) + 1)]
    best = min((p for p in plans if max(p.widths) <= DIRECT_TABLE_BITS or p.radius == 0), key=lambda p: p.cost(n))
    if brute_allowed and n * (n - 1) / 2 * _NS_PAIR <= best.cost(n):
        return "brute"
    return best


# --------------------------------------------------------------------------------------------------------------
# Tiled brute force


def _brute_tasks(h: np.ndarray, threshold: int) -> Iterator:
    for start in range(0, len(h), ROW_BLOCK):
        yield lambda start=start: _brute_rows(h, threshold, start)


def _brute_rows(h: np.ndarray, threshold: int, start: int) -> Pairs:
    """Pairs (i, j > i) with i in one row block, comparing against column tiles to bound memory."""
    rows = h[start : start + ROW_BLOCK, None]
    found_i, found_j, found_d = [], [], []
    for col in range(start, len(h), COL_BLOCK):
        dist = np.bitwise_count(np.bitwise_xor(rows, h[None, col : col + COL_BLOCK]))
        ii, jj = np.nonzero(dist <= threshold)
        ii, jj = ii + start, jj + col
        keep = jj > ii  # the diagonal tile holds each pair twice and every hash against itself
        found_i.append(ii[keep])
        found_j.append(jj[keep])
        found_d.append(dist[ii[keep] - start, jj[keep] - col])
    return _concat(list(zip(found_i, found_j, found_d, strict=True)))


# --------------------------------------------------------------------------------------------------------------
# Multi-index hashing


@dataclass
class _Band:
    """One band's values, the hashes sorted by them, and where each value's bucket starts in that order."""

    shift: int
    width: int
    order: np.ndarray  # hash indices sorted by band value
    values: np.ndarray  # band values in that order
    starts: np.ndarray | None  # direct table: bucket of value v is order[starts[v]:starts[v + 1]]

    @classmethod
    def build(cls, h: np.ndarray, shift: int, width: int) -> _Band:
        values = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(values, kind="stable")
        starts = None
        if width <= DIRECT_TABLE_BITS:
            starts = np.zeros((1 << width) + 1, np.int64)
            np.cumsum(np.bincount(values, minlength=1 << width), out=starts[1:])
        return cls(shift, width, order, values[order], starts)

    def bucket(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) in sorted order of the bucket holding each key (count 0 if none)."""
        if self.starts is not None:
            start = self.starts[keys]
            return start, self.starts[keys + 1] - start
        start = np.searchsorted(self.values, keys, "left")
        return start, np.searchsorted(self.values, keys, "right") - start


def _mih_tasks(h: np.ndarray, threshold: int, plan: MihPlan) -> Iterator:
    shifts = np.cumsum((0, *plan.widths[:-1]))
    bands = [_Band.build(h, int(s), w) for s, w in zip(shifts, plan.widths, strict=True)]
    for b, band in enumerate(bands):
        for mask in _masks(band.width, plan.radius):
            yield lambda band=band, mask=mask, earlier=bands[:b]: _mih_join(h, threshold, plan, band, mask, earlier)


def _masks(width: int, radius: int) -> Iterator[int]:
    """Every ``width``-bit XOR mask with at most ``radius`` bits set, 0 first."""
    for k in range(radius + 1):
        for bits in combinations(range(width), k):
            yield sum(1 << b for b in bits)


def _mih_join(h: np.ndarray, threshold: int, plan: MihPlan, band: _Band, mask: int, earlier: list[_Band]) -> Pairs:
    """Pairs whose band values differ by exactly ``mask``, verified on all 64 bits, each found once."""
    positions, start, count = _probe(band, mask)
    found: list[Pairs] = []
    for lo, hi in _batches(count):
        x, y = _expand(positions[lo:hi], start[lo:hi], count[lo:hi])
        x, y = band.order[x], band.order[y]
        xor = h[x] ^ h[y]
        dist = np.bitwise_count(xor)
        keep = dist <= threshold
        for other in earlier:  # found already when some earlier band was within the radius
            keep &= _band_distance(xor, other) > plan.radius
        x, y = x[keep], y[keep]
        found.append((np.minimum(x, y), np.maximum(x, y), dist[keep].astype(np.uint8)))
    return _concat(found)


def _probe(band: _Band, mask: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each sorted position, the partner bucket (start, count) whose value is its own XOR ``mask``.

    Mask 0 pairs a hash with those after it in its own bucket; any other mask only probes from values whose
    highest masked bit is 0, so each pair of buckets is joined once.
    """
    positions = np.arange(len(band.values))
    if mask == 0:
        start, count = band.bucket(band.values)
        end = start + count
        return positions, positions + 1, end - positions - 1
    top = np.int64(1 << (mask.bit_length() - 1))
    positions = positions[(band.values & top) == 0]
    start, count = band.bucket(band.values[positions] ^ np.int64(mask))
    has = count > 0
    return positions[has], start[has], count[has]


def _batches(count: np.ndarray) -> Iterator[tuple[int, int]]:
    """Slices of ``count`` whose sums stay near MAX_BATCH (one huge bucket gets a batch of its own)."""
    ends = np.cumsum(count)
    lo = 0
    while lo < len(count):
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + MAX_BATCH, "right")))
        yield lo, hi
        lo = hi


def _expand(x: np.ndarray, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (x[k], start[k] + t) for t in range(count[k]), without a Python loop."""
    total = int(count.sum())
    first = np.cumsum(count) - count
    offset = np.arange(total) - np.repeat(first, count)
    return np.repeat(x, count), np.repeat(start, count) + offset


def _band_distance(xor: np.ndarray, band: _Band) -> np.ndarray:
    return np.bitwise_count((xor >> np.uint64(band.shift)) & np.uint64((1 << band.width) - 1))


def brute_force_pairs(hashes: np.ndarray, threshold: int) -> Pairs:
    """The plain reference: every pair compared (n x n in memory; for tests and small n only)."""
    h = _as_uint64(hashes)
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(dist <= threshold, k=1))
    return i.astype(np.int64), j.astype(np.int64), dist[i, j].astype(np.uint8)
