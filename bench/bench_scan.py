"""Benchmark: scanning a folder dataset with ``core.scan.scan_dataset`` against the naive single-process loop.

    .venv/bin/python -m bench.bench_scan [--n 10000] [--out DIR] [--repeats 3]

Makes N real images (a folder per class, 10 classes; ~90% photo-like JPEGs of 160x160 .. 640x480 at quality 85,
~10% PNGs) once, reuses them on later runs, and times on the same files, with the page cache warm:

* baseline: ``for p in files: Image.open(p).convert("RGB")`` in this process (the file list is made beforehand
  and not timed);
* ours cold: ``scan_dataset`` with an empty cache folder (lists, stats and decodes every file, default workers);
* ours rescan: ``scan_dataset`` again with the cache that run filled (nothing changed, nothing decoded);
* ours cold, workers=1: the same decode work in this process, so the gain of draft decoding and the gain of
  the decoding threads can be told apart.

After one untimed warm-up round of every method, the methods are interleaved (baseline, ours, ..., baseline,
ours, ...) and each reported as median and min of ``--repeats`` runs. Nothing about time is asserted, but a run that did not open all N images stops with an
error instead of printing a fast number. The machine is shared: the load average is printed before and after,
and a run that started on a busy machine is flagged.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter

from bench.checks import check
from core.common.cpu import usable_cores
from core.datasets.scan import ScanResult, scan_dataset
from core.datasets.sources import DatasetRef

N_CLASSES = 10
PNG_SHARE = 0.10
JPEG_QUALITY = 85
# (width, height) of the JPEGs; PNGs use the smaller ones, as PNG datasets (icons, crops, renders) tend to.
JPEG_SIZES = [(160, 160), (224, 224), (256, 256), (320, 240), (240, 320), (400, 300), (480, 360), (500, 375),
              (512, 384), (640, 480), (480, 640)]  # fmt: skip
PNG_SIZES = [(128, 128), (160, 160), (224, 224), (256, 256), (320, 240)]
MARKER = ".bench-scan.json"  # hidden, so dataset listings skip it
GENERATOR_VERSION = 1  # bump when the images change, so old folders are made again
NOISE_SIDE = 704


# --------------------------------------------------------------------------------------------------------------
# The dataset


def default_out(n: int) -> Path:
    return Path(tempfile.gettempdir()) / f"image-studio-bench-scan-{n}"


def image_name(i: int) -> str:
    """Relative path of image ``i``: class folder by ``i % 10``, PNG for a fixed ~10% of indices."""
    ext = ".png" if _is_png(i) else ".jpg"
    return f"class_{i % N_CLASSES:02d}/img_{i:06d}{ext}"


def _is_png(i: int) -> bool:
    return np.random.default_rng([GENERATOR_VERSION, i, 1]).random() < PNG_SHARE


@functools.lru_cache(maxsize=4)
def noise_tile(side: int, sigma: float, seed: int) -> np.ndarray:
    """Sensor-like noise, made once per process and cropped at random offsets (drawing it per image is slow); the
    scale bench's generator (``bench.scale_data``) takes its own from here too."""
    return np.random.default_rng(seed).normal(0, sigma, (side, side, 3)).astype(np.int16)


