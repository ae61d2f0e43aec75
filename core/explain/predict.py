"""Classify images with a trained run (or a torchvision ImageNet model) and explain them with a CAM.

One ``Predictor`` per loaded checkpoint, shared by the command line, the HTTP endpoint and the Classify
page. Images go through the same opener and transform as training (``core.images.opener.open_image`` with the
same JPEG draft size, then ``core.train.tensors.resize_to_tensor``: shorter side to S, centre square), so the
model sees in prediction exactly what it saw in training. The heat map is returned at the image's own
height x width: the model saw the centre square, so the map covers that square and is 0 outside it.

One bad image never stops a batch: it gets ``{"image", "error"}`` and the others go on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from core.common.errors import CoreError, ImageError
from core.common.workspace import Workspace
from core.images.opener import Source, open_image
from core.store.runs import RunStore
from core.train.familiar import MAX_UNSURE_P, Familiarity, Seen, caught_features, load_familiarity, weak_guess

if TYPE_CHECKING:  # only for the type: importing the checkpoints module at the top would load the networks
    from core.train.checkpoints import InferenceModel

TOP_K = 5


class PredictError(CoreError):
    """No model to predict with, or a bad request (unknown run, class, method)."""


@dataclass
class Prediction:
    """One image classified (and explained when a CAM method was asked for)."""

    image: str
    top: list[dict[str, float | str]]
    ms: float
    size: tuple[int, int]  # (width, height) of the image as opened (upright)
    cam_method: str | None = None
    cam_ms: float | None = None
    cam_class: str | None = None
    heatmap: np.ndarray | None = None  # float32 (height, width) in [0, 1]
    cam_note: str = ""
    picture: Image.Image | None = field(default=None, repr=False)  # the opened RGB image, for overlays
    cam_layer: str = ""  # the explained layer, e.g. "layer3.1" (a ResNet below 224 px: see cam_layer_for)
    cam_map: tuple[int, int] | None = None  # (h, w) cells of that layer's map, before upscaling
    input_size: int | None = None  # the model's input side in px
    not_sure: bool = False  # unlike the training photos, or a weak best guess (``core.train.familiar``)
    why: str = ""  # why not sure, in words ("" when sure)

    def to_json(self, cam_file: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "top": self.top, "ms": round(self.ms, 2),
                               "not_sure": self.not_sure, "why": self.why}  # fmt: skip
        if self.cam_method is not None:
            out.update(cam_method=self.cam_method, cam_class=self.cam_class, cam_ms=round(self.cam_ms or 0.0, 2),
                       cam_layer=self.cam_layer, cam_map=list(self.cam_map) if self.cam_map else None)  # fmt: skip
            if self.cam_note:
                out["cam_note"] = self.cam_note
        if cam_file is not None:
            out["cam"] = cam_file
        return out


class Predictor:
    """A model ready to classify: its own inference copy, its classes, its input transform, one lock."""

    def __init__(self, model: InferenceModel, *, source: str, familiar: Familiarity | None = None) -> None:
        self.inference = model
        self.source = source  # "run 3" / "resnet50 (ImageNet)": what the page and the JSON say
        self.familiar = familiar  # the run's "not sure" checks; None: the top probability alone decides
        self._lock = threading.Lock()  # the CAM library is not thread-safe; one request at a time per model
        self._warm_up()

    def _warm_up(self) -> None:
        """One untimed pass on a blank picture: the first real image's time is then the model's, not the one-time
        costs of a first call (memory, kernels). The page and the command line both load through here, so both
        report the same measurement: preprocessing plus one forward pass of a warm model."""
        side = self.inference.image_size
        self.inference.predict_images([Image.new("RGB", (side, side))])

    def slow_cam_cost(self):  # -> core.explain.cost.SlowCamCost
        """How long Score-/Ablation-CAM will take on one image with this model, measured here (once)."""
        from core.explain.cost import slow_cam_cost

        with self._lock:
            return slow_cam_cost(self.inference)

    @property
    def classes(self) -> list[str]:
        return list(self.inference.classes)

    def open(self, source: Source) -> Image.Image:
        side = self.inference.image_size
        return open_image(source, draft_size=(side, side))

    def classify(self, picture: Image.Image, name: str, *, top_k: int = TOP_K) -> Prediction:
        """Top-k classes of one opened picture, timed (preprocessing included)."""
        began = time.perf_counter()
        with self._lock, caught_features(self.inference.model) as seen:
            probs = self.inference.predict_images([picture])[0]
        ms = (time.perf_counter() - began) * 1000
        pred = Prediction(name, self._top(probs, top_k), ms, picture.size, picture=picture)
        pred.not_sure, pred.why = self._judge(seen, probs)
        return pred

    def explain(self, picture: Image.Image, name: str, method: str, *, target: str | None = None,
                top_k: int = TOP_K) -> Prediction:  # fmt: skip
        """Classify and explain in one forward pass (the CAM reuses it): top-k plus the heat map."""
        from core.explain.cam import explain as cam

        klass = self._class_index(target)
        began = time.perf_counter()
        batch = self.inference.preprocess([picture]).to(self.inference.device)
        with self._lock, caught_features(self.inference.model) as seen:  # the first forward pass is the photo's own
            result = cam(self.inference.model, batch, method=method, target_class=klass, arch=self.inference.arch)
        prep_ms = (time.perf_counter() - began) * 1000 - result.forward_ms - result.cam_ms
        heat = square_map_to_image(result.heatmap, picture.size)
        probs = torch.from_numpy(result.probabilities)
        pred = Prediction(name, self._top(probs, top_k),
                          result.forward_ms + max(prep_ms, 0.0), picture.size, cam_method=method,
                          cam_ms=result.cam_ms, cam_class=self.classes[result.class_index], heatmap=heat,
                          cam_note=result.note, picture=picture, cam_layer=result.layer, cam_map=result.map_size,
                          input_size=self.inference.image_size)  # fmt: skip
        pred.not_sure, pred.why = self._judge(seen, probs)
        return pred

    def _judge(self, seen: Seen, probs: torch.Tensor) -> tuple[bool, str]:
        """Not sure, and why, from the photo's own (first) forward pass."""
        top = probs.reshape(-1).max().reshape(1)
        if self.familiar is not None:
            return self.familiar.judge(seen.features[0][:1], seen.inputs[0][:1], top)[0]
        if float(top) < MAX_UNSURE_P:  # no calibrated checks (an ImageNet model, a run from before they were kept)
            return True, weak_guess(float(top))
        return False, ""

    def run(self, source: Source, name: str, *, cam: str | None = None, target: str | None = None) -> Prediction:
        """Open ``source`` as training did (JPEG draft at the model's size) and classify it; the size and the heat
        map are those of the image itself (upright), not of the reduced decode."""
        self._class_index(target)  # an unknown class is refused even without a CAM, not silently ignored
        picture = self.open(source)
        pred = self.explain(picture, name, cam, target=target) if cam else self.classify(picture, name)
        size = upright_size(source)
        if size != picture.size:  # a JPEG decoded at reduced scale: report, and map, at the file's own size
            pred.size = size
            if pred.heatmap is not None:
                pred.heatmap = _resized_map(pred.heatmap, size)
        return pred

    def _top(self, probs: torch.Tensor, k: int) -> list[dict[str, float | str]]:
        values, indices = probs.topk(min(k, len(self.classes)))
        return [{"label": self.classes[i], "p": round(float(v), 6)} for v, i in zip(values, indices, strict=True)]

    def _class_index(self, target: str | None) -> int | None:
        if target is None:
            return None
        if target not in self.classes:
            raise PredictError(f"class {target!r} is not one of this model's {len(self.classes)} classes")
        return self.classes.index(target)


