"""Benchmark: training on ``sample:digits`` with the studio's engine against the plain torchvision loop.

    .venv/bin/python -m bench.bench_train [--threads 2] [--repeats 1] [--steps 10] [--rounds 5] [--workspace DIR]

Two measurements, each side by side in one run, every timed process started fresh:

1. Time to 97%: whole-process wall time (start to exit: imports, data loading, training, evaluation).
   * plain: the student reports' method. ``resnet18(num_classes=10)``, Adam lr 1e-3, batch 64, 32x32 input,
     images opened with PIL every epoch through ``ImageFolder`` + ``DataLoader(num_workers=0)``, test accuracy
     after every epoch, stopping at the first epoch with >= 97% (at most ``--max-epochs``);
   * ours: ``python -m core train sample:digits --json`` (the default recipe) in a fresh workspace
     (cold scan, cold decode), test accuracy of its best checkpoint.
   The ratio ours/plain must be <= 0.5.
2. Throughput with the same model (ResNet-18), batch 64, 32x32 input and optimizer (Adam): training images/s
   of the plain loop's steps (PIL decode + transforms + step) against ours (``train_one_epoch`` on batches cut
   from the decoded tensor, with the default augmentation), in one fresh process, warm-up steps first, then
   ``--rounds`` interleaved rounds of ``--steps`` steps each; medians. The ratio ours/plain must be >= 0.9.

Every process gets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and ``torch.set_num_threads`` = ``--threads``.
Nothing is asserted on time; a run whose accuracy misses 97% is reported as such. The machine may be shared:
the load average is printed before and after, and a busy start is flagged.
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
import time
from pathlib import Path

TARGET = 0.97
SEED = 0


# --------------------------------------------------------------------------------------------------------------
# Children (each runs in its own fresh process; imports stay inside so that a child pays only for its own)


def child_plain(root: Path, threads: int, max_epochs: int) -> dict:
    """The plain loop, to the first epoch with >= 97% test accuracy."""
    import torch
    import torchvision
    from torchvision import datasets, transforms

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    train_loader, test_loader = _plain_loaders(root, datasets, transforms, torch)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    accuracies = []
    for _ in range(max_epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        accuracies.append(_plain_accuracy(model, test_loader, torch))
        if accuracies[-1] >= TARGET:
            break
    return {"epochs": len(accuracies), "test_acc": accuracies[-1], "accuracies": accuracies}


def _plain_loaders(root: Path, datasets, transforms, torch) -> tuple:
    tf = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])  # fmt: skip
    train = datasets.ImageFolder(str(root / "train"), tf)
    test = datasets.ImageFolder(str(root / "test"), tf)
    loader = torch.utils.data.DataLoader
    return loader(train, batch_size=64, shuffle=True, num_workers=0), loader(test, batch_size=64, num_workers=0)


def _plain_accuracy(model, loader, torch) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader.dataset)


def child_throughput(root: Path, workspace: Path, threads: int, steps: int, rounds: int) -> dict:
    """Training images/s of the plain loop's steps and of ours, same model/batch/size/optimizer, interleaved."""
    import itertools

    import torch

    torch.set_num_threads(threads)
    from core.common.workspace import Workspace

    plain = _plain_stepper(root, itertools)
    ours = _ours_stepper(Workspace.open(workspace), itertools)
    plain(3), ours(3)  # warm-up: first calls build oneDNN kernels and fill caches
    plain_rates, our_rates = [], []
    for _ in range(rounds):
        plain_rates.append(plain(steps))
        our_rates.append(ours(steps))
    return {"plain": plain_rates, "ours": our_rates}


def _plain_stepper(root: Path, itertools):
    """n steps of the plain loop (PIL decode + transforms every step) -> images/s."""
    import torch
    import torchvision
    from torchvision import datasets, transforms

    torch.manual_seed(SEED)
    loader, _ = _plain_loaders(root, datasets, transforms, torch)
    model = torchvision.models.resnet18(num_classes=10).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()

    def plain(n: int) -> float:
        began, seen = time.perf_counter(), 0
        for x, y in itertools.islice(iter(loader), n):
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
            seen += len(y)
        return seen / (time.perf_counter() - began)

    return plain