def make_image(i: int) -> Image.Image:
    """A photo-like RGB picture: colour gradient, low-frequency texture, a few soft-edged shapes, fine noise."""
    rng = np.random.default_rng([GENERATOR_VERSION, i])
    sizes = PNG_SIZES if _is_png(i) else JPEG_SIZES
    w, h = sizes[rng.integers(len(sizes))]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(0, np.sin(angle), h, dtype=np.float32)[:, None] + np.linspace(
        0, np.cos(angle), w, dtype=np.float32
    )
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min() + 1e-6)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    coarse = rng.normal(128, 40, (h // 24 + 2, w // 24 + 2, 3)).clip(0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.float32) - 128
    im = Image.fromarray((c0 + (c1 - c0) * ramp[..., None] + texture).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 8)):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    im = im.filter(ImageFilter.BoxBlur(1))
    oy, ox = int(rng.integers(0, NOISE_SIDE - h + 1)), int(rng.integers(0, NOISE_SIDE - w + 1))
    pixels = np.asarray(im, np.int16) + noise_tile(NOISE_SIDE, 5, GENERATOR_VERSION)[oy : oy + h, ox : ox + w]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _write_image(job: tuple[str, int]) -> int:
    root, i = job
    path = Path(root) / image_name(i)
    im = make_image(i)
    if path.suffix == ".png":
        im.save(path, "PNG")
    else:
        im.save(path, "JPEG", quality=JPEG_QUALITY)
    return path.stat().st_size


def ensure_dataset(out: Path, n: int) -> float | None:
    """Make the N images in ``out`` unless a complete set is already there; seconds taken, None if reused."""
    wanted = {"n": n, "version": GENERATOR_VERSION, "complete": True}
    marker = out / MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == wanted and _count_images(out) == n:
            return None
        for folder in out.glob("class_*"):  # the marker proves these folders are ours
            shutil.rmtree(folder)
    elif out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty and was not made by this benchmark; choose another --out")
    for c in range(N_CLASSES):
        (out / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**wanted, "complete": False}))
    started = time.perf_counter()
    # spawn, not forkserver: the scan under test starts the forkserver itself and must pay for that as it would.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(usable_cores()) as pool:
        for done, _ in enumerate(pool.imap_unordered(_write_image, [(str(out), i) for i in range(n)], chunksize=64), 1):
            if done % 2500 == 0 or done == n:
                print(f"  generated {done}/{n} in {time.perf_counter() - started:.0f} s", flush=True)
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps(wanted))
    return seconds


def _count_images(out: Path) -> int:
    return sum(1 for folder in out.glob("class_*") for p in folder.iterdir() if p.suffix in (".jpg", ".png"))


def list_images(out: Path) -> list[str]:
    return sorted(str(p) for folder in sorted(out.glob("class_*")) for p in folder.iterdir())


def warm_page_cache(files: list[str]) -> int:
    """Read every file once, so no method pays for the disk; total bytes."""
    total = 0
    for p in files:
        with open(p, "rb") as fp:
            total += len(fp.read())
    return total


# --------------------------------------------------------------------------------------------------------------
# The methods


def baseline(files: list[str]) -> None:
    """The naive way: open and convert (which decodes) every file, one after another, in this process."""
    opened = 0
    for p in files:
        im = Image.open(p)
        im = im.convert("RGB")
        opened += im.width > 0 and im.height > 0
    check(opened == len(files), f"baseline opened {opened} of {len(files)} images")


def _check_scan(result: ScanResult, n: int, opened: int) -> None:
    check(len(result.manifest) == n, f"scan counted {len(result.manifest)} of {n} images")
    check(result.unreadable.empty, f"scan found unreadable files: {result.unreadable.head().to_dict('records')}")
    check(result.n_opened == opened, f"scan opened {result.n_opened} files, expected {opened}")


@dataclass
class Method:
    label: str
    run: Callable[[], None]
    times: list[float] = field(default_factory=list)
    warmup: list[float] = field(default_factory=list)

    def timed(self, *, warmup: bool = False) -> None:
        started = time.perf_counter()
        self.run()
        (self.warmup if warmup else self.times).append(time.perf_counter() - started)


class OursScans:
    """Cold and rescan runs of ``scan_dataset``; each cold run gets a fresh cache that the next rescan reuses."""

    def __init__(self, ref: DatasetRef, n: int) -> None:
        self.ref, self.n = ref, n
        self._cache: tempfile.TemporaryDirectory[str] | None = None

    def cold(self, workers: int | None = None) -> None:
        self.close()
        self._cache = tempfile.TemporaryDirectory(prefix="bench-scan-cache-")
        _check_scan(scan_dataset(self.ref, cache_dir=Path(self._cache.name), workers=workers), self.n, self.n)

    def rescan(self) -> None:
        check(self._cache is not None, "rescan before any cold scan")
        assert self._cache is not None
        _check_scan(scan_dataset(self.ref, cache_dir=Path(self._cache.name)), self.n, 0)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.cleanup()
            self._cache = None


# --------------------------------------------------------------------------------------------------------------
# Reporting


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = open("/proc/loadavg").read().split()[:3]
    return float(one), float(five), float(fifteen)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(methods: list[Method], n: int) -> None:
    base = statistics.median(methods[0].times)
    print(f"{'method':<40} {'median s':>9} {'min s':>8} {'images/s':>9} {'vs baseline':>12}")
    for m in methods:
        med = statistics.median(m.times)
        print(f"{m.label:<40} {med:>9.3f} {min(m.times):>8.3f} {n / med:>9.0f} {base / med:>11.2f}x")
    print("all runs (s, in order):")
    for m in methods:
        warmup = "  ".join(f"{t:.3f}" for t in m.warmup)
        print(f"  {m.label:<38} " + "  ".join(f"{t:.3f}" for t in m.times) + f"   (warm-up, untimed: {warmup})")


