"""Benchmark: duplicate search with ``core.dedup.find_duplicates`` against the plain imagehash loop.

    .venv/bin/python -m bench.bench_dedup [--n 20000] [--out DIR] [--pairs-subset 3000] [--hashes 100000,1000000]

Makes N real images once (bench.bench_scan's photo-like generator, 10 class folders; about 10% of them are
copies of another image: byte copies, JPEG re-encodes, 0.5x-2x resizes, +-12% brightness) and reuses them on
later runs. With the page cache warm, in one run it times:

* baseline: ``imagehash.phash(Image.open(p))`` for every image in this process, then every pair compared in
  Python (``h1 - h2 <= T``). Comparing all N(N-1)/2 pairs takes ~2.5 us each (20k images: ~8 minutes), so the
  pairs are timed on the first ``--pairs-subset`` hashes and extrapolated by pair count; the output says so;
* ours cold: ``find_duplicates`` with an empty cache (scan + one decode per image + search + groups);
* ours warm: the same again with the cache it filled (nothing is decoded);
* the fingerprinting pass alone on 1 worker, on the default workers (forked processes: this benchmark runs no
  other thread) and on a spawned process pool of as many processes, to show which parallelism pays;
* ``near_pairs`` on 100k and 1M random 64-bit hashes at the default threshold, with peak memory (tracemalloc
  sees numpy's buffers) and the method the cost model chose.

Nothing about time is asserted; a run whose results are wrong (copies not found) stops with an error instead
of printing a fast number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from bench.bench_scan import cpu_model, load_average, make_image, warm_page_cache
from bench.checks import check
from core.common.cpu import usable_cores
from core.datasets.sources import DatasetRef
from core.dedup.fingerprints import fingerprint_many
from core.dedup.groups import DEFAULT_THRESHOLDS, DedupConfig, find_duplicates
from core.dedup.hamming import choose_plan, near_pairs

N_CLASSES = 10
COPY_SHARE = 0.1
MARKER = ".bench-dedup.json"
GENERATOR_VERSION = 1
THRESHOLD = DEFAULT_THRESHOLDS["phash"]


# --------------------------------------------------------------------------------------------------------------
# The dataset


def default_out(n: int) -> Path:
    return Path(tempfile.gettempdir()) / f"image-studio-bench-dedup-{n}"


def _is_copy(i: int) -> bool:
    return i > 0 and np.random.default_rng([GENERATOR_VERSION, i, 7]).random() < COPY_SHARE


def _write_image(job: tuple[str, int]) -> None:
    """Image ``i``: a fresh photo, or (10%) a copy of an earlier image, written by its own generator."""
    root, i = Path(job[0]), job[1]
    rng = np.random.default_rng([GENERATOR_VERSION, i, 8])
    path = root / f"class_{i % N_CLASSES:02d}" / f"img_{i:06d}.jpg"
    if not _is_copy(i):
        make_image(200_000 + i).save(path, "JPEG", quality=85)
        return
    source = int(rng.integers(0, i))
    while _is_copy(source):  # copy an original, so the truth is one base per group
        source = int(rng.integers(0, source)) if source else 0
    im = make_image(200_000 + source)
    kind = int(rng.integers(4))
    if kind == 1:
        im = im.resize((max(16, int(im.width * rng.uniform(0.5, 2))), max(16, int(im.height * rng.uniform(0.5, 2)))))
    elif kind == 2:
        im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.88, 1.12)))
    im.save(path, "JPEG", quality=85 if kind == 0 else int(rng.integers(60, 95)))


def ensure_dataset(out: Path, n: int) -> float | None:
    """Make the N images in ``out`` unless a complete set is already there; seconds taken, None if reused."""
    wanted = {"n": n, "version": GENERATOR_VERSION}
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return None
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise SystemExit(f"{out} is not empty and was not made by this benchmark; choose another --out")
    for folder in out.glob("class_*"):
        shutil.rmtree(folder)
    for c in range(N_CLASSES):
        (out / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(usable_cores()) as pool:
        pool.map(_write_image, [(str(out), i) for i in range(n)], chunksize=64)
    marker.write_text(json.dumps(wanted))
    return time.perf_counter() - started


def list_images(out: Path) -> list[str]:
    return sorted(str(p) for folder in sorted(out.glob("class_*")) for p in folder.iterdir())


# --------------------------------------------------------------------------------------------------------------
# The methods


def timed(run: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def baseline_hashes(files: list[str]) -> list[imagehash.ImageHash]:
    return [imagehash.phash(Image.open(p)) for p in files]


def baseline_pairs(hashes: list[imagehash.ImageHash]) -> list[tuple[int, int]]:
    """The plain all-pairs loop a notebook would write."""
    found = []
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if hashes[i] - hashes[j] <= THRESHOLD:
                found.append((i, j))
    return found


def fingerprint_processes(files: list[str], workers: int) -> pd.DataFrame:
    """The same fingerprints on a process pool (spawn: what a Streamlit server or a CLI can safely use)."""
    chunks = [files[k : k + 256] for k in range(0, len(files), 256)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pd.concat(pool.map(_fingerprint_serial, chunks), ignore_index=True)


def _fingerprint_serial(chunk: list[str]) -> pd.DataFrame:
    return fingerprint_many(chunk, workers=1)


def time_near_pairs(n: int) -> tuple[float, int, float, str]:
    """Seconds, pairs found, peak MiB traced, and the method chosen for n random hashes at THRESHOLD."""
    hashes = np.random.default_rng(n).integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    tracemalloc.start()
    seconds, (i, _, _) = timed(lambda: near_pairs(hashes, THRESHOLD))
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, len(i), peak, str(choose_plan(n, THRESHOLD))


# --------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dedup", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of images (default 20000)")
    parser.add_argument("--out", type=Path, help="folder for the images (default: a folder in the temp dir)")
    parser.add_argument("--pairs-subset", type=int, default=3000, help="hashes in the timed Python pair loop")
    parser.add_argument("--hashes", default="100000,1000000", help="sizes for the near_pairs timing ('' skips)")
    parser.add_argument("--no-processes", action="store_true", help="skip the process-pool comparison")
    args = parser.parse_args(argv)
    if args.n < 2 or args.pairs_subset < 2:
        parser.error("--n and --pairs-subset must be at least 2")
    return args


def run_images(args: argparse.Namespace, cores: int) -> None:
    out = (args.out or default_out(args.n)).resolve()
    print(f"dataset folder: {out}")
    gen = ensure_dataset(out, args.n)
    files = list_images(out)
    check(len(files) == args.n, f"{len(files)} files in {out}, expected {args.n}")
    total = warm_page_cache(files)
    n_copies = sum(_is_copy(i) for i in range(args.n))
    made = "reused" if gen is None else f"generated in {gen:.0f} s"
    print(f"{args.n} JPEGs ({total / 1e6:.0f} MB, {n_copies} copies of others), {made}; page cache warm\n")

    base_hash_s, hashes = timed(lambda: baseline_hashes(files))
    subset = min(args.pairs_subset, len(hashes))
    sub_s, _ = timed(lambda: baseline_pairs(hashes[:subset]))
    full_pairs, sub_pairs = args.n * (args.n - 1) / 2, subset * (subset - 1) / 2
    pairs_s = sub_s * full_pairs / sub_pairs
    baseline_s = base_hash_s + pairs_s
    how = (
        "measured" if subset == args.n else f"extrapolated from {subset} hashes ({sub_pairs:.3g} pairs, {sub_s:.1f} s)"
    )

    ref = DatasetRef("folder", out, name="bench")
    with tempfile.TemporaryDirectory(prefix="bench-dedup-cache-") as cache:
        cold_s, cold = timed(lambda: find_duplicates(ref, Path(cache), DedupConfig()))
        warm_s, warm = timed(lambda: find_duplicates(ref, Path(cache), DedupConfig()))
    check(cold.hashes.n_opened == args.n and warm.hashes.n_opened == 0, "cache did not work")
    check(cold.n_redundant >= 0.9 * n_copies, f"found {cold.n_redundant} redundant images of {n_copies} copies")
    check(warm.n_redundant == cold.n_redundant, "warm run found other groups")

    print(f"{'method':<58} {'seconds':>9} {'vs baseline':>12}")
    rows = [(f"baseline: phash loop ({base_hash_s:.1f} s) + Python pairs ({pairs_s:.1f} s, {how.split(' ')[0]})",
             baseline_s), (f"ours cold: scan + fingerprint + search + groups, {cores} threads", cold_s),
            ("ours warm: everything from the cache", warm_s)]  # fmt: skip
    for label, seconds in rows:
        print(f"{label:<58} {seconds:>9.2f} {baseline_s / seconds:>11.1f}x")
    print(f"  baseline pairs: {how}")
    print(f"  ours found {cold.n_redundant} redundant images in {len(cold.groups)} groups ({n_copies} copies made)")
    print(f"  ours warm: search + groups alone {warm.seconds - warm.scan.seconds - warm.hashes.seconds:.2f} s")
    run_parallelism(files, cores, args.no_processes)


def run_parallelism(files: list[str], cores: int, no_processes: bool) -> None:
    """Fingerprinting alone: one thread, the default threads, and (unless skipped) a process pool."""
    one, _ = timed(lambda: fingerprint_many(files, workers=1))
    threads, _ = timed(lambda: fingerprint_many(files, workers=cores))
    print(f"\nfingerprinting {len(files)} images: 1 worker {one:.2f} s; {cores} workers (processes forked from this "
          f"one, core.datasets.scan.map_chunks) {threads:.2f} s ({one / threads:.2f}x)", end="")  # fmt: skip
    if not no_processes:
        procs, _ = timed(lambda: fingerprint_processes(files, cores))
        print(f"; {cores} processes (spawn, incl. start-up) {procs:.2f} s ({one / procs:.2f}x)", end="")
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = usable_cores()
    load_before = load_average()
    print(f"machine: {cores} usable cores (os.cpu_count {os.cpu_count()}), CPU {cpu_model()}, "
          f"Python {platform.python_version()}, numpy {np.__version__}")  # fmt: skip
    run_images(args, cores)
    for n in [int(x) for x in args.hashes.split(",") if x.strip()]:
        seconds, found, peak, plan = time_near_pairs(n)
        print(f"near_pairs: {n} random hashes, threshold {THRESHOLD}: {seconds:.2f} s, {found} pairs, "
              f"peak traced memory {peak:.0f} MiB, method {plan}")  # fmt: skip
    print(f"max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    load_after = load_average()
    busy = "  ** BUSY MACHINE: timings unreliable **" if load_before[0] > cores else ""
    print(f"load average 1/5/15 min: before {' '.join(map(str, load_before))}, after "
          f"{' '.join(map(str, load_after))}{busy}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