def _ours_stepper(ws, itertools):
    """n steps of ours (train_one_epoch on batches cut from the decoded tensor) -> images/s."""
    import torch

    from core.train.batches import Batches
    from core.train.config import TrainConfig
    from core.train.loop import Tally, train_one_epoch
    from core.train.models import build_model
    from core.train.optim import build_optimizer, choose_precision
    from core.train.prepare import prepare
    from core.train.schedules import build_scheduler

    config = TrainConfig(dataset="sample:digits", arch="resnet18", image_size=32, optimizer="adam", lr=1e-3,
                           schedule="none", label_smoothing=0.0, weight_decay=0.0)  # fmt: skip
    prepared = prepare(config, ws)
    c = prepared.config
    model = build_model("resnet18", len(prepared.classes)).train()
    optimizer = build_optimizer(model, c)
    scheduler = build_scheduler(optimizer, c, 1000)
    precision = choose_precision("off", torch.device("cpu"))
    criterion = torch.nn.CrossEntropyLoss()
    batches = Batches(prepared.tensors.images, prepared.labels, prepared.indices["train"], batch_size=64,
                        mean=prepared.mean, std=prepared.std, augment=c.augment, shuffle=True)  # fmt: skip
    epochs = itertools.count()

    def ours(n: int) -> float:
        tally = Tally.zero(torch.device("cpu"))
        began = time.perf_counter()
        train_one_epoch(model, itertools.islice(batches.epoch(next(epochs)), n), optimizer, scheduler, criterion,
                          precision, tally=tally, step=0)  # fmt: skip
        tally.read()  # the last step's work is done once its sums are read
        return tally.seen / (time.perf_counter() - began)

    return ours


# The parent


def run_child(args: list[str], threads: int) -> tuple[float, dict]:
    """Start ``python -m bench.bench_train --child ...`` fresh; (wall seconds start to exit, its JSON)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.bench_train", "--child", *args, "--threads", str(threads)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"BROKEN RUN: child {args[0]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def fresh_workspace(base: Path, sample: Path, name: str) -> Path:
    """A new workspace holding a copy of the sample (copied before timing: ours then scans and decodes cold)."""
    ws = base / name
    shutil.copytree(sample, ws / "datasets" / sample.name)
    return ws


def race(base: Path, sample: Path, threads: int, repeats: int, max_epochs: int) -> dict[str, list]:
    runs: dict[str, list] = {"plain": [], "ours": []}
    for r in range(repeats):
        print(f"  round {r + 1}/{repeats}: plain ...", flush=True)
        runs["plain"].append(run_child(["plain", "--root", str(sample), "--max-epochs", str(max_epochs)], threads))
        print(f"  round {r + 1}/{repeats}: ours ...", flush=True)
        ws = fresh_workspace(base, sample, f"ws-race-{r}")
        runs["ours"].append(run_cli(ws, threads))
    return runs


def run_cli(workspace: Path, threads: int) -> tuple[float, dict]:
    """``python -m core train sample:digits --json``, the product itself, timed from start to exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-m", "core", "train", "sample:digits", "--threads", str(threads),
            "--workspace", str(workspace), "--json"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"BROKEN RUN: python -m core train exited {done.returncode}:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout)
    return wall, {"epochs": len(out["epochs"]), "test_acc": out["test"]["accuracy"], "arch": out["arch"],
                  "train_s": out["wall_s"]}  # fmt: skip


