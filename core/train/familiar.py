""" "Not sure": whether a photo is like the ones a model learned from, and whether its best guess is confident.

A classifier always names one of its classes, even for a photo of something else: a coffee cup shown to a model
of hand signs comes back "8 · 38%". Two checks catch that, both calibrated on the run's own validation images
(never trained on) at the end of training, and stored with the run (``familiar.pt`` beside its checkpoints, the
thresholds and measured false-alarm rates as run parameters):

* **unlike the training photos**: the photo is compared with up to ``BANK_MAX`` training images twice, as the network
  describes it (the features its last layer reads) and as it sees it (its input, averaged down to at most
  ``THUMB`` x ``THUMB``); its strangeness in each is the mean cosine distance to the ``K`` nearest. Each threshold is
  the ``EACH_PASS`` quantile of the validation images' strangeness, so that about ``PASS_SHARE`` of ordinary photos
  pass both (measured, and stored as the false-alarm rate). Two views because each misses what the other sees: on
  the digits (LeNet, 16 a step) the features alone let scikit-image's coffee cup through (0.064 against a threshold
  of 0.069, while calling it "9" at 99%); the input alone flags it, and the grey square, noise, the astronaut,
  camera, cat and rocket photos, with 2.6% of the test digits;
* **a weak best guess**: a top probability below the ``PASS_SHARE`` quantile's complement of the validation
  images' own top probabilities (at most ``MAX_UNSURE_P``), so that share of ordinary photos is confident.

Why feature distance rather than only the probability: a network is often *confidently* wrong far from its
training data (a flat grey square can score 99% for one digit); the distance to the nearest training examples in
its feature space (deep k-nearest neighbours, Sun et al. 2022, "Out-of-distribution detection with deep nearest
neighbors") flags those, and needs no extra model. The features are those the last linear layer reads, caught by
a forward hook, so the same forward pass that classifies (or explains) the photo also measures it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.common.atomic import write_atomic
from core.common.percent import percent
from core.train.kept import KeptRows

FAMILIAR_FILE = "familiar.pt"
PASS_SHARE = 0.975  # validation images that pass: ordinary photos are flagged about 2.5% of the time
EACH_PASS = 1 - (1 - PASS_SHARE) / 2  # ... each of the two views' quantile, so that both together flag about 2.5%
THUMB = 16  # the input is compared averaged down to at most this side (a 112 px colour input: 768 numbers)
K = 5  # nearest training images whose mean distance is a photo's strangeness
BANK_MAX = 4096  # training images kept for the comparison (a fixed random subset of bigger sets)
MAX_UNSURE_P = 0.5  # a best guess above one in two is never "not sure" on its probability alone
MIN_VAL = 20  # fewer validation images cannot place a threshold: no check, said so
UNLIKE = "not like the photos this model learned from"


@dataclass
class Familiarity:
    """A run's "not sure" checks, ready to judge photos (see the module)."""

    bank: torch.Tensor  # (N, D) float16, unit-length features of training images
    threshold: float  # feature strangeness above which a photo is unlike the training photos
    unsure_p: float  # top probability below which the best guess is too weak
    false_alarm: float  # share of validation images called unlike (either view; measured)
    unsure_rate: float  # share of validation images below ``unsure_p`` (measured)
    n_val: int
    pixel_bank: torch.Tensor  # (N, P) float16, unit-length thumbnails of the same training images
    pixel_threshold: float

    def strangeness(self, features: torch.Tensor, thumbs: torch.Tensor) -> torch.Tensor:
        """Per photo, how far it lies past the nearer of the two thresholds: above 1 in either view, it is unlike
        the training photos."""
        return torch.maximum(mean_nearest_distance(self.bank, features) / self.threshold,
                             mean_nearest_distance(self.pixel_bank, thumbs) / self.pixel_threshold)  # fmt: skip

    def judge(self, features: torch.Tensor, thumbs: torch.Tensor, top_p: torch.Tensor) -> list[tuple[bool, str]]:
        """(not sure, why in words) per photo: unlike the training photos first, then a weak best guess."""
        out = []
        for far, p in zip(self.strangeness(features, thumbs).tolist(), top_p.tolist(), strict=True):
            if far > 1.0:
                out.append((True, UNLIKE))
            elif p < self.unsure_p:
                out.append((True, weak_guess(p)))
            else:
                out.append((False, ""))
        return out

    def params(self) -> dict[str, Any]:
        """What the run stores of it: thresholds and their measured false-alarm rates on the validation images."""
        return {"unlike_threshold": round(self.threshold, 6), "unlike_pixel_threshold": round(self.pixel_threshold, 6),
                "unlike_false_alarm": round(self.false_alarm, 6),
                "unsure_p": round(self.unsure_p, 6), "unsure_false_alarm": round(self.unsure_rate, 6),
                "familiar_n_val": self.n_val}  # fmt: skip

    def save(self, folder: Path) -> Path:
        import io

        buffer = io.BytesIO()
        torch.save({"bank": self.bank, "pixel_bank": self.pixel_bank, **{k: getattr(self, k) for k in
                    ("threshold", "unsure_p", "false_alarm", "unsure_rate", "n_val", "pixel_threshold")}},
                   buffer)  # fmt: skip
        path = folder / FAMILIAR_FILE
        write_atomic(path, buffer.getvalue())
        return path


