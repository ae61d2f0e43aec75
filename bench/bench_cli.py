"""Benchmark: how long the command line takes to answer, against a bare Python start in the same run.

``python -m core --help`` and ``python -m core runs --json`` must answer in under a second: they import no
torch, no pandas, no scikit-learn. Each command is run ``--repeats`` times, interleaved with the baseline
(``python -c pass``), and the medians are printed with the ratio.

    .venv/bin/python -m bench.bench_cli [--repeats 7] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.checks import check

ROOT = Path(__file__).resolve().parent.parent


def _seconds(argv: list[str]) -> float:
    began = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - began
    check(proc.returncode == 0, f"{' '.join(argv[1:])} exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workspace", default=None, help="a workspace with runs (default: a new empty one)")
    args = parser.parse_args()
    ws = args.workspace or tempfile.mkdtemp(prefix="bench-cli-")
    py = sys.executable
    commands = {
        "python -c pass (baseline)": [py, "-c", "pass"],
        "python -m core --help": [py, "-m", "core", "--help"],
        "python -m core runs --json": [py, "-m", "core", "runs", "--json", "--workspace", ws],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # interleaved: a busy moment hits every command alike
        for name, argv in commands.items():
            times[name].append(_seconds(argv))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, {args.repeats} runs each (median, min-max)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<32} {median:6.3f} s  ({min(values):.3f}-{max(values):.3f})  {median / base:5.1f}x baseline")


if __name__ == "__main__":
    main()
