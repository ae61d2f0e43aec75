"""Benchmark: how each stage's time and memory grow with the number of images (issue 28).

    .venv/bin/python -m bench.bench_scale [--sizes 10000,50000,200000] [--sides 64,160] [--max N] [--cache DIR]
        [--stages scan,dedup,decode,epoch,evaluate] [--json FILE] [--settle S] [--keep-workspaces] [--repeats R]

For each size N (folders of N photo-like 128 px JPEGs in 4 classes, :mod:`bench.scale_data`, made once into
``--cache``) and each decode side, in a fresh workspace, each stage runs in a fresh process, one at a time, through
the studio's own command line:

* scan: ``python -m core scan DIR --json`` (cold: the workspace is new);
* dedup: ``python -m core dedup DIR --json`` (find only; fingerprints cold);
* decode: ``core.train.tensors.load_tensors`` over every image at the side, into the workspace cache, with the
  paths in the order training asks for them (sorted), so training maps that very file and decodes nothing;
* epoch: ``python -m core train DIR --arch lenet --image-size SIDE --epochs 1 --batch-size 64 --json`` (its scan
  and decode come from the caches above: the bench checks the tensor cache was not written again);
* evaluate: ``python -m core evaluate RUN --json``.

Each stage's wall time, its peak resident memory (``ru_maxrss`` from ``os.wait4``: the kernel's high-water mark
of the largest process of the stage's tree that was waited for), and, polled every 0.1 s from ``/proc``, the peak
of the tree's summed anonymous memory (``RssAnon``: what the stage holds that the kernel cannot drop; unlike the
resident set it leaves out pages of a memory-mapped file) and the bytes it read from disk (``/proc/PID/io``).
Then the growth exponents over the sizes run, fitted log-log. A stage that fails, a scan that does not count N
images, a dedup that misses the copies, or a training run that does not complete stops with BROKEN RUN.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import scale_data
from bench.checks import check

REPO = Path(__file__).resolve().parent.parent
STAGES = ("scan", "dedup", "decode", "epoch", "evaluate")
# Stages that leave every cache as they found them, so a second run measures the same thing (a second scan or
# dedup would find its caches warm, a second decode nothing to decode). The epoch's peak varies from run to run by
# a third (10,000 images at 64 px, 4 runs: 1,394-1,983 MB; 50,000, 4 runs: 1,643-2,138 MB): its allocations
# (activations, the statistics' chunks) land differently in the C library's heaps each time.
REPEATABLE = ("epoch", "evaluate")
POLL_S = 0.1
BUSY_LOAD = 1.0
MB = 1e6
# Pinned: the automatic batch shrinks for small sets (16 at 1,400 training images, 64 at 7,000), which changes the
# cost of an image; the recipe's 64 keeps the work per image the same at every N.
TRAIN_BATCH = 64

# The decode stage's child: the workspace's scan (cached by the scan stage), then every image decoded at the side
# into the workspace cache, paths sorted as core.train.splits.make_splits sorts them, so training finds that file.
DECODE_CHILD = """
import json, sys, time
from core.common.workspace import Workspace
from core.datasets.scan import scan_dataset
from core.datasets.sources import resolve_dataset, spec_paths
from core.train.tensors import load_tensors
ws_dir, folder, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
ws = Workspace.open(ws_dir).for_operator(spec_paths(folder))
ref = resolve_dataset(folder, ws)
paths = sorted(scan_dataset(ref, ws.cache).manifest["path"].astype(str))
started = time.perf_counter()
t = load_tensors(ref.root, paths, side, cache_dir=ws.cache)
print(json.dumps({"n_images": len(t.paths), "n_decoded": t.n_decoded, "n_dropped": len(t.dropped),
                  "seconds": time.perf_counter() - started}))