def print_race(runs: dict[str, list]) -> None:
    print(f"{'method':<46} {'wall s':>8} {'epochs':>7} {'test acc':>9}")
    for label, key in (("plain: torchvision ResNet-18 loop to 97%", "plain"), ("ours: default recipe", "ours")):
        for wall, out in runs[key]:
            print(f"{label:<46} {wall:>8.1f} {out['epochs']:>7} {out['test_acc']:>9.2%}")
    ours_detail = runs["ours"][0][1]
    print(f"  ours: `python -m core train sample:digits` chose {ours_detail['arch']}; the run itself (scan, decode, "
          f"train, test) took {ours_detail['train_s']:.1f} s of the process's wall time")  # fmt: skip
    plain_wall = statistics.median(w for w, _ in runs["plain"])
    ours_wall = statistics.median(w for w, _ in runs["ours"])
    reached = all(o["test_acc"] >= TARGET for _, o in runs["ours"]) and all(
        o["test_acc"] >= TARGET for _, o in runs["plain"]
    )
    verdict = "ok" if ours_wall / plain_wall <= 0.5 and reached else "MISSED"
    print(f"  ratio ours/plain wall time (medians) = {ours_wall / plain_wall:.2f} (target <= 0.5: {verdict}"
          + ("" if reached else "; a run did not reach 97%") + ")")  # fmt: skip


def print_throughput(rates: dict[str, list[float]], steps: int) -> None:
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["ours"])
    print(f"{'method':<46} {'median img/s':>13}   rounds ({steps} steps x 64 images each)")
    print(
        f"{'plain: ImageFolder+DataLoader, PIL each step':<46} {plain:>13.1f}   "
        + "  ".join(f"{r:.0f}" for r in rates["plain"])
    )
    print(
        f"{'ours: cached tensor + train_one_epoch':<46} {ours:>13.1f}   " + "  ".join(f"{r:.0f}" for r in rates["ours"])
    )
    print(
        f"  ratio ours/plain images/s = {ours / plain:.2f} (target >= 0.9: {'ok' if ours / plain >= 0.9 else 'MISSED'})"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_train", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every process (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="time-to-97%% runs of each side (default 1)")
    parser.add_argument("--max-epochs", type=int, default=30, help="cap for the plain loop (default 30)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per throughput round (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds (default 5)")
    parser.add_argument("--workspace", type=Path, help="folder for the sample and workspaces (default: temp)")
    parser.add_argument("--skip-race", action="store_true", help="only the throughput comparison")
    parser.add_argument("--skip-throughput", action="store_true", help="only the time-to-97%% comparison")
    parser.add_argument("--child", choices=("plain", "throughput"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child_main(args: argparse.Namespace) -> int:
    if args.child == "plain":
        out = child_plain(args.root, args.threads, args.max_epochs)
    else:
        out = child_throughput(args.root, args.workspace, args.threads, args.steps, args.rounds)
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    from bench.bench_scan import cpu_model, load_average
    from core.common.cpu import usable_cores
    from core.datasets import samples

    base = (args.workspace or Path(tempfile.mkdtemp(prefix="bench-train-"))).resolve()
    sample = samples.sample_path("sample:digits", base / "sample" / "datasets")
    load_before = load_average()
    print(f"train benchmark: sample:digits (train/val/test 1257/270/270, 8x8 px) in {base}")
    print(f"machine: {usable_cores()} usable cores, CPU {cpu_model()}; {args.threads} torch threads in every process")
    if not args.skip_race:
        print("time to 97% test accuracy, whole fresh processes:")
        runs = race(base, sample, args.threads, args.repeats, args.max_epochs)
    if not args.skip_throughput:
        print(
            f"throughput: ResNet-18, batch 64, 32x32, Adam; {args.rounds} interleaved rounds of {args.steps} steps ..."
        )
        _, rates = run_child(["throughput", "--root", str(sample), "--workspace", str(fresh_workspace(base, sample,
                             "ws-throughput")), "--steps", str(args.steps), "--rounds", str(args.rounds)], args.threads)  # fmt: skip
    load_after = load_average()
    print()
    busy = load_before[0] > usable_cores() * 0.5
    print(f"load average 1/5/15 min: before {' '.join(map(str, load_before))}, after {' '.join(map(str, load_after))}"
          + ("  ** BUSY MACHINE at the start: timings unreliable **" if busy else ""))  # fmt: skip
    if not args.skip_race:
        print_race(runs)
    if not args.skip_throughput:
        print_throughput(rates, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
