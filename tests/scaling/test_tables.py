"""core.scaling.tables: the arithmetic checked against numbers worked by hand."""

from __future__ import annotations

import pytest

from core.scaling.tables import Point, amdahl_fit, flagged, karp_flatt, scaling_tables


def point(run_id: int, workers: int, time_s: float, *, group: str = "g", threads: int = 1, cores: int = 4,
          start: float | None = None, images: int = 1000, mode: str = "processes", resumed: bool = False) -> Point:  # fmt: skip
    start = run_id * 1000.0 if start is None else start  # far apart: no overlap unless a test asks for one
    return Point(run_id, group, "prep", mode, workers, threads, time_s, images, cores, start, start + time_s, resumed)


def test_speedup_efficiency_and_serial_fraction_by_hand() -> None:
    # T(1) = 100 s; T(2) = 60 s; T(4) = 40 s.
    [table] = scaling_tables([point(1, 1, 100), point(2, 2, 60), point(3, 4, 40)])
    rows = {r.workers: r for r in table.rows}
    assert rows[1].speedup == 1.0 and rows[1].efficiency == 1.0 and rows[1].serial_fraction is None
    assert rows[2].speedup == pytest.approx(100 / 60) and rows[2].efficiency == pytest.approx(100 / 60 / 2)
    # Karp-Flatt at n=2: (1/S - 1/2) / (1 - 1/2) = (0.6 - 0.5) / 0.5 = 0.2
    assert rows[2].serial_fraction == pytest.approx(0.2)
    # at n=4: (0.4 - 0.25) / 0.75 = 0.2
    assert rows[4].serial_fraction == pytest.approx(0.2)
    # Amdahl with f = 0.2 gives exactly these times: T(n) = 100 (0.2 + 0.8 / n) = 100, 60, 40.
    assert table.amdahl_serial == pytest.approx(0.2) and table.amdahl_ceiling == pytest.approx(5.0)
    assert rows[4].images_per_s == pytest.approx(1000 / 40)
    assert table.notes == []


def test_the_median_of_repeats_with_min_and_max() -> None:
    points = [point(1, 1, 10), point(2, 1, 12), point(3, 1, 30), point(4, 2, 7), point(5, 2, 5), point(6, 2, 6)]
    [table] = scaling_tables(points)
    one, two = table.rows
    assert (one.time_s, one.time_min, one.time_max, one.repeats, one.runs) == (12, 10, 30, 3, [1, 2, 3])
    assert two.time_s == 6 and two.speedup == pytest.approx(2.0) and two.efficiency == pytest.approx(1.0)


def test_a_group_without_a_one_worker_point_invents_no_baseline() -> None:
    [table] = scaling_tables([point(1, 2, 60), point(2, 4, 40)])
    assert all(r.speedup is None and r.efficiency is None and r.serial_fraction is None for r in table.rows)
    assert table.amdahl_serial is None
    assert any("no one-worker point" in note for note in table.notes)


def test_groups_and_modes_are_separate_tables() -> None:
    points = [point(1, 1, 100, group="a"), point(2, 2, 50, group="a"), point(3, 1, 80, group="b", mode="threads"),
              point(4, 2, 60, group="b", mode="threads")]  # fmt: skip
    tables = {(t.group, t.mode): t for t in scaling_tables(points)}
    assert set(tables) == {("a", "processes"), ("b", "threads")}
    assert tables[("b", "threads")].rows[1].speedup == pytest.approx(80 / 60)


def test_the_car_report_mistake_is_impossible_and_oversubscription_is_marked() -> None:
    """64 min on 1 CPU, 100 on 2, 253 on 4, each process running the machine's 4 threads: inverse scaling."""
    points = [point(1, 1, 64, threads=4), point(2, 2, 100, threads=4), point(3, 4, 253, threads=4)]
    [table] = scaling_tables(points)
    rows = {r.workers: r for r in table.rows}
    assert rows[1].efficiency == 1.0  # not 50%: efficiency is speedup / workers, and S(1) = 1
    assert rows[2].speedup == pytest.approx(0.64) and rows[4].speedup == pytest.approx(64 / 253)
    assert not rows[1].oversubscribed and rows[2].oversubscribed and rows[4].oversubscribed
    assert any("oversubscribed" in note for note in table.notes)
    assert table.amdahl_serial is None  # only the one-worker point is fair: nothing to fit


def test_an_oversubscribed_point_beside_a_fair_one_of_the_same_worker_count() -> None:
    points = [point(1, 1, 100, threads=2, cores=2), point(2, 2, 55, threads=1, cores=2),
              point(3, 2, 130, threads=2, cores=2)]  # fmt: skip
    [table] = scaling_tables(points)
    assert [(r.workers, r.threads_per_worker, r.oversubscribed) for r in table.rows] == [
        (1, 2, False), (2, 1, False), (2, 2, True)]  # fmt: skip
    assert table.amdahl_serial == pytest.approx(amdahl_fit([1, 2], [100, 55], 100))


def test_points_that_overlapped_or_were_resumed_are_left_out_by_default() -> None:
    points = [point(1, 1, 100, start=0), point(2, 2, 50, start=10), point(3, 2, 52, start=500),
              point(4, 4, 30, start=900, resumed=True)]  # fmt: skip
    reasons = flagged(points)
    assert reasons == {1: "ran at the same time as run 2", 2: "ran at the same time as run 1",
                       4: "resumed: its time includes a restart"}  # fmt: skip
    [table] = scaling_tables(points)
    assert [r.runs for r in table.rows] == [[3]]  # no one-worker point left
    assert any("left out 3 point(s)" in note for note in table.notes)
    [everything] = scaling_tables(points, include_flagged=True)
    assert [r.workers for r in everything.rows] == [1, 2, 4]


def test_karp_flatt_and_amdahl_edge_cases() -> None:
    assert karp_flatt(1.0, 1) is None
    assert karp_flatt(2.0, 2) == pytest.approx(0.0)  # perfect scaling: nothing serial
    assert karp_flatt(1.0, 2) == pytest.approx(1.0)  # no gain at all: everything serial
    assert amdahl_fit([1], [10.0], 10.0) is None
    assert amdahl_fit([1, 2], [10.0, 12.0], 10.0) == 1.0  # slower with more workers: clipped to all-serial
