"""Scaling tables from measured points: pure arithmetic, no store, no torch.

A *point* is one timed measurement (a stored run of kind ``prep`` or ``train``) with its parallel settings.
Points of one group (a sweep: the same work, only the parallel settings change) and one mode give one table:
per worker count the median time over repeats (with min and max), and

* speedup ``S(n) = T(1) / T(n)``, efficiency ``S(n) / n`` (100% at one worker by definition: the car report
  printed 50% there by dividing by the core count instead);
* the Karp-Flatt serial fraction ``e(n) = (1/S - 1/n) / (1 - 1/n)`` (n > 1): the share of the work that did not
  parallelise, measured; when it grows with n the overhead (communication, contention) grows too;
* an Amdahl fit over all points, ``T(n) = T(1) (f + (1 - f) / n)`` by least squares, with its ceiling 1 / f;
* throughput in images per second.

A group without a one-worker point has no T(1): its speedups are not invented from another group, the table
says so. Points that ran beside other work (another run overlapping in time) or that were resumed are flagged
and left out unless asked for: their times measure the machine's load, not the method.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Point:
    run_id: int
    group: str  # the sweep it belongs to
    kind: str  # "prep" | "train"
    mode: str  # "processes" | "threads" | "ddp" (how the workers run)
    workers: int  # processes, threads or ranks
    threads_per_worker: int
    time_s: float  # the timed section
    images: int  # images processed in that time (for throughput)
    cores: int  # usable cores of the machine it ran on
    started_at: float = 0.0
    ended_at: float = 0.0
    resumed: bool = False

    @property
    def oversubscribed(self) -> bool:
        """More busy threads than cores: the car report's 4x slow-down (each process ran every core's threads)."""
        return self.workers * self.threads_per_worker > self.cores


@dataclass
class Row:
    """One line of a scaling table (one worker count of one group and mode)."""

    group: str
    kind: str
    mode: str
    workers: int
    threads_per_worker: int
    time_s: float  # median over repeats
    time_min: float
    time_max: float
    repeats: int
    speedup: float | None  # None without a one-worker point in the group
    efficiency: float | None
    serial_fraction: float | None  # Karp-Flatt; None at one worker (undefined) or without a baseline
    images_per_s: float
    oversubscribed: bool
    runs: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("group", "kind", "mode", "workers", "threads_per_worker", "time_s",
                "time_min", "time_max", "repeats", "speedup", "efficiency", "serial_fraction", "images_per_s",
                "oversubscribed", "runs")}  # fmt: skip


@dataclass
class Table:
    """The rows of one group and mode, the Amdahl fit over them, and what a reader must know."""

    group: str
    kind: str
    mode: str
    rows: list[Row]
    amdahl_serial: float | None  # fitted f in [0, 1]
    amdahl_ceiling: float | None  # 1 / f: the most speedup any number of workers could give
    notes: list[str]


def speedup(t1: float, tn: float) -> float:
    return t1 / tn


def efficiency(s: float, n: int) -> float:
    return s / n


def karp_flatt(s: float, n: int) -> float | None:
    """The experimentally determined serial fraction; None for one worker (0/0)."""
    if n <= 1:
        return None
    return (1.0 / s - 1.0 / n) / (1.0 - 1.0 / n)


def amdahl_fit(workers: list[int], times: list[float], t1: float) -> float | None:
    """The serial fraction f minimising sum (T(n) - T1 (f + (1 - f) / n))^2, clipped to [0, 1].

    Linear in f: T(n)/T1 - 1/n = f (1 - 1/n), so f = sum(y x) / sum(x x) with x = 1 - 1/n, y = T/T1 - 1/n.
    None when only one-worker points exist (nothing to fit).
    """
    xs = [1.0 - 1.0 / n for n in workers]
    ys = [t / t1 - 1.0 / n for n, t in zip(workers, times, strict=True)]
    denominator = sum(x * x for x in xs)
    if denominator == 0:
        return None
    return min(1.0, max(0.0, sum(x * y for x, y in zip(xs, ys, strict=True)) / denominator))


def flagged(points: list[Point], busy: list[tuple[int, float, float]] = ()) -> dict[int, str]:
    """Why a point's time cannot be trusted: it was resumed, or another point, or another run (``busy``: run id,
    start, end of every other stored run that worked), ran at the same time."""
    reasons: dict[int, str] = {}
    for p in points:
        other = next((r for r, start, end in busy if start < p.ended_at and end > p.started_at), None)
        if other is not None:
            reasons[p.run_id] = f"ran at the same time as run {other}"
    by_start = sorted(points, key=lambda p: p.started_at)
    for i, p in enumerate(by_start):
        if p.resumed:
            reasons[p.run_id] = "resumed: its time includes a restart"
        for q in by_start[i + 1 :]:
            if q.started_at >= p.ended_at:
                break
            if q.ended_at > p.started_at:  # the two ran at the same time: both measured a shared machine
                reasons.setdefault(p.run_id, f"ran at the same time as run {q.run_id}")
                reasons.setdefault(q.run_id, f"ran at the same time as run {p.run_id}")
    return reasons


def scaling_tables(
    points: list[Point], busy: list[tuple[int, float, float]] = (), *, include_flagged: bool = False
) -> list[Table]:
    """One table per (group, kind, mode), rows by worker count; flagged points left out unless asked for."""
    reasons = flagged(points, busy)
    kept = [p for p in points if include_flagged or p.run_id not in reasons]
    by_table: dict[tuple[str, str, str], list[Point]] = defaultdict(list)
    for p in kept:
        by_table[(p.group, p.kind, p.mode)].append(p)
    tables = [_table(group, kind, mode, group_points) for (group, kind, mode), group_points in by_table.items()]
    left_out = sorted(set(reasons) - {p.run_id for p in kept} if not include_flagged else set())
    for table in tables:
        mine = [r for r in left_out if any(p.run_id == r and p.group == table.group for p in points)]
        if mine:
            table.notes.append(f"left out {len(mine)} point(s) measured beside other work or resumed: runs "
                               f"{', '.join(map(str, mine))}")  # fmt: skip
    return sorted(tables, key=lambda t: (t.group, t.kind, t.mode))


def _table(group: str, kind: str, mode: str, points: list[Point]) -> Table:
    by_setting: dict[tuple[int, int], list[Point]] = defaultdict(list)
    for p in points:
        by_setting[(p.workers, p.threads_per_worker)].append(p)
    medians = {key: statistics.median(p.time_s for p in ps) for key, ps in by_setting.items()}
    # The best one-worker time is the baseline (speedup against the best serial run, the usual convention).
    t1 = min((t for (n, _), t in medians.items() if n == 1), default=None)
    rows = [_row(group, kind, mode, key, by_setting[key], t1) for key in sorted(by_setting)]
    notes = [] if t1 is not None else ["no one-worker point in this group: speedup and efficiency need T(1), "
                                       "so they are not shown (run the sweep with 1 worker too)"]  # fmt: skip
    fair = [r for r in rows if not r.oversubscribed]  # oversubscribed points measure contention, not scaling
    serial = amdahl_fit([r.workers for r in fair], [r.time_s for r in fair], t1) if t1 is not None and fair else None
    ceiling = (1.0 / serial if serial else None) if serial is not None else None
    if any(r.oversubscribed for r in rows):
        notes.append("points marked oversubscribed ran more threads than the machine has cores: their times "
                     "measure the contention, as in the car report (more processes, slower training); the "
                     "Amdahl fit leaves them out")  # fmt: skip
    return Table(group, kind, mode, rows, serial, ceiling, notes)


def _row(group: str, kind: str, mode: str, setting: tuple[int, int], points: list[Point], t1: float | None) -> Row:
    n, threads = setting
    times = [p.time_s for p in points]
    median = statistics.median(times)
    s = speedup(t1, median) if t1 is not None else None
    images = statistics.median(p.images for p in points)
    return Row(group, kind, mode, n, threads, median, min(times), max(times), len(points), s,
               efficiency(s, n) if s is not None else None, karp_flatt(s, n) if s is not None else None,
               images / median if median > 0 else 0.0, any(p.oversubscribed for p in points),
               sorted(p.run_id for p in points))  # fmt: skip
