"""Benchmark: ``python -m core dedup`` as a whole process against a plain ``imagehash.phash`` loop process.

    .venv/bin/python -m bench.bench_dedup_process [--small 20000] [--large 5000] [--repeats 3] [--out DIR]

Two image sets, made once and reused from ``--out`` (default: folders in the temp dir):

* small: ``--small`` real-photo crops of 160x160 px, JPEG q85-92 (about 7 KB each), cut from the photos of
  ``tests.realphotos`` (scikit-image's when installed, else scikit-learn's and matplotlib's) at random scales,
  positions and quarter turns, in 10 class folders;
* large: ``--large`` photo-like JPEGs of 160x160 to 640x480 px from ``bench.bench_dedup`` (10% copies).

For each set, ``--repeats`` interleaved rounds start two fresh processes each, so nothing is shared or cached:

* plain: ``python -c`` listing the files and running ``imagehash.phash(Image.open(p))`` on each;
* ours: ``python -m core dedup DIR --json`` in a fresh, empty workspace (cold scan and fingerprint caches).

Each process's wall time, CPU time (user + system, its worker processes included) and peak resident memory
come from ``os.wait4``; the peak of the whole process tree's proportional memory (PSS: pages a forked worker
shares with its parent counted once) is sampled every 20 ms. Medians are printed with the ratio ours / plain. Nothing is asserted about time; a run whose dedup exits non-zero or
finds fewer groups than copies made (large set) stops with BROKEN RUN.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.bench_dedup import _is_copy, ensure_dataset
from bench.bench_scan import cpu_model, load_average
from bench.checks import check
from core.common.cpu import usable_cores

ROOT = Path(__file__).resolve().parent.parent
MARKER = ".bench-crops.json"
CROPS_VERSION = 2
CROP_SIDE = 160
PLAIN = (
    "import os, sys, imagehash\nfrom PIL import Image\n"
    "files = sorted(os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs if f.endswith('.jpg'))\n"
    "hashes = [imagehash.phash(Image.open(p)) for p in files]\nprint(len(hashes))\n"
)


@dataclass
class Usage:
    wall: float
    cpu: float  # user + system, the process and its worker processes
    rss_mib: float  # peak resident memory of the process (or of its largest worker), from wait4
    pss_mib: float  # peak of the process tree's proportional memory (shared pages counted once), sampled


def run_process(cmd: list[str], env: dict[str, str] | None = None) -> tuple[Usage, str]:
    """Start ``cmd``, wait for it with ``os.wait4``, and return its usage and stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, cwd=ROOT, env=env)
        peak = [0.0]
        sampler = threading.Thread(target=_sample_pss, args=(proc, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        check(proc.returncode == 0, f"{' '.join(cmd[:4])} exited {proc.returncode}: {err[-500:]}")
        out.seek(0)
        text = out.read().decode()
    return Usage(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, peak[0]), text


def _sample_pss(proc: subprocess.Popen, peak: list[float]) -> None:
    """Every 20 ms, the summed PSS of ``proc`` and its children (forked workers share the parent's pages)."""
    while proc.returncode is None:
        total = 0
        for pid in _tree(proc.pid):
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        if total == 0 and not Path(f"/proc/{proc.pid}").exists():
            return
        peak[0] = max(peak[0], total / 1024)
        time.sleep(0.02)


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
    return pids


# --------------------------------------------------------------------------------------------------------------
# The small set: real-photo crops


def _write_crops(args: tuple[str, list[tuple[int, tuple]]]) -> None:
    from tests.realphotos import load_photos, write_crop

    root, jobs = Path(args[0]), args[1]
    photos = list(load_photos().values())
    for i, job in jobs:
        write_crop(root / f"class_{i % 10:02d}" / f"crop_{i:06d}.jpg", photos[job[0]], job, CROP_SIDE)


def ensure_crops(out: Path, n: int) -> None:
    """``n`` crops in ``out`` (10 class folders), unless a complete set made by this version is there."""
    from tests.realphotos import crop_jobs, photo_files

    wanted = {"n": n, "version": CROPS_VERSION, "photos": [p.name for p in photo_files()]}
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    if out.exists():
        check(marker.is_file() or not any(out.iterdir()), f"{out} is not empty and was not made by this benchmark")
        shutil.rmtree(out)
    for c in range(10):
        (out / f"class_{c:02d}").mkdir(parents=True)
    jobs = list(enumerate(crop_jobs(n, CROP_SIDE)))
    parts = [(str(out), jobs[k : k + 500]) for k in range(0, n, 500)]
    with ProcessPoolExecutor(usable_cores()) as pool:
        list(pool.map(_write_crops, parts))
    marker.write_text(json.dumps(wanted))


# --------------------------------------------------------------------------------------------------------------


def measure(folder: Path, repeats: int) -> tuple[list[Usage], list[Usage], dict]:
    """Interleaved rounds of the plain loop process and ours; the last dedup summary."""
    plain, ours, summary = [], [], {}
    for _ in range(repeats):
        usage, _ = run_process([sys.executable, "-c", PLAIN, str(folder)])
        plain.append(usage)
        with tempfile.TemporaryDirectory(prefix="bench-dedup-ws-") as ws:
            env = {**os.environ, "STUDIO_DATA_ROOTS": str(folder)}
            cmd = [sys.executable, "-m", "core", "dedup", str(folder), "--json", "--workspace", ws]
            usage, text = run_process(cmd, env)
        ours.append(usage)
        summary = json.loads(text)
    return plain, ours, summary


def report(name: str, n: int, plain: list[Usage], ours: list[Usage], summary: dict) -> None:
    def med(rows: list[Usage], attr: str) -> float:
        return statistics.median(getattr(u, attr) for u in rows)

    print(f"\n{name}: {n} images, {len(plain)} interleaved rounds (medians; min..max wall)")
    print(f"{'process':<44} {'wall s':>8} {'CPU s':>8} {'max RSS':>8} {'peak PSS':>9}  (MiB)")
    for label, rows in (
        ("plain: imagehash.phash(Image.open(p)) loop", plain),
        ("ours: python -m core dedup --json", ours),
    ):
        walls = [u.wall for u in rows]
        print(f"{label:<44} {med(rows, 'wall'):>8.2f} {med(rows, 'cpu'):>8.2f} {med(rows, 'rss_mib'):>8.0f} "
              f"{med(rows, 'pss_mib'):>9.0f}   wall {min(walls):.2f}..{max(walls):.2f}")  # fmt: skip
    print(f"ratio ours/plain: wall {med(ours, 'wall') / med(plain, 'wall'):.2f}x, "
          f"CPU {med(ours, 'cpu') / med(plain, 'cpu'):.2f}x; ours' peak memory: {med(ours, 'rss_mib'):.0f} MiB "
          f"resident in one process, {med(ours, 'pss_mib'):.0f} MiB for the process and its workers together")  # fmt: skip
    print(f"  dedup found {summary.get('n_groups')} groups, {summary.get('n_redundant')} redundant images, "
          f"{len(summary.get('unreadable', []))} unreadable")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dedup_process", description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=20_000, help="160x160 real-photo crops (0 skips)")
    parser.add_argument("--large", type=int, default=5_000, help="larger photo-like JPEGs (0 skips)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()), help="where the sets are kept")
    args = parser.parse_args(argv)
    cores, load_before = usable_cores(), load_average()
    print(f"machine: {cores} usable cores, CPU {cpu_model()}, Python {sys.version.split()[0]}")
    if args.small:
        folder = (args.out / f"image-studio-bench-crops-{args.small}").resolve()
        ensure_crops(folder, args.small)
        plain, ours, summary = measure(folder, args.repeats)
        check(summary.get("n_images") == args.small, f"dedup saw {summary.get('n_images')} of {args.small} crops")
        report(f"small: real-photo crops {CROP_SIDE}x{CROP_SIDE} in {folder}", args.small, plain, ours, summary)
    if args.large:
        folder = (args.out / f"image-studio-bench-dedup-{args.large}").resolve()
        ensure_dataset(folder, args.large)
        plain, ours, summary = measure(folder, args.repeats)
        n_copies = sum(_is_copy(i) for i in range(args.large))
        check(summary.get("n_redundant", 0) >= 0.9 * n_copies, f"found {summary.get('n_redundant')} of {n_copies}")
        report(f"large: photo-like JPEGs 160-640 px in {folder}", args.large, plain, ours, summary)
    load_after = load_average()
    busy = "  ** BUSY MACHINE: timings unreliable **" if max(load_before[0], load_after[0]) > cores else ""
    print(f"\nload average: before {load_before[0]}, after {load_after[0]}{busy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
