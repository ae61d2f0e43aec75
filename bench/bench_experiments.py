"""Benchmark: a search and the learning-rate finder on ``sample:digits``, against doing the same by hand.

    .venv/bin/python -m bench.bench_experiments [--trials 4] [--epochs 2] [--workspace DIR]

Every timed command is a fresh ``python -m core ...`` process (imports included) on one workspace whose scan and
decoded-image caches were filled first by an untimed one-epoch run, so both sides read the same caches:

1. Search: ``search sample:digits --space SPACE --trials N --epochs E`` (random draws of the learning rate on a log
   range and of the optimizer; trials queued on the job registry, as many at once as there are cores), against
   the by-hand way: the very settings its trials drew, trained one ``train`` command after another. The ratio
   search / by hand is what queuing the trials side by side saves (or costs) on this machine.
2. Learning-rate finder: ``lr-find sample:digits`` (100 steps) against ``train sample:digits --epochs 1``, the
   cheapest real run. The ratio says what a sweep costs in epochs.

Nothing is asserted on time. The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.checks import check

SPACE = {"lr": {"low": 0.01, "high": 0.3, "log": True}, "optimizer": ["sgd", "adam"]}


def core(ws: Path, *args: str) -> tuple[float, dict]:
    """Run ``python -m core ARGS --workspace WS --json``; (wall seconds, its JSON)."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core", *args, "--workspace", str(ws), "--json"],
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    seconds = time.perf_counter() - began
    check(proc.returncode == 0, f"{' '.join(args)} failed: {proc.stderr.strip()[-400:]}")
    return seconds, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="bench-experiments-"))
    print(f"cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}, workspace {ws}")
    core(ws, "train", "sample:digits", "--epochs", "1")  # untimed: fills the scan and decode caches

    search_s, search = core(ws, "search", "sample:digits", "--space", json.dumps(SPACE), "--trials",
                            str(args.trials), "--epochs", str(args.epochs))  # fmt: skip
    check(search["status"] == "completed" and len(search["trials"]) == args.trials, f"search ended {search}")
    by_hand = 0.0
    for trial in search["trials"]:
        p = trial["params"]
        seconds, _ = core(ws, "train", "sample:digits", "--epochs", str(args.epochs), "--lr", str(p["lr"]),
                          "--optimizer", p["optimizer"])  # fmt: skip
        by_hand += seconds
    best = max(t["value"] for t in search["trials"])
    print(f"\nsearch, {args.trials} trials x {args.epochs} epochs: {search_s:6.1f} s   (best validation accuracy "
          f"{best:.1%})")  # fmt: skip
    print(f"by hand, the same settings one after another: {by_hand:6.1f} s   ratio search/by hand "
          f"{search_s / by_hand:.2f}")  # fmt: skip

    find_s, found = core(ws, "lr-find", "sample:digits")
    check(len(found["lrs"]) >= 20 and found["suggested"] > 0, "the sweep suggested nothing")
    epoch_s, _ = core(ws, "train", "sample:digits", "--epochs", "1")
    print(f"\nlr-find (100 steps, suggested {found['suggested']:.3g}, sweep alone {found['seconds']:.1f} s): "
          f"{find_s:6.1f} s")  # fmt: skip
    print(f"train --epochs 1: {epoch_s:6.1f} s   ratio lr-find/one-epoch run {find_s / epoch_s:.2f}")
    print(f"\nload average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