def upright_size(source: Source) -> tuple[int, int]:
    """(width, height) of an image as shown upright (EXIF orientation applied), read from its header only."""
    import io

    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    if hasattr(stream, "seek"):
        stream.seek(0)
    with Image.open(stream) as im:
        width, height = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _resized_map(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = Image.fromarray(heat.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def square_map_to_image(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map over the centre square the model saw, placed on the whole image (width, height); 0 outside."""
    width, height = size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = Image.fromarray(heat.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR)
    full = np.zeros((height, width), np.float32)
    full[top : top + side, left : left + side] = np.clip(np.asarray(square), 0.0, 1.0)
    return full


# ---------------------------------------------------------------------------------------------------
# Loading models


def run_checkpoint(ws: Workspace, store: RunStore, run_id: int | None) -> tuple[int, Path]:
    """The best checkpoint of ``run_id`` (default: the latest completed run that has one)."""
    from core.train.run_folder import checkpoint_path

    if run_id is None:
        for run in store.list_runs(status="completed", kind="train"):
            if checkpoint_path(ws, run.run_id, "best").is_file():
                return run.run_id, checkpoint_path(ws, run.run_id, "best")
        raise PredictError("no completed training run with a checkpoint yet: train one first")
    store.get_run(run_id)  # unknown run -> RunStoreError with its message
    path = checkpoint_path(ws, run_id, "best")
    if not path.is_file():
        raise PredictError(f"run {run_id} has no best checkpoint (it never finished an epoch)")
    return run_id, path


def load_run_predictor(ws: Workspace, store: RunStore, run_id: int | None = None, device: str = "auto") -> Predictor:
    from core.train.checkpoints import load_for_inference

    run_id, path = run_checkpoint(ws, store, run_id)
    return Predictor(load_for_inference(path, device), source=f"run {run_id}", familiar=load_familiarity(path.parent))


def predict_many(predictor: Predictor, images: list[str], *, cam: str | None = None, cam_out: Path | None = None,
                 target: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """``predict --json``: one object per image; heat maps saved as ``cam_out/<stem>.npy`` (image's own size) and
    ``cam_out/<stem>.png`` (the map over the image)."""
    if cam:
        from core.explain.methods import method_info

        method_info(cam)  # an unknown method fails once, before any image
    predictor._class_index(target)  # so does an unknown --class, even when every image is unreadable
    if cam_out is not None:
        cam_out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, image in enumerate(images):
        try:
            pred = predictor.run(Path(image), image, cam=cam, target=target)
        except ImageError as exc:
            rows.append({"image": image, "error": exc.reason})
            continue
        npy, png = _save_map(pred, cam_out, index, images) if cam_out is not None else (None, None)
        rows.append(pred.to_json(npy) | ({"cam_overlay": png} if png else {}))
    return rows


def predictions_table(rows: list[dict[str, Any]], top_k: int = TOP_K) -> Any:
    """The rows of ``predict --json`` (or the page's) as one flat table for a spreadsheet: image, top1, p1,
    ... top5, p5, not_sure ("yes"/"no"), why, ms, error (empty where the file was fine). The CLI's ``--csv`` and the page's download."""
    import pandas as pd

    flat = []
    for row in rows:
        out: dict[str, Any] = {"image": row["image"]}
        top = row.get("top", [])
        for k in range(top_k):
            out[f"top{k + 1}"] = top[k]["label"] if k < len(top) else ""
            out[f"p{k + 1}"] = round(float(top[k]["p"]), 6) if k < len(top) else None
        out["not_sure"] = {True: "yes", False: "no"}.get(row.get("not_sure"), "")  # words: a spreadsheet's reader
        out["why"] = row.get("why", "")
        out["ms"] = row.get("ms")
        out["error"] = row.get("error", "")
        flat.append(out)
    columns = ["image", *(f"{c}{k + 1}" for k in range(top_k) for c in ("top", "p")), "not_sure", "why", "ms", "error"]
    return pd.DataFrame(flat, columns=columns)


def _save_map(pred: Prediction, folder: Path, index: int, images: list[str]) -> tuple[str | None, str | None]:
    """The heat map as ``<stem>.npy`` (numbers, the image's own size) and ``<stem>.png`` (blended over the image,
    to look at or hand over); returns both paths (the PNG's None when the map holds no evidence)."""
    from core.explain.overlay import overlay

    if pred.heatmap is None:
        return None, None
    stem = Path(pred.image).stem
    if sum(Path(i).stem == stem for i in images) > 1:  # two a.jpg from different folders: keep both maps
        stem = f"{stem}-{index}"
    target = folder / f"{stem}.npy"
    np.save(target, pred.heatmap.astype(np.float32))
    if pred.cam_note:  # an all-zero map (no evidence) would only tint the picture: the JSON's cam_note says why
        return str(target), None
    picture = open_image(Path(pred.image))  # full size: the map is at the file's own size, not the draft's
    png = folder / f"{stem}.png"
    overlay(picture, pred.heatmap).save(png)
    return str(target), str(png)


def imagenet_categories(arch: str) -> list[str]:
    """The 1,000 ImageNet class names, as shipped inside torchvision with each weights enum."""
    import torchvision

    from core.train.archs import arch_info

    info = arch_info(arch)
    if not info.weights:
        raise PredictError(f"{info.label} has no ImageNet weights")
    return list(torchvision.models.get_weight(info.weights).meta["categories"])


def load_imagenet_predictor(arch: str, device: str = "auto") -> Predictor:
    """torchvision's ImageNet model, when its weights file is present (WeightsUnavailable says where to put it)."""
    from core.train.archs import IMAGENET_MEAN, IMAGENET_STD
    from core.train.checkpoints import InferenceModel, device_for
    from core.train.models import build_model

    model = build_model(arch, 1000, weights="imagenet")
    target = device_for(device)
    inference = InferenceModel(model.eval().to(target), arch, imagenet_categories(arch), 224, list(IMAGENET_MEAN),
                               list(IMAGENET_STD), target, {"source": "torchvision ImageNet weights"})  # fmt: skip
    return Predictor(inference, source=f"{arch} (ImageNet)")


def imagenet_available(arch: str) -> bool:
    """Whether the ImageNet weights file of ``arch`` is already in the torch cache (nothing is downloaded)."""
    from core.train.archs import arch_info
    from core.train.weights import imagenet_weights_file

    return bool(arch_info(arch).weights) and imagenet_weights_file(arch).path.is_file()