"""


@dataclass
class Row:
    """One stage of one (N, side): what the bench prints and writes to ``--json``."""

    n: int
    side: int
    stage: str
    seconds: float  # wall clock of the whole process (interpreter start and imports included)
    inner_s: float | None  # the stage's own timing where its output gives one (no interpreter start)
    peak_mb: float  # ru_maxrss
    anon_mb: float  # peak of the tree's summed RssAnon, polled
    read_mb: float  # bytes the tree read from the block device
    working_mb: float  # the files the stage reads or writes (JPEGs, tensor cache)
    available_mb: float  # MemAvailable before the stage
    load: float  # 1-minute load average at the start
    others: float  # cores other processes used in the second before the start
    busy: bool
    disk_bound: bool
    facts: dict = field(default_factory=dict)

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / self.n


# --------------------------------------------------------------------------------------------------------------
# One process, measured


@dataclass
class TreeWatch:
    """Polls the process tree under ``root``: peak summed RssAnon, each process's last read_bytes, peak VmHWM."""

    root: int
    anon_peak: int = 0
    hwm_peak: int = 0
    read: dict[int, int] = field(default_factory=dict)

    def poll(self) -> None:
        anon = 0
        for pid in self._tree():
            status = _status_kib(pid)
            anon += status.get("RssAnon", 0) * 1024
            self.hwm_peak = max(self.hwm_peak, status.get("VmHWM", 0) * 1024)
            self.read[pid] = max(self.read.get(pid, 0), _read_bytes(pid))
        self.anon_peak = max(self.anon_peak, anon)

    def _tree(self) -> list[int]:
        parent: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    # the name in parentheses may hold spaces: the parent pid is the 2nd field after the last ')'
                    text = Path(entry.path, "stat").read_text()
                    parent[int(entry.name)] = int(text[text.rindex(")") + 2 :].split()[1])
                except (OSError, ValueError):
                    continue
        tree, frontier = [self.root], [self.root]
        while frontier:
            frontier = [pid for pid, pp in parent.items() if pp in frontier]
            tree += frontier
        return tree


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmHWM"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _read_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class Measured:
    code: int
    seconds: float
    peak: int  # bytes
    anon: int
    read: int
    stdout: str
    stderr: str


def run_measured(argv: list[str], logs: Path, name: str) -> Measured:
    """Run ``argv`` to its end, polling its tree; waited for with ``os.wait4`` for its ``ru_maxrss``."""
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        watch = TreeWatch(proc.pid)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            watch.poll()
            time.sleep(POLL_S)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    peak = max(usage.ru_maxrss * 1024, watch.hwm_peak)
    return Measured(proc.returncode, seconds, peak, watch.anon_peak, sum(watch.read.values()),
                    out_path.read_text(errors="replace"), err_path.read_text(errors="replace"))  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# The machine


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemTotal:"))  # fmt: skip
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "core"], capture_output=True, text=True).stdout.split("\n")
    return {"cpu": model, "cores": os.cpu_count(), "ram_gb": round(total / 1e9, 1), "commit": commit,
            "uncommitted_core_files": sum(1 for line in dirty if line.strip()), "python": platform.python_version()}  # fmt: skip


def settle(limit_s: float) -> tuple[float, float]:
    """(1-minute load, cores others use now) before a stage. While others use under half a core, a load above
    :data:`BUSY_LOAD` is the previous stage's own echo (it takes ~40 s to decay from 2): wait up to ``limit_s``
    for it to fall; while others are busy, waiting would not help."""
    deadline = time.monotonic() + limit_s
    while (others := others_cores()) < 0.5 and os.getloadavg()[0] > BUSY_LOAD and time.monotonic() < deadline:
        time.sleep(2)
    return os.getloadavg()[0], others


def others_cores(window_s: float = 1.0) -> float:
    """Cores busy over ``window_s`` while the bench itself idles: other people's work, not the last stage's echo."""

    def busy_idle() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, idle

    b0, i0 = busy_idle()
    time.sleep(window_s)
    b1, i1 = busy_idle()
    total = (b1 - b0) + (i1 - i0)
    return (os.cpu_count() or 1) * (b1 - b0) / total if total else 0.0


# --------------------------------------------------------------------------------------------------------------
# The stages


