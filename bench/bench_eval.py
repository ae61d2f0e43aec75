"""Benchmark: the Evaluate page's metrics of a 10,000-image test split from its stored predictions file.

    .venv/bin/python -m bench.bench_eval [--n 10000] [--classes 10,100,4251] [--repeats 5]

For each class count, synthetic predictions (softmax of logits that favour the true class, so about 60% are
right) are written once with ``core.train.predictions.write_predictions`` (the file a completed run stores), then
in one run, interleaved, after one untimed round:

* ours: ``read_predictions`` (the parquet file) + ``core.evaluate.metrics.compute_metrics`` (accuracy, top-k,
  macro/weighted/per-class precision/recall/F1, confusion matrix, MAP@5, log loss, reliability curve + ECE);
* plain: the same metrics by hand on the probability matrix already in memory (no file read): scikit-learn's
  ``accuracy_score``, ``top_k_accuracy_score``, ``precision_recall_fscore_support`` (three times),
  ``confusion_matrix``, ``log_loss``, plus numpy for MAP@5 (argsort of every row) and the ECE.

Target: ours under one second at 10,000 images. Beyond 100 classes the file holds only the top 5 and the true
class's rank and probability, which is why ours does not grow with the class count while the plain way does.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_scan import cpu_model, load_average
from bench.checks import check
from core.common.cpu import usable_cores
from core.evaluate.metrics import compute_metrics
from core.train.predictions import from_probabilities, read_predictions, write_predictions


def synthetic(n: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, n)
    logits = rng.normal(0, 1.0, (n, n_classes)).astype(np.float32)
    logits[np.arange(n), targets] += np.sqrt(2 * np.log(n_classes))  # about the largest of the others: ~half right
    logits -= logits.max(1, keepdims=True)
    probs = np.exp(logits)
    return targets, probs / probs.sum(1, keepdims=True)


def plain_metrics(targets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """What one would write by hand with scikit-learn and numpy on the in-memory probabilities."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    labels = np.arange(probs.shape[1])
    pred = probs.argmax(1)
    out = {"accuracy": accuracy_score(targets, pred), "top5": top_k_accuracy_score(targets, probs, k=5, labels=labels)}
    for average in ("macro", "weighted", None):
        precision_recall_fscore_support(targets, pred, labels=labels, average=average, zero_division=0)
    confusion_matrix(targets, pred, labels=labels)
    out["log_loss"] = log_loss(targets, probs, labels=labels)
    order = np.argsort(-probs, axis=1)[:, :5]
    hits = order == targets[:, None]
    out["map5"] = float((hits / np.arange(1, 6)).sum(1).mean())
    conf = probs.max(1)
    bins = np.minimum((conf * 15).astype(int), 14)
    right = pred == targets
    out["ece"] = sum(abs(right[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
                     for b in range(15) if (bins == b).any())  # fmt: skip
    return out


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def run(n: int, n_classes: int, repeats: int, folder: Path) -> dict[str, object]:
    targets, probs = synthetic(n, n_classes, seed=n_classes)
    classes = [f"class {i}" for i in range(n_classes)]
    path = folder / f"test_predictions-{n_classes}.parquet"
    write_predictions(path, from_probabilities([f"img{i}.jpg" for i in range(n)], targets, probs, classes))

    def ours():
        return compute_metrics(read_predictions(path))

    def plain():
        return plain_metrics(targets, probs)

    ours(), plain()  # untimed: imports, caches
    times = {"ours": [], "plain": []}
    result = reference = None
    for _ in range(repeats):
        t, result = timed(ours)
        times["ours"].append(t)
        t, reference = timed(plain)
        times["plain"].append(t)
    check(abs(result.accuracy - reference["accuracy"]) < 1e-9, f"{n_classes} classes: accuracies differ")
    check(abs(result.top5 - reference["top5"]) < 1e-9, f"{n_classes} classes: top-5 accuracies differ")
    check(abs(result.map5 - reference["map5"]) < 1e-6, f"{n_classes} classes: MAP@5 differ")
    check(abs(result.log_loss - reference["log_loss"]) < 1e-4, f"{n_classes} classes: log losses differ")
    return {"classes": n_classes, "bytes": path.stat().st_size, "ours": statistics.median(times["ours"]),
            "plain": statistics.median(times["plain"]), "accuracy": result.accuracy, "ece": result.calibration.ece,
            "ece_plain": reference["ece"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="test images (default 10,000)")
    parser.add_argument("--classes", default="10,100,4251", help="class counts, comma-separated (4,251: the whales)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        rows = [run(args.n, int(c), args.repeats, Path(tmp)) for c in args.classes.split(",")]
    load_after = load_average()
    print(f"Evaluation benchmark: {args.n:,} test images, metrics only, medians of {args.repeats} interleaved runs")
    print(f"machine: {usable_cores()} usable cores, CPU {cpu_model()}, Python {platform.python_version()}")
    busy = load_before[0] > usable_cores()
    print(f"load average 1/5/15 min: before {' '.join(map(str, load_before))}, after {' '.join(map(str, load_after))}"
          + ("  ** BUSY MACHINE: timings unreliable **" if busy else ""))  # fmt: skip
    print(f"\n{'classes':>8} {'file kB':>8} {'ours s':>8} {'plain s':>8} {'ours/plain':>10} {'accuracy':>9} {'ECE':>7}")
    for r in rows:
        print(f"{r['classes']:>8} {r['bytes'] / 1024:>8.0f} {r['ours']:>8.3f} {r['plain']:>8.3f} "
              f"{r['ours'] / r['plain']:>9.2f}x {r['accuracy']:>9.3f} {r['ece']:>7.3f}")  # fmt: skip
    worst = max(r["ours"] for r in rows)
    print(f"\nslowest of ours: {worst:.3f} s ({'under' if worst < 1 else 'OVER'} the 1 s target); ours reads the file, "
          "plain starts from the probabilities in memory")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
