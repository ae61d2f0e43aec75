"""Quick mode: out-of-sample probabilities in seconds, without training a network.

The chosen finished run's network (its best checkpoint) describes every labelled image of the dataset: the
features its last linear layer reads (``core.train.familiar.last_linear``), the images decoded exactly as training
decoded them (``core.train.tensors``, from the workspace's cache when the run left one). Then K-fold logistic
regression (scikit-learn, stratified, features standardised) on those features: each image's probabilities come
from the regression fitted on the other folds, so no image is judged by a classifier that was fitted on its own
label. The network itself did see most of the images in training (that is why this is quick); the thorough mode
(``core.labels.thorough``) trains the network K times instead.

Measured (``.venv/bin/python -m pytest tests/labels/test_quick.py -m slow -s``): 5% of the labels flipped at random
across classes (fixed seed: ``tests.labels.plant_flips``), the default recipe trained on the *flipped* copy (what a
user with wrong labels has: the network learned some of them), quick mode with 5 folds, the confident-learning
suspects against the planted flips:

* built-in digits, 1,797 images (LeNet), 90 flipped: 73 suspects, precision 0.95, recall 0.77;
* colour classes, 3 x 200 images of 32 px (LeNet), 30 flipped: 28 suspects, precision 1.00, recall 0.93.

On the digits a network trained on the clean labels instead found 77 suspects (precision 0.96, recall 0.82): most
of the missed flips are missed by the regression on these features, not only because the network learned them.
The regression's strength was chosen on the digits (an earlier training on the same flips): C = 0.1 gave
precision 0.98, recall 0.71; C = 1 (kept) 0.93 / 0.79; C = 10 0.76 / 0.82; 10 folds instead of 5 changed nothing.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.common.naming import natural_sorted
from core.common.workspace import Workspace
from core.datasets.layouts import UNLABELLED
from core.datasets.scan import scan_dataset
from core.datasets.sources import DatasetRef
from core.labels.probabilities import LabelIssuesError, OutOfSample
from core.store.runs import RunStore
from core.train.batches import Batches
from core.train.checkpoints import load_for_inference
from core.train.familiar import last_linear
from core.train.run_folder import checkpoint_path
from core.train.tensors import load_tensors

Progress = Callable[[int, int], None]
BATCH = 256  # images per forward pass: the features of 256 ResNet-50 images are 2 MB
REGULARISATION = 1.0  # scikit-learn's C on standardised features (its default)
MAX_ITER = 1000  # lbfgs on up to a few thousand features converges well within this
MAX_FOLDS = 20  # more folds change little: each regression already sees 95% of the images
SEED = 0  # the folds are drawn the same way every time: the same dataset gives the same suspects


def quick_out_of_sample(ws: Workspace, store: RunStore, dataset_ref: DatasetRef, run_id: int, folds: int = 5,
                        progress: Progress | None = None) -> OutOfSample:  # fmt: skip
    """Out-of-fold probabilities for every labelled image of ``dataset_ref`` from run ``run_id``'s features.

    ``progress`` is called with (done, total) over three equal parts: decoding the images, the network's pass,
    the K regressions. The result's ``seconds`` says how long each part took.

    Raises:
        LabelIssuesError: bad ``folds``, the run has no trained network, the dataset has fewer than two classes
            with two images, or no image can be read. RunStoreError: unknown run.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS:
        raise LabelIssuesError(f"folds {folds!r}: expected a whole number from 2 to {MAX_FOLDS}")
    started = time.perf_counter()
    checkpoint = _best_checkpoint(ws, store, run_id)
    scan = scan_dataset(dataset_ref, ws.cache)
    labelled = scan.manifest[scan.manifest["label"] != UNLABELLED]
    left_out = [{"path": str(r.path), "reason": str(r.reason)} for r in scan.unreadable.itertuples()]
    counts = labelled["label"].value_counts()
    lonely = set(counts[counts < 2].index)
    left_out += [{"path": p, "reason": "the only image of its class: nothing to compare it with"}
                 for p in labelled.loc[labelled["label"].isin(lonely), "path"]]  # fmt: skip
    labelled = labelled[~labelled["label"].isin(lonely)]
    classes = natural_sorted(set(labelled["label"]))
    if len(classes) < 2:
        raise LabelIssuesError(f"{dataset_ref.display} needs at least two classes of two or more labelled images "
                               f"to look for wrong labels (it has {len(classes)})")  # fmt: skip
    n = len(labelled)
    tick = _ticker(progress, 3 * n)
    features, paths, dropped, feature_s = extract_features(ws, dataset_ref, list(labelled["path"]), checkpoint, tick)
    left_out += dropped
    label_of = dict(zip(labelled["path"], labelled["label"], strict=True))
    given = [label_of[p] for p in paths]
    if len({*given}) < 2:
        raise LabelIssuesError(f"too few images of {dataset_ref.display} could be read to compare classes")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[g] for g in given])
    folds = max(2, min(folds, int(np.bincount(y).max())))
    regression_started = time.perf_counter()
    probs, fold_of = out_of_fold(features, y, len(classes), folds, lambda k: tick(2 * n + (k + 1) * n // folds))
    seconds = {"features": feature_s, "regression": time.perf_counter() - regression_started,
               "total": time.perf_counter() - started}  # fmt: skip
    return OutOfSample(dataset_ref.spec, run_id, "quick", folds, classes, paths, given, probs, fold_of, [],
                       left_out, seconds)  # fmt: skip


def _best_checkpoint(ws: Workspace, store: RunStore, run_id: int) -> Path:
    run = store.get_run(run_id)
    path = checkpoint_path(ws, run_id, "best")
    if run.kind != "train" or run.status in ("queued", "running") or not path.is_file():
        state = run.status if run.kind == "train" else f"a {run.kind}, not a training run"
        raise LabelIssuesError(f"run {run_id} has no trained network to describe the images with ({state}): "
                               "choose a finished training run")  # fmt: skip
    return path


def _ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    def tick(done: int) -> None:
        if progress is not None:
            progress(min(done, total), total)

    return tick


def extract_features(ws: Workspace, ref: DatasetRef, paths: list[str], checkpoint: Path,
                     tick: Callable[[int], None]) -> tuple[np.ndarray, list[str], list[dict[str, str]], float]:  # fmt: skip
    """(features, the paths that could be read, the others with why, seconds of the network's pass)."""
    model = load_for_inference(checkpoint)
    n = len(paths)
    tensors = load_tensors(ref.root, paths, model.image_size, cache_dir=ws.cache, progress=lambda d, _t: tick(d),
                           in_place=True)  # fmt: skip
    tick(n)
    dropped = [{"path": str(r.path), "reason": str(r.reason)} for r in tensors.dropped.itertuples()]
    if not tensors.paths:
        raise LabelIssuesError(f"none of the {n} labelled images of {ref.display} can be read")
    started = time.perf_counter()
    labels = tensors.spread(torch.zeros(len(tensors.paths), dtype=torch.long))
    batches = Batches(tensors.images, labels, tensors.positions, batch_size=BATCH, mean=model.mean, std=model.std,
                      device=model.device)  # fmt: skip
    caught: list[torch.Tensor] = []
    # The input of the last linear layer: what the classifier reads, the network's description of the image.
    hook = last_linear(model.model).register_forward_pre_hook(
        lambda _m, args: caught.append(args[0].detach().float().flatten(1).cpu())
    )
    try:
        model.model.eval()
        with torch.inference_mode():
            for x, _ in batches:
                model.model(x)
                tick(n + sum(len(c) for c in caught))
    finally:
        hook.remove()
    return torch.cat(caught).numpy(), list(tensors.paths), dropped, time.perf_counter() - started


def out_of_fold(features: np.ndarray, y: np.ndarray, n_classes: int, folds: int,
                fold_done: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(probabilities, fold of each row): stratified ``folds``-fold logistic regression, each row predicted by the
    regression fitted on the other folds. Every class has two or more rows, so each fold's training part holds every
    class (a class with fewer rows than folds is simply absent from some held-out folds)."""
    probs = np.zeros((len(y), n_classes), dtype=np.float32)
    fold_of = np.zeros(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    with warnings.catch_warnings():
        # "The least populated class has only 2 members": expected and handled (see above).
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        splits = list(splitter.split(features, y))
    for k, (train, held_out) in enumerate(splits):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION, max_iter=MAX_ITER))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)  # lbfgs's "did not converge": still usable
            model.fit(features[train], y[train])
        probs[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
        fold_of[held_out] = k
        if fold_done is not None:
            fold_done(k)
    return probs, fold_of
