"""What an export folder says about its model: ``preprocess.json`` (exactly what the studio does to a photo before
the network sees it), ``labels.json``, ``head.json`` (the demo's heat map), ``not_sure.json`` and the model card
(``README.md``) in words."""

from __future__ import annotations

import datetime as dt
from typing import Any

from torch import nn

from core.common.percent import percent
from core.datasets.sources import dataset_title
from core.evaluate.evaluation import Evaluation
from core.evaluate.words import score_sentence
from core.store.runs import RunRecord
from core.train.archs import arch_info
from core.train.checkpoints import InferenceModel
from core.train.familiar import MAX_UNSURE_P, UNLIKE, Familiarity


def preprocess_json(model: InferenceModel) -> dict[str, Any]:
    """The studio's preprocessing (``core.images.opener.open_image`` + ``core.train.tensors.preprocess``) as data
    and words, for anyone who feeds the model without the studio."""
    channels = len(model.mean)
    return {
        "side": model.image_size,
        "channels": channels,
        "layout": "NCHW",
        "channel_order": "RGB" if channels == 3 else "gray (Pillow's L: 0.299 R + 0.587 G + 0.114 B)",
        "dtype": "float32",
        "scale": "pixel / 255, then (value - mean[c]) / std[c]",
        "mean": [round(m, 6) for m in model.mean],
        "std": [round(s, 6) for s in model.std],
        "resize": f"the shorter side to {model.image_size} px (bilinear, antialiased when shrinking: Pillow's "
        "ImageOps.fit), then the centre square",
        "crop": "centre",
        "exif": "turned upright by its EXIF orientation before anything else",
        "jpeg": f"a JPEG is decoded at 1/2, 1/4 or 1/8 scale when that stays at least {model.image_size} px "
        "(Pillow's draft)",
        "alpha": "transparent pixels laid on white",
        "sixteen_bit": "16-bit, 32-bit and float pictures: the 0.5th..99.5th percentiles stretched to 0..255",
        "grayscale_photos": "gray photos are repeated into R, G and B" if channels == 3 else "kept gray",
    }


def head_json(model: nn.Module, block: str, map_side: int) -> dict[str, Any]:
    """The last linear layer's weights, for the class maps ``relu(W[k] . block)`` the demo draws."""
    from core.train.familiar import last_linear

    linear = last_linear(model)
    return {"block": block, "block_words": "the last convolutional block", "map_side": map_side,
            "weights": linear.weight.detach().float().tolist(), "bias": linear.bias.detach().float().tolist()}  # fmt: skip


def not_sure_json(familiar: Familiarity | None) -> dict[str, Any]:
    """When an answer is "not sure": the run's calibrated rules (the ``unlike`` output above 1; a top probability
    under ``unsure_p``), or the weak-guess rule alone for a run that kept no checks."""
    if familiar is None:
        return {"unsure_p": MAX_UNSURE_P, "unlike_words": UNLIKE, "calibrated": False}
    return {"unsure_p": round(familiar.unsure_p, 6), "unlike_words": UNLIKE, "calibrated": True,
            "false_alarm_on_validation": round(familiar.false_alarm + familiar.unsure_rate, 4),
            "validation_images": familiar.n_val}  # fmt: skip


def model_card(run: RunRecord, model: InferenceModel, fmt: str, ev: Evaluation | None, n_golden: int,
               problem: str = "", demo: bool = False) -> str:  # fmt: skip
    """``README.md`` of the export folder: what the model is, how good, how to call it."""
    info = arch_info(model.arch)
    classes = ", ".join(model.classes[:30]) + (
        f" and {len(model.classes) - 30} more" if len(model.classes) > 30 else ""
    )
    lines = [
        f"# {dataset_title(run.dataset)}: {info.label}, run {run.run_id}",
        "",
        f"Exported from the image-classification studio on {dt.date.today().isoformat()} (trained "
        f"{dt.datetime.fromtimestamp(run.created_at).date().isoformat()}).",
        "",
        f"- Network: {info.label}, input {model.image_size} x {model.image_size} px, {len(model.mean)} channel(s).",
        f"- Classes ({len(model.classes)}): {classes}.",
        *_score_lines(ev, problem),
        "",
        "## How to call it",
        "",
        *_how(fmt),
        *(
            ["", "`index.html` classifies photos in a browser, offline: open it, drop photos or use the webcam."]
            if demo
            else []
        ),
        "",
        "Every photo must be prepared as `preprocess.json` says (the studio's own steps: upright, shorter side to "
        f"{model.image_size} px, centre square, scaled and normalised); a model fed otherwise answers differently.",
        "",
        "## Proof that it answers like the studio",
        "",
        f"`golden/` holds {n_golden} images of the run's test split and `golden.json` the studio's own top-5 for "
        "each. When exported, this model gave the same top class on every one and probabilities within 1e-4 on "
        "the studio's input tensors.",
        "",
        '## "Not sure"',
        "",
        f'An answer is "not sure" when the photo is {UNLIKE} (the `unlike` output above 1) or the best guess is '
        'weak (`not_sure.json`). Treat it as "ask a person".',
    ]
    return "\n".join(lines) + "\n"


def _score_lines(ev: Evaluation | None, problem: str) -> list[str]:
    if ev is None:
        return [f"- Test accuracy: not measured ({problem or 'the run kept no test images'})."]
    m = ev.metrics
    lines = [f"- Test accuracy, on images it never trained on: {score_sentence(m, ev.split)}"]
    h = ev.honest
    if h is None:
        lines.append("- Copies of training images among the test images: not checked.")
    elif h.n_leaking == 0:
        lines.append("- No test image has a copy among the training images: the score above is honest.")
    else:
        clean = "n/a" if h.accuracy_clean is None else percent(h.accuracy_clean, 1)
        lines.append(f"- {h.n_leaking:,} test images have a copy among the training images; without them the "
                     f"accuracy is {clean} on {h.n_clean:,} images: the honest figure.")  # fmt: skip
    return lines


def _how(fmt: str) -> list[str]:
    if fmt == "onnx":
        return ["Without the studio (numpy, Pillow and onnxruntime only):", "", "```",
                "pip install numpy pillow onnxruntime", "python predict.py photo.jpg --json", "```", "",
                "In your own code: `onnxruntime.InferenceSession(\"model.onnx\").run(None, {\"image\": batch})` with "
                "`batch` float32 N x C x S x S; the outputs are `probabilities` (N x classes, in `labels.json`'s order)"
                ", `unlike` (when present) and `block` (when present: the last block's activations, for heat maps).",
                "", "`index.html` (when exported with the demo) classifies photos in a browser, offline."]  # fmt: skip
    return ["With PyTorch:", "", "```python", "import torch", "model = torch.jit.load(\"model.pt\").eval()",
            "outputs = model(batch)  # float32 N x C x S x S; outputs[0]: probabilities", "```", "",
            "The outputs are, in order, `probabilities`, then `unlike` and `block` when `outputs.json` lists them."]  # fmt: skip