def weak_guess(p: float) -> str:
    return f"its best guess has only {percent(p)}"


def load_familiarity(folder: Path) -> Familiarity | None:
    """The run's checks, or None for a run trained before they were kept (or with too few validation images)."""
    path = folder / FAMILIAR_FILE
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return Familiarity(saved["bank"], float(saved["threshold"]), float(saved["unsure_p"]),
                           float(saved["false_alarm"]), float(saved["unsure_rate"]), int(saved["n_val"]),
                           saved["pixel_bank"], float(saved["pixel_threshold"]))  # fmt: skip
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError, EOFError):
        # Damaged, or written by an earlier build without the pixel view: the weak-guess rule alone, as for a run
        # that kept no checks, rather than a page that cannot classify with the run at all.
        return None


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier's last linear layer: its input is the network's description of the photo."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no linear layer to read features from")
    return linear[-1]


def mean_nearest_distance(bank: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance of each row to its ``K`` nearest rows of ``bank`` (unit length already). Written with
    ops every ONNX runtime has (a norm and a divide), since the exported model (``core.export.graph``) runs it too."""
    rows = rows.float()
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return 1.0 - (unit @ bank.float().T).topk(min(K, bank.shape[0]), dim=1).values.mean(dim=1)


def thumbnail(batch: torch.Tensor) -> torch.Tensor:
    """The model's input batch averaged down to at most ``THUMB`` a side, one row per image."""
    x = batch.detach().float()
    if x.shape[-1] > THUMB or x.shape[-2] > THUMB:
        x = nn.functional.adaptive_avg_pool2d(x, (min(THUMB, x.shape[-2]), min(THUMB, x.shape[-1])))
    return x.flatten(1)


@dataclass
class Seen:
    """What each forward pass of a model showed while :func:`caught_features` was open, in order."""

    inputs: list[torch.Tensor]  # thumbnails of the input batch
    features: list[torch.Tensor]  # what its last linear layer read


@contextmanager
def caught_features(model: nn.Module) -> Iterator[Seen]:
    """While open, every forward pass of ``model`` leaves its input's thumbnails and the features its last linear
    layer read in the returned :class:`Seen`."""
    seen = Seen([], [])
    handles = [model.register_forward_pre_hook(lambda _m, args: seen.inputs.append(thumbnail(args[0]).cpu())),
               last_linear(model).register_forward_pre_hook(
                   lambda _m, args: seen.features.append(args[0].detach().float().flatten(1).cpu()))]  # fmt: skip
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def features_and_probs(model: nn.Module, batches: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, thumbnails, softmax) of every batch, in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    probs = []
    with torch.inference_mode(), caught_features(model) as seen:
        for x, _ in batches:
            probs.append(model(x).float().softmax(dim=1).cpu())
    model.train(was_training)
    return torch.cat(seen.features), torch.cat(seen.inputs), torch.cat(probs)


def fit_familiarity(model: nn.Module, train_batches: Any, val_batches: Any) -> Familiarity | None:
    """The checks of a trained ``model``, calibrated on its validation images; None with too few of them."""
    train_feats, train_thumbs, _ = features_and_probs(model, train_batches)
    bank = nn.functional.normalize(train_feats, dim=1).half()
    pixel_bank = nn.functional.normalize(train_thumbs, dim=1).half()
    far, far_pixels, top = _validation_scores(model, val_batches, bank, pixel_bank)
    if len(far) < MIN_VAL:
        return None
    threshold, pixel_threshold = (float(torch.quantile(d, EACH_PASS)) for d in (far, far_pixels))
    unlike = (far > threshold) | (far_pixels > pixel_threshold)
    unsure_p = min(MAX_UNSURE_P, float(torch.quantile(top, 1 - PASS_SHARE)))
    return Familiarity(bank, threshold, unsure_p, float(unlike.float().mean()), float((top < unsure_p).float().mean()),
                       len(far), pixel_bank, pixel_threshold)  # fmt: skip


def _validation_scores(model: nn.Module, batches: Any, bank: torch.Tensor,
                       pixel_bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Each validation image's distance to the bank in both views and its top probability, a batch at a time: three
    numbers an image are kept, not its features and thumbnail (issue 28: 30,000 validation images held 100 MB of
    them, and one distance matrix against the 4,096-image bank 490 MB)."""
    was_training = model.training
    model.eval()
    far, far_pixels, top = KeptRows(), KeptRows(), KeptRows()  # one buffer each (see core.train.kept)
    with torch.inference_mode(), caught_features(model) as seen:
        for x, _ in batches:
            top.add(model(x).float().softmax(dim=1).max(dim=1).values)
            far.add(mean_nearest_distance(bank, seen.features.pop()))
            far_pixels.add(mean_nearest_distance(pixel_bank, seen.inputs.pop()))
    model.train(was_training)
    far_t, far_pixels_t, top_t = (
        k.tensor() if k.tensor() is not None else torch.zeros(0) for k in (far, far_pixels, top)
    )
    return far_t, far_pixels_t, top_t
