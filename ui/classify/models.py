"""Which model classifies: completed runs (newest first) and the ImageNet models whose weights are here, named in
words; each loaded once per server process (``st.cache_resource``), keyed by run and checkpoint time."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.common.errors import CoreError
from core.common.workspace import Workspace
from core.explain import predict
from core.explain.predict import Predictor
from core.store.runs import RunStore
from core.train.archs import ARCHS
from core.train.run_folder import checkpoint_path
from core.train.weights import imagenet_weights_file
from ui.common import run_label, show_error


@dataclass(frozen=True)
class ModelChoice:
    key: str  # "run:3:<checkpoint mtime>" or "imagenet:resnet50": part of every result's cache key
    label: str
    run_id: int | None = None
    arch: str | None = None


def model_choices(ws: Workspace, store: RunStore) -> list[ModelChoice]:
    """Completed runs with a checkpoint (newest first), then the ImageNet models whose weights are present."""
    out = []
    for run in store.list_runs(status="completed", kind="train"):
        path = checkpoint_path(ws, run.run_id, "best")
        if path.is_file():
            out.append(ModelChoice(f"run:{run.run_id}:{path.stat().st_mtime_ns}", run_label(store, run),
                                   run_id=run.run_id))  # fmt: skip
    for arch, info in ARCHS.items():
        if info.weights and predict.imagenet_available(arch):
            out.append(ModelChoice(f"imagenet:{arch}", f"{info.label} trained on ImageNet (1,000 everyday classes)",
                                   arch=arch))  # fmt: skip
    return out


def no_model() -> None:
    folder = imagenet_weights_file("resnet18").path.parent.name
    st.info("No model to classify with yet. Train one first (LeNet on the built-in digits takes under a minute), "
            f"or have the operator put torchvision's ImageNet weights files in the server's torch cache "
            f"(the `{folder}` folder) to use those models.", icon=":material/info:")  # fmt: skip
    st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")


def pick_model(choices: list[ModelChoice], container=st) -> ModelChoice:
    by_key = {c.key: c for c in choices}
    key = container.selectbox("Model", list(by_key), format_func=lambda k: by_key[k].label, key="classify_model",
                              help="A completed training run (its best checkpoint), newest first, or a "
                              "torchvision ImageNet model whose weights are on this machine.")  # fmt: skip
    return by_key[key]


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _predictor(
    run_id: int | None, arch: str | None, key: str, root: str, _ws: Workspace, _store: RunStore
) -> Predictor:
    if run_id is not None:
        return predict.load_run_predictor(_ws, _store, run_id)
    return predict.load_imagenet_predictor(arch)


def load(choice: ModelChoice, ws: Workspace, store: RunStore) -> Predictor | None:
    try:
        return _predictor(choice.run_id, choice.arch, choice.key, str(ws.root), ws, store)
    except CoreError as exc:
        show_error(exc, f"Cannot load {choice.label}")
        return None