def print_ratios(methods: list[Method]) -> None:
    med = {m.label: statistics.median(m.times) for m in methods}
    best = {m.label: min(m.times) for m in methods}
    base_label = methods[0].label
    for m in methods[1:]:
        print(f"  {m.label} / baseline throughput = {med[base_label] / med[m.label]:.1f}x "
              f"(min vs min: {best[base_label] / best[m.label]:.1f}x)")  # fmt: skip
    cold, serial = methods[1].label, methods[-1].label
    if serial.endswith("workers=1"):
        print(f"  of which draft decoding (workers=1 vs baseline) = {med[base_label] / med[serial]:.1f}x, "
              f"decoding threads (default vs workers=1) = {med[serial] / med[cold]:.1f}x")  # fmt: skip


def describe_dataset(files: list[str], total_bytes: int) -> str:
    n_png = sum(p.endswith(".png") for p in files)
    return (f"{len(files)} images in {N_CLASSES} class folders: {len(files) - n_png} JPEG (q{JPEG_QUALITY}, "
            f"160x160..640x480), {n_png} PNG; {total_bytes / 1e6:.1f} MB, {total_bytes / len(files) / 1024:.1f} KB "
            "per file on average")  # fmt: skip


# --------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scan", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of images (default 10000)")
    parser.add_argument("--out", type=Path, help="folder for the images (default: a folder in the temp dir)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method (default 3)")
    parser.add_argument("--no-serial", action="store_true", help="skip the workers=1 run of ours")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = usable_cores()
    load_before = load_average()
    out = (args.out or default_out(args.n)).resolve()

    print(f"dataset folder: {out}")
    gen_seconds = ensure_dataset(out, args.n)
    files = list_images(out)
    check(len(files) == args.n, f"{len(files)} files in {out}, expected {args.n}")
    started = time.perf_counter()
    total_bytes = warm_page_cache(files)
    warm_seconds = time.perf_counter() - started

    ours = OursScans(DatasetRef("folder", out, name="bench"), args.n)
    methods = [
        Method("baseline: open+convert('RGB'), 1 process", lambda: baseline(files)),
        Method(f"ours cold (scan_dataset, {cores} workers)", ours.cold),
        Method("ours rescan (cache filled, unchanged)", ours.rescan),
    ]
    if not args.no_serial:
        methods.append(Method("ours cold, workers=1", lambda: ours.cold(workers=1)))
    try:
        # One untimed round first: it starts the forkserver, imports what the workers need, and leaves glibc's
        # malloc in its steady state (in a fresh process each full-size decode buffer costs page faults again:
        # the baseline loop alone ran ~20% slower there; see bench/README.md).
        for method in methods:
            method.timed(warmup=True)
        for _ in range(args.repeats):
            for method in methods:
                method.timed()
    finally:
        ours.close()
    load_after = load_average()

    print()
    print(f"scan benchmark: {describe_dataset(files, total_bytes)}")
    made = "reused (made by an earlier run)" if gen_seconds is None else f"generated in {gen_seconds:.1f} s"
    print(f"images {made}; page cache warmed: read {total_bytes / 1e6:.0f} MB in {warm_seconds:.2f} s")
    print(f"machine: {cores} usable cores (os.cpu_count {os.cpu_count()}), CPU {cpu_model()}, "
          f"Pillow {PIL.__version__}, Python {platform.python_version()}")  # fmt: skip
    busy = load_before[0] > cores
    print(f"load average 1/5/15 min: before {' '.join(map(str, load_before))}, after {' '.join(map(str, load_after))}"
          + (f"  ** BUSY MACHINE: 1-min load {load_before[0]} > {cores} cores at the start; timings unreliable **"
             if busy else ""))  # fmt: skip
    print(
        f"1 untimed warm-up round, then {args.repeats} repeats, interleaved; baseline excludes listing the files, ours includes listing, stat "
        "and building the manifest"
    )
    print()
    print_table(methods, args.n)
    print("ratios:")
    print_ratios(methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
