"""A scaling table read in plain words, for people who will not compute a Karp-Flatt fraction themselves."""

from __future__ import annotations

from core.scaling.tables import Row, Table

UNITS = {"processes": ("process", "processes"), "threads": ("thread", "threads"), "ddp": ("rank", "ranks")}
WHAT = {"prep": "preparing the data", "train": "training"}


def reading(table: Table) -> list[str]:
    """Sentences about one table: the gain of the most workers, the best setting, and what hurt."""
    if not table.rows:
        return []
    one, many = UNITS.get(table.mode, ("worker", "workers"))
    fair = [r for r in table.rows if not r.oversubscribed]
    out = []
    best = max(table.rows, key=lambda r: r.images_per_s)
    if best.speedup is not None:
        out.append(_gain(table, fair, one, many))
    out.append(f"Fastest here: {_setting(best, one, many)}, {best.images_per_s:,.0f} images per second.")
    out += _overheads(table, fair, many)
    if table.amdahl_ceiling is not None and table.amdahl_serial:
        out.append(f"Fitted to Amdahl's law, {table.amdahl_serial:.0%} of the work does not run in parallel: no "
                   f"number of {many} can make it more than {table.amdahl_ceiling:.1f}x faster.")  # fmt: skip
    return out


def _gain(table: Table, fair: list[Row], one: str, many: str) -> str:
    top = max(fair or table.rows, key=lambda r: r.workers)
    assert top.speedup is not None and top.efficiency is not None
    if top.workers == 1:
        return f"Only one {one} was measured: nothing to compare yet."
    verb = "give" if top.speedup >= 1 else "make it slower:"
    return (f"{top.workers} {many} {verb} {top.speedup:.2f}x the speed of one ({top.efficiency:.0%} "
            f"efficiency) for {WHAT.get(table.kind, table.kind)}.")  # fmt: skip


def _overheads(table: Table, fair: list[Row], many: str) -> list[str]:
    out = []
    crowded = [r for r in table.rows if r.oversubscribed]
    if crowded:
        worst = max(crowded, key=lambda r: r.time_s)
        out.append(f"{worst.workers} {many} x {worst.threads_per_worker} threads run more threads than the "
                   f"machine has cores: {worst.time_s:.1f} s, the car report's trap (more processes, slower).")  # fmt: skip
    if table.mode == "ddp" and any(r.workers > 1 and (r.efficiency or 0) < 0.7 for r in fair):
        out.append("Each extra rank waits for the others to exchange gradients after every step; on a machine "
                   "with few cores one process with all the threads is usually the better choice.")  # fmt: skip
    return out


def _setting(row: Row, one: str, many: str) -> str:
    unit = one if row.workers == 1 else many
    threads = (
        f" x {row.threads_per_worker} thread{'s' * (row.threads_per_worker != 1)}" if row.threads_per_worker > 1 else ""
    )
    return f"{row.workers} {unit}{threads}"
