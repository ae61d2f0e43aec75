"""Benchmark: label issues' quick mode (``core.labels.quick``) on 10,000 images of 64 px: seconds and peak memory.

    .venv/bin/python -m bench.bench_labels [--n 10000] [--classes 10] [--side 64] [--arch resnet18] [--repeats 2]
                                           [--folder DIR]

Setup, once (kept in ``--folder`` when given, so a second run skips it): ``n`` JPEGs of ``side`` px cut from the
real photos (``tests.realphotos.write_photo_classes``, ``classes`` classes), and one epoch of ``arch`` trained on
them at ``side`` px through the job registry (the feature extractor: its weights matter little to the time).

Then each side in a fresh process of its own (so ``ru_maxrss`` is that side's peak: see :func:`peak_mb`),
interleaved, ``repeats`` times, after one untimed round:

* ours, warm: ``quick_out_of_sample`` as a user meets it after training: the scan's manifest and the decoded
  tensors are in the workspace cache, left by the run;
* ours, cold: the same with the workspace's manifests and decoded tensors deleted first: every JPEG opened;
* plain: a plain PyTorch loop with no studio code: each JPEG opened with Pillow, made a tensor, normalised with the
  run's mean and std, batches of 256 through torchvision's network (the run's weights, its last layer replaced by
  ``Identity``) under ``inference_mode``; then scikit-learn's ``cross_val_predict`` of
  ``StandardScaler + LogisticRegression`` over the same stratified, seeded 5 folds.

Printed per side: seconds for the feature pass (files to feature matrix: ours' scan, decode or cache read, and the
network's pass), of which the network's own forward passes and the rest (reading the images, ours' scan and model
loading), seconds for the K-fold regression, the process's peak resident memory, and ours/plain ratios. The
network's pass is the same work on every side: its spread says how much of a difference the machine's load makes.
Imports (torch, torchvision, scikit-learn: about 2 s) are outside the clock on every side. The features and the
out-of-fold probabilities of ours and plain are checked to agree (a broken run is refused). The machine may be
shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_scan import cpu_model, load_average
from bench.checks import check
from core.common.cpu import usable_cores

SIDES = ("ours-warm", "plain", "ours-cold")
FOLDS = 5
SEED = 0  # the quick mode's fold seed (core.labels.quick.SEED): the same folds on both sides


def setup(folder: Path, n: int, classes: int, side: int, arch: str) -> int:
    """The photo dataset and the trained run (made once per folder); returns the run id."""
    from core.common.workspace import Workspace
    from core.store.runs import RunStore
    from tests.realphotos import write_photo_classes
    from tests.support import train_to_the_end

    data, ws = folder / "photos", Workspace.open(folder / "ws").with_roots(folder)
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        write_photo_classes(data, n // classes, side, n_classes=classes)
        (data / ".complete").write_text("ok\n")
    done = RunStore(ws.runs_db).list_runs(status="completed")
    if done:
        return done[0].run_id
    started = time.perf_counter()
    run = train_to_the_end(ws, dataset=str(data), arch=arch, epochs=1, image_size=side)
    print(f"setup: trained {arch} for one epoch in {time.perf_counter() - started:.0f} s", flush=True)
    return run.run_id


def peak_mb() -> float:
    """This process's peak resident memory. ``ru_maxrss`` keeps the RSS of the process that forked it (Linux saves
    the old memory's high-water mark at exec): the parent stays small (it imports numpy only; setup runs in a child)
    so the figure is the child's own, and ``VmHWM`` (the new memory's own peak) checks that."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    check(abs(maxrss - hwm) <= max(50.0, 0.05 * hwm), f"ru_maxrss {maxrss:.0f} MB but VmHWM {hwm:.0f} MB")
    return maxrss