@dataclass
class Case:
    """One (N, side): its folder, its fresh workspace, and what the stages pass on (the run id)."""

    n: int
    side: int
    folder: Path
    workspace: Path
    jpeg_bytes: int
    copies: int
    run_id: int | None = None

    def tensor_files(self) -> dict[str, float]:
        """The tensor cache's files at this side: name -> mtime (the epoch must not write them again)."""
        folder = self.workspace / "cache" / "tensors"
        return {p.name: p.stat().st_mtime for p in folder.glob(f"*-{self.side}*")} if folder.is_dir() else {}

    def tensor_bytes(self) -> int:
        folder = self.workspace / "cache" / "tensors"
        return sum(p.stat().st_size for p in folder.glob(f"*-{self.side}*.npy")) if folder.is_dir() else 0


def argv_for(stage: str, case: Case) -> list[str]:
    py, ws, data = sys.executable, str(case.workspace), str(case.folder)
    if stage == "decode":
        return [py, "-c", DECODE_CHILD, ws, data, str(case.side)]
    core = [py, "-m", "core"]
    if stage == "epoch":
        return [*core, "train", data, "--arch", "lenet", "--image-size", str(case.side), "--epochs", "1",
                "--batch-size", str(TRAIN_BATCH), "--workspace", ws, "--json"]  # fmt: skip
    if stage == "evaluate":
        return [*core, "evaluate", str(case.run_id), "--workspace", ws, "--json"]
    return [*core, stage, data, "--workspace", ws, "--json"]


def working_bytes(stage: str, case: Case) -> int:
    """The files a stage reads or writes: the JPEGs (scan, dedup, decode), the tensor cache it writes (decode) or
    reads (epoch, evaluate)."""
    if stage in ("scan", "dedup"):
        return case.jpeg_bytes
    if stage == "decode":
        return case.jpeg_bytes + 3 * case.side**2 * case.n
    return case.tensor_bytes()


def check_output(stage: str, case: Case, m: Measured, before: dict[str, float]) -> tuple[float | None, dict]:
    """The checks a stage's output must pass (else BROKEN RUN); its own seconds and the facts worth keeping."""
    check(m.code == 0, f"{stage} at N={case.n}, {case.side} px exited {m.code}: {m.stderr.strip()[-800:]}")
    try:
        out = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit(f"BROKEN RUN: {stage} printed no JSON: {m.stdout[-400:]!r}") from None
    if stage == "scan":
        check(out["n_images"] == case.n, f"scan counted {out['n_images']} of {case.n} images")
        check(not out["unreadable"], f"scan found unreadable files: {out['unreadable'][:3]}")
        return out["seconds"], {"n_opened": out["n_opened"]}
    if stage == "dedup":
        check(out["n_images"] == case.n, f"dedup hashed {out['n_images']} of {case.n} images")
        check(out["n_redundant"] >= 0.9 * case.copies, f"dedup found {out['n_redundant']} of {case.copies} copies")
        return out["seconds"], {"n_groups": out["n_groups"], "n_redundant": out["n_redundant"], "copies": case.copies}
    if stage == "decode":
        check(out["n_images"] == case.n and out["n_dropped"] == 0, f"decode kept {out['n_images']} of {case.n}")
        return out["seconds"], {"n_decoded": out["n_decoded"]}
    if stage == "epoch":
        check(out["status"] == "completed", f"training ended {out['status']}: {out.get('error')}")
        check(len(out["epochs"]) == 1, f"training ran {len(out['epochs'])} epochs, not 1")
        check(not before or case.tensor_files() == before, "training wrote the tensor cache again (decoded twice)")
        case.run_id = out["run_id"]
        return out["wall_s"], {"run_id": out["run_id"], "test_accuracy": out["test"].get("accuracy")}
    return None, {"accuracy": out.get("accuracy"), "n": out.get("n")}


