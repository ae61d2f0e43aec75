"""Benchmark: time to 98% test accuracy on ~2,000 real 100 px photos, the studio against a plain torchvision loop
and fastai's ``fit_one_cycle``, all three from scratch on the same split (issue 24).

    .venv/bin/python -m bench.bench_photos [--threads 2] [--only ours,plain,fastai] [--workspace DIR]

The photos: ``tests.realphotos.write_photo_classes``, 10 classes x 200 = 2,000 crops of scikit-image's and
scikit-learn's bundled photos (several classes are strips of one photo, sharing its colours), 100 x 100 JPEGs,
split 70/15/15 per class into ``train/ val/ test/`` folders that all three read.

Every side is one fresh process timed from start to exit (imports, data, training, evaluation):

* ours: ``python -m core train <folder> --json``, the default recipe, which decides its own network, size, rate
  and epochs and stops by itself; its test accuracy is its best checkpoint's;
* plain: ``torchvision.models.resnet18(num_classes=10)``, Adam 1e-3, batch 64, 100 px, ``ImageFolder`` +
  ``DataLoader(num_workers=0)``, test accuracy after every epoch, stopping at the first epoch >= 98%;
* fastai: ``vision_learner(dls, resnet18, pretrained=False)`` on ``ImageDataLoaders.from_folder`` with
  ``aug_transforms()``, ``fit_one_cycle(--fastai-epochs)`` at fastai's default rate, test accuracy after every
  epoch, stopping at the first >= 98%.

The baselines look at the test split after every epoch and stop there: an advantage ours does not take (it
stops on its own signals and is scored once). fastai is not a studio dependency: install it apart
(``pip install --target DIR fastai==2.8.12 fastcore fasttransform fastprogress fastdownload plum-dispatch``) and
give that folder with ``--fastai-path``; without it the fastai row says it was not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.98
SEED = 0
N_CLASSES, PER_CLASS, SIDE = 10, 200, 100


# --------------------------------------------------------------------------------------------------------------
# The photos


def write_split_photos(root: Path) -> Path:
    """``root/{train,val,test}/<class>/<i>.jpg``: 70/15/15 of each class (written once, then reused)."""
    if (root / ".complete").exists():
        return root
    from tests.realphotos import write_photo_classes

    flat = root.parent / f"{root.name}-flat"
    shutil.rmtree(flat, ignore_errors=True)
    write_photo_classes(flat, PER_CLASS, SIDE, n_classes=N_CLASSES, seed=SEED)
    for folder in sorted(p for p in flat.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir(), key=lambda p: int(p.stem))
        n_val = n_test = round(len(files) * 0.15)
        parts = {"test": files[:n_test], "val": files[n_test : n_test + n_val], "train": files[n_test + n_val :]}
        for split, chosen in parts.items():
            (root / split / folder.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                f.rename(root / split / folder.name / f.name)
    shutil.rmtree(flat)
    (root / ".complete").write_text("ok\n")
    return root


# --------------------------------------------------------------------------------------------------------------
# Children (each in its own fresh process; imports inside so each pays only for its own)


def child_plain(root: Path, threads: int, max_epochs: int) -> dict:
    import torch
    import torchvision
    from torchvision import datasets, transforms

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    tf = transforms.Compose([transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])  # fmt: skip
    loader = torch.utils.data.DataLoader
    train = loader(datasets.ImageFolder(str(root / "train"), tf), batch_size=64, shuffle=True, num_workers=0)
    test = loader(datasets.ImageFolder(str(root / "test"), tf), batch_size=64, num_workers=0)
    model = torchvision.models.resnet18(num_classes=N_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    accuracies: list[float] = []
    for _ in range(max_epochs):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        accuracies.append(_accuracy(model, test, torch))
        if accuracies[-1] >= TARGET:
            break
    return {"epochs": len(accuracies), "test_acc": accuracies[-1], "accuracies": accuracies}


def _accuracy(model, batches, torch) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in batches:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def child_fastai(root: Path, threads: int, epochs: int) -> dict:
    import torch
    from fastai.callback.core import Callback, CancelFitException
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, aug_transforms, get_image_files, vision_learner
    from torchvision.models import resnet18

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    dls = ImageDataLoaders.from_folder(root, train="train", valid="val", bs=64, num_workers=0, seed=SEED,
                                       item_tfms=Resize(SIDE), batch_tfms=aug_transforms())  # fmt: skip
    test = dls.test_dl(get_image_files(root / "test"), with_labels=True)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    accuracies: list[float] = []

    class StopAtTarget(Callback):
        def after_epoch(self) -> None:
            accuracies.append(_accuracy(self.learn.model, ((x, y) for x, y in test), torch))
            self.learn.model.train()
            if accuracies[-1] >= TARGET:
                raise CancelFitException

    learn.fit_one_cycle(epochs, cbs=[StopAtTarget()])
    return {"epochs": len(accuracies), "test_acc": accuracies[-1], "accuracies": accuracies}


# --------------------------------------------------------------------------------------------------------------
# The parent


def _timed(argv: list[str], threads: int, extra_path: str = "") -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if extra_path:  # appended: the studio's own packages (PIL, numpy) stay first
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), os.getcwd(), extra_path) if p)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.perf_counter() - started, done


def run_child(kind: str, root: Path, args: argparse.Namespace) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "bench.bench_photos", "--child", kind, "--root", str(root),
            "--threads", str(args.threads), "--max-epochs", str(args.max_epochs),
            "--fastai-epochs", str(args.fastai_epochs)]  # fmt: skip
    wall, done = _timed(argv, args.threads, args.fastai_path if kind == "fastai" else "")
    if done.returncode != 0:
        return wall, {"error": done.stderr[-2000:]}
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def run_ours(root: Path, base: Path, threads: int) -> tuple[float, dict]:
    ws = base / "ws-ours"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(root, ws / "datasets" / root.name)  # before timing: ours then scans and decodes cold
    argv = [sys.executable, "-m", "core", "train", str(ws / "datasets" / root.name), "--threads", str(threads),
            "--workspace", str(ws), "--json"]  # fmt: skip
    wall, done = _timed(argv, threads)
    if done.returncode != 0:
        return wall, {"error": done.stderr[-2000:]}
    out = json.loads(done.stdout)
    from core.store.runs import RunStore

    plan = RunStore(ws / "runs.sqlite").params(out["run_id"])["plan"]  # what the recipe chose, as the run stored it
    return wall, {"epochs": len(out["epochs"]), "test_acc": out["test"]["accuracy"], "arch": out["arch"],
                  "image_size": plan["image_size"], "batch": plan["batch_size"], "lr": plan["lr"],
                  "train_s": out["wall_s"]}  # fmt: skip


def print_table(results: dict[str, tuple[float, dict]]) -> None:
    labels = {"ours": "ours: python -m core train (default recipe)",
              "plain": "plain: torchvision ResNet-18, Adam 1e-3, batch 64",
              "fastai": "fastai: vision_learner resnet18, fit_one_cycle"}  # fmt: skip
    print(f"\n{'side':<52} {'wall s':>8} {'epochs':>7} {'test acc':>9}  reached 98%")
    for kind, (wall, out) in results.items():
        if "error" in out:
            print(f"{labels[kind]:<52} {wall:>8.1f}  NOT RUN / FAILED: {out['error'].strip().splitlines()[-1]}")
            continue
        reached = "yes" if out["test_acc"] >= TARGET else "NO"
        print(f"{labels[kind]:<52} {wall:>8.1f} {out['epochs']:>7} {out['test_acc']:>9.2%}  {reached}")
    if "ours" in results and "error" not in results["ours"][1]:
        o = results["ours"][1]
        print(f"  ours chose {o['arch']} at {o['image_size']} px, {o['batch']} a step at {o['lr']:g}; the run itself "
              f"took {o['train_s']:.0f} s")  # fmt: skip
        for kind in ("plain", "fastai"):
            if kind in results and "error" not in results[kind][1]:
                print(f"  ratio ours/{kind} wall time = {results['ours'][0] / results[kind][0]:.2f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_photos", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every process (default 2)")
    parser.add_argument("--only", default="ours,plain,fastai", help="which sides, comma-separated")
    parser.add_argument("--max-epochs", type=int, default=40, help="cap for the plain loop (default 40)")
    parser.add_argument("--fastai-epochs", type=int, default=20, help="fastai's one cycle (default 20)")
    parser.add_argument("--fastai-path", default="", help="a folder where fastai is installed apart")
    parser.add_argument("--workspace", type=Path, help="folder for the photos and the workspace (default: temp)")
    parser.add_argument("--child", choices=("plain", "fastai"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run = child_plain if args.child == "plain" else child_fastai
        epochs = args.max_epochs if args.child == "plain" else args.fastai_epochs
        print(json.dumps(run(args.root, args.threads, epochs)))
        return 0
    base = (args.workspace or Path(tempfile.mkdtemp(prefix="bench-photos-"))).resolve()
    root = write_split_photos(base / "photos")
    print(f"photos: {N_CLASSES} classes x {PER_CLASS}, {SIDE} px, split 70/15/15 in {root}; "
          f"{args.threads} thread(s); load average before {os.getloadavg()}", flush=True)  # fmt: skip
    results: dict[str, tuple[float, dict]] = {}
    for kind in [k for k in args.only.split(",") if k]:
        print(f"  {kind} ...", flush=True)
        results[kind] = run_ours(root, base, args.threads) if kind == "ours" else run_child(kind, root, args)
        print(f"  {kind}: {results[kind][0]:.0f} s {results[kind][1]}", flush=True)
    print_table(results)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