def ours(folder: Path, run_id: int, cold: bool) -> dict[str, float]:
    """Quick mode in this process; its features and probabilities left in ``folder`` for the check."""
    import torchvision  # noqa: F401  (imported by the network's first build: outside the clock, as in plain)

    from core.common.workspace import Workspace
    from core.datasets.sources import resolve_dataset
    from core.labels.quick import quick_out_of_sample
    from core.store.runs import RunStore

    ws = Workspace.open(folder / "ws").with_roots(folder)
    if cold:
        for cache in ("manifests", "tensors"):
            shutil.rmtree(ws.cache / cache, ignore_errors=True)
    started = time.perf_counter()
    oos = quick_out_of_sample(ws, RunStore(ws.runs_db), resolve_dataset(str(folder / "photos"), ws), run_id, FOLDS)
    total = time.perf_counter() - started
    np.save(folder / "ours-probs.npy", oos.probs)
    (folder / "ours-paths.json").write_text(json.dumps(oos.paths))
    return {"features": total - oos.seconds["regression"], "network": oos.seconds["features"],
            "regression": oos.seconds["regression"], "n": len(oos.paths)}  # fmt: skip


def plain(folder: Path) -> dict[str, float]:
    """The same in a plain PyTorch loop and scikit-learn (the weights, mean and std saved by :func:`export`)."""
    import torch
    import torchvision
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    saved = torch.load(folder / "plain-model.pt", weights_only=True)
    paths = json.loads((folder / "ours-paths.json").read_text())
    started = time.perf_counter()
    model = torchvision.models.get_model(saved["arch"], weights=None, num_classes=len(saved["classes"]))
    model.load_state_dict(saved["weights"])
    last = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]  # ResNet: "fc"
    parent, _, leaf = last.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, torch.nn.Identity())
    model.eval()
    mean, std = torch.tensor(saved["mean"]).view(1, 3, 1, 1), torch.tensor(saved["std"]).view(1, 3, 1, 1)
    features, network_s = [], 0.0
    with torch.inference_mode():
        for start in range(0, len(paths), 256):
            batch = [np.asarray(Image.open(folder / "photos" / p).convert("RGB")) for p in paths[start : start + 256]]
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255)
            forward = time.perf_counter()
            features.append(model((x - mean) / std))
            network_s += time.perf_counter() - forward
    features = torch.cat(features).numpy()
    feature_s = time.perf_counter() - started
    labels = np.array([saved["classes"].index(p.split("/")[0]) for p in paths])
    started = time.perf_counter()
    probs = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), features, labels,
                              cv=StratifiedKFold(FOLDS, shuffle=True, random_state=SEED), method="predict_proba")  # fmt: skip
    regression_s = time.perf_counter() - started
    np.save(folder / "plain-probs.npy", probs.astype(np.float32))
    return {"features": feature_s, "network": network_s, "regression": regression_s, "n": len(paths)}


def export(folder: Path, run_id: int) -> None:
    """The run's weights, classes, mean and std in a plain torch file for the plain side (untimed)."""
    import torch

    from core.common.workspace import Workspace
    from core.train.checkpoints import load_for_inference
    from core.train.run_folder import checkpoint_path

    model = load_for_inference(checkpoint_path(Workspace.open(folder / "ws"), run_id), device="cpu")
    torch.save({"arch": model.arch, "classes": model.classes, "mean": model.mean, "std": model.std,
                "weights": model.model.state_dict()}, folder / "plain-model.pt")  # fmt: skip


def worker(side: str, folder: Path, run_id: int, args: argparse.Namespace) -> None:
    """One side (or the setup) in this process; prints its result as JSON on the last line."""
    if side == "setup":
        run_id = setup(folder, args.n, args.classes, args.side, args.arch)
        export(folder, run_id)
        print(json.dumps({"run": run_id}))
        return
    result = plain(folder) if side == "plain" else ours(folder, run_id, cold=side == "ours-cold")
    print(json.dumps({**result, "peak_mb": peak_mb()}))