def run_stage(stage: str, case: Case, logs: Path, settle_s: float, repeats: int = 1) -> Row:
    """One stage of one case, measured; the stages that leave every cache as they found it (REPEATABLE) are run
    ``repeats`` times and give the median of each figure (the range of peaks is kept in ``facts``)."""
    runs = []
    for k in range(repeats if stage in REPEATABLE else 1):
        load, others = settle(settle_s)
        available = mem_available()
        busy = load > BUSY_LOAD
        print(f"  {stage:<8} N={case.n:,} {case.side} px: load {load:.2f}, others using {others:.1f} cores now"
              + ("  BUSY MACHINE" if busy else ""), flush=True)  # fmt: skip
        before = case.tensor_files() if stage == "epoch" else {}
        m = run_measured(argv_for(stage, case), logs, f"n{case.n}-s{case.side}-{stage}-{k}")
        inner, facts = check_output(stage, case, m, before)
        runs.append((m, inner, facts, load, others, busy, available))
    m, inner, facts, load, others, busy, available = runs[-1]  # the last run's run id feeds evaluate
    peaks = [r[0].peak / MB for r in runs]
    if len(runs) > 1:
        facts = {**facts, "peaks_mb": [round(p) for p in peaks], "seconds": [round(r[0].seconds, 1) for r in runs]}
    working = working_bytes(stage, case)
    anon = float(np.median([r[0].anon for r in runs]))
    # The files stay in the page cache only if they fit beside the stage's own memory.
    disk_bound = working + anon > available
    inners = [r[1] for r in runs if r[1] is not None]
    return Row(case.n, case.side, stage, float(np.median([r[0].seconds for r in runs])),
               float(np.median(inners)) if inners else None, float(np.median(peaks)), anon / MB,
               float(np.median([r[0].read for r in runs])) / MB, working / MB, available / MB, max(r[3] for r in runs),
               max(r[4] for r in runs), any(r[5] for r in runs), disk_bound, facts)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# The report


def print_table(rows: list[Row], side: int) -> None:
    print(f"\n{side} px")
    print(f"{'N':>8}  {'stage':<9}{'seconds':>9}{'inner s':>9}{'ms/image':>10}{'peak MB':>9}{'anon MB':>9}"
          f"{'read MB':>9}{'files MB':>10}  note")  # fmt: skip
    for r in (r for r in rows if r.side == side):
        notes = ([f"BUSY (load {r.load:.1f}, others {r.others:.1f} cores)"] if r.busy else []) + (
            ["disk-bound: the data does not fit the page cache"] if r.disk_bound else []
        ) + ([f"median of {len(r.facts['peaks_mb'])}: peaks {min(r.facts['peaks_mb']):,}-{max(r.facts['peaks_mb']):,}"]
             if "peaks_mb" in r.facts else [])  # fmt: skip
        inner = "-" if r.inner_s is None else f"{r.inner_s:.1f}"
        print(f"{r.n:>8,}  {r.stage:<9}{r.seconds:>9.1f}{inner:>9}{r.ms_per_image:>10.3f}{r.peak_mb:>9.0f}"
              f"{r.anon_mb:>9.0f}{r.read_mb:>9.0f}{r.working_mb:>10.0f}  {'; '.join(notes)}")  # fmt: skip


def exponents(rows: list[Row]) -> list[dict]:
    """Per side and stage: slope of log(y) against log(N) for ms per image, peak and anon memory (0: flat per
    image or constant memory; 1: memory proportional to N)."""
    out = []
    for side in sorted({r.side for r in rows}):
        for stage in STAGES:
            these = sorted((r for r in rows if r.side == side and r.stage == stage), key=lambda r: r.n)
            if len({r.n for r in these}) < 2:
                continue
            ns = [r.n for r in these]
            out.append({"side": side, "stage": stage, "sizes": ns,
                        "ms_per_image": slope(ns, [r.ms_per_image for r in these]),
                        "peak_mb": slope(ns, [r.peak_mb for r in these]),
                        "anon_mb": slope(ns, [r.anon_mb for r in these])})  # fmt: skip
    return out


def slope(ns: list[int], values: list[float]) -> float:
    """The exponent k of ``values ~ N^k``, least squares on the logs."""
    return float(np.polyfit(np.log(ns), np.log(np.maximum(values, 1e-9)), 1)[0])