def in_child(side: str, folder: Path, run_id: int, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.bench_labels", "--worker", side, "--folder", str(folder), "--run",
               str(run_id), "--n", str(args.n), "--classes", str(args.classes), "--side", str(args.side), "--arch",
               args.arch]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    check(done.returncode == 0, f"{side} failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), end="\n" if len(lines) > 1 else "", flush=True)  # the setup's words
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_labels", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images (default 10,000)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--side", type=int, default=64, help="image side in px (default 64)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--folder", help="keep the dataset and the run here (reused by the next run)")
    parser.add_argument("--worker", choices=(*SIDES, "setup"), help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, Path(args.folder), args.run, args)
        return 0
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="bench-labels-"))
    folder.mkdir(parents=True, exist_ok=True)
    run_id = int(in_child("setup", folder, 0, args)["run"])
    load_before = load_average()
    for side in SIDES:  # untimed round: page cache, the workspace's caches, the byte-code
        in_child(side, folder, run_id, args)
    times: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        for side in SIDES:
            times[side].append(in_child(side, folder, run_id, args))
            if side == "ours-warm":
                check_agreement(folder)
    load_after = load_average()
    report(args, times, load_before, load_after)
    if not args.folder:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def check_agreement(folder: Path) -> None:
    """Ours and plain must have made the same probabilities (same features, same folds) when both exist."""
    if not (folder / "plain-probs.npy").exists():
        return
    a, b = np.load(folder / "ours-probs.npy"), np.load(folder / "plain-probs.npy")
    check(a.shape == b.shape, f"probabilities of shapes {a.shape} and {b.shape}")
    # The features agree to about 1e-6 of their size (measured); lbfgs stops within its tolerance, which moves a
    # nearly separable regression's probabilities a little (500 images: mean 0.0006, at most 0.035).
    mean = float(np.abs(a - b).mean())
    check(mean < 0.005, f"ours and plain probabilities differ by {mean:.4f} on average")
    check(float((a.argmax(1) == b.argmax(1)).mean()) >= 0.99, "ours and plain disagree on the best guess")


def report(args: argparse.Namespace, times: dict, load_before: tuple, load_after: tuple) -> None:
    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in times[side])

    n = times["plain"][0]["n"]
    print(f"\nLabel issues, quick mode: {n:,} JPEGs of {args.side} px, {args.classes} classes, {args.arch} (one "
          f"epoch) features, {FOLDS}-fold logistic regression; medians of {args.repeats} interleaved runs, each side "
          "in a fresh process")  # fmt: skip
    print(f"machine: {usable_cores()} usable cores, CPU {cpu_model()}, Python {platform.python_version()}")
    busy = load_before[0] > usable_cores()
    print(f"load average 1/5/15 min: before {' '.join(map(str, load_before))}, after {' '.join(map(str, load_after))}"
          + ("  ** BUSY MACHINE: timings unreliable **" if busy else ""))  # fmt: skip
    print(f"\n{'side':<10} {'features s':>10} {'network':>8} {'the rest':>8} {'regression s':>12} {'total s':>8} "
          f"{'peak MB':>8}   spread of features / regression (min-max)")  # fmt: skip
    for side in SIDES:
        features, network = median(side, "features"), median(side, "network")
        spread = [f"{min(r[k] for r in times[side]):.1f}-{max(r[k] for r in times[side]):.1f}"
                  for k in ("features", "regression")]  # fmt: skip
        print(f"{side:<10} {features:>10.2f} {network:>8.2f} {features - network:>8.2f} {median(side, 'regression'):>12.2f} "
              f"{features + median(side, 'regression'):>8.2f} {median(side, 'peak_mb'):>8.0f}   {' / '.join(spread)}")  # fmt: skip
    for side in ("ours-warm", "ours-cold"):
        ratios = [median(side, k) / median("plain", k) for k in ("features", "regression", "peak_mb")]
        print(f"{side}/plain: feature pass {ratios[0]:.2f}x, regression {ratios[1]:.2f}x, peak memory {ratios[2]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