def print_exponents(fits: list[dict]) -> None:
    if not fits:
        print("\ngrowth exponents: need two sizes or more")
        return
    print("\ngrowth exponents, log-log over the sizes run (time per image: 0 is flat; memory: 0 is constant)")
    print(f"{'side':>5}  {'stage':<9}{'ms/image':>10}{'peak MB':>9}{'anon MB':>9}  sizes")
    for f in fits:
        print(f"{f['side']:>5}  {f['stage']:<9}{f['ms_per_image']:>10.2f}{f['peak_mb']:>9.2f}{f['anon_mb']:>9.2f}  "
              + ", ".join(f"{n:,}" for n in f["sizes"]))  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,50000,200000", help="image counts N, comma-separated")
    p.add_argument("--sides", default="64,160", help="decode sides in px (train --image-size), comma-separated")
    p.add_argument("--max", type=int, default=None, metavar="N",
                   help="drop every size above N (none left: N alone), for quick runs")  # fmt: skip
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "studio-bench-scale",
                   help="where the image folders are made once (n<N>/) and the workspaces live (work/)")  # fmt: skip
    p.add_argument(
        "--stages", default=",".join(STAGES), help="stages to run, comma-separated, from " + ",".join(STAGES)
    )
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the machine, rows and exponents")
    p.add_argument("--settle", type=float, default=30.0, metavar="S",
                   help="wait up to S seconds before a stage for the 1-minute load to fall to 1.0 (default 30)")  # fmt: skip
    p.add_argument("--keep-workspaces", action="store_true", help="keep each (N, side)'s workspace (tensor caches)")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="run epoch and evaluate R times and report the medians (default 1)")  # fmt: skip
    args = p.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if args.max is not None:
        args.sizes = [n for n in args.sizes if n <= args.max] or [args.max]
    args.sides = [int(s) for s in args.sides.split(",") if s.strip()]
    asked = {x.strip() for x in args.stages.split(",") if x.strip()}
    if asked - set(STAGES):
        p.error(f"unknown stages {sorted(asked - set(STAGES))}; choose from {','.join(STAGES)}")
    args.stages = [s for s in STAGES if s in asked]  # always in pipeline order
    if "evaluate" in args.stages and "epoch" not in args.stages:
        p.error("evaluate scores the epoch stage's run: add epoch to --stages")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram_gb']} GB RAM, Python {facts['python']}; "
          f"commit {facts['commit']} (+{facts['uncommitted_core_files']} uncommitted files under core/)")  # fmt: skip
    print(f"sizes {args.sizes}, sides {args.sides}, stages {','.join(args.stages)}; data in {args.cache}")
    rows: list[Row] = []
    for n in args.sizes:
        data = scale_data.ensure(args.cache, n)
        jpeg_bytes, copies = scale_data.folder_bytes(data), scale_data.n_copies(n)
        for side in args.sides:
            print(f"\nN={n:,} at {side} px: JPEGs {jpeg_bytes / MB:,.0f} MB, decoded {3 * side * side * n / MB:,.0f} MB, "
                  f"MemAvailable {mem_available() / MB:,.0f} MB", flush=True)  # fmt: skip
            ws = args.cache / "work" / f"n{n}-s{side}"
            shutil.rmtree(ws, ignore_errors=True)  # fresh: every cache cold
            logs = ws / "logs"
            logs.mkdir(parents=True)
            case = Case(n, side, data, ws, jpeg_bytes, copies)
            for stage in args.stages:
                rows.append(run_stage(stage, case, logs, args.settle, args.repeats))
            print(f"  tensor cache {case.tensor_bytes() / MB:,.0f} MB; logs in {logs}", flush=True)
            if not args.keep_workspaces:
                shutil.rmtree(ws, ignore_errors=True)
    for side in args.sides:
        print_table(rows, side)
    fits = exponents(rows)
    print_exponents(fits)
    if args.json:
        doc = {"machine": facts, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "rows": [{**asdict(r), "ms_per_image": r.ms_per_image} for r in rows], "exponents": fits}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
