"""Which model classifies: completed runs (newest first, opening on the best) and the ImageNet models whose
weights are here, named in words; each loaded once per server process (``st.cache_resource``), keyed by run and checkpoint time."""

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
from ui.common import default_run, run_label, show_error
from ui.state import set_url_run, url_run


@dataclass(frozen=True)
class ModelChoice:
    key: str  # "run:3:<checkpoint mtime>" or "imagenet:resnet50": part of every result's cache key
    label: str
    run_id: int | None = None
    arch: str | None = None
    best: bool = False  # the run the page opens on (ui.common.default_run)


def model_choices(ws: Workspace, store: RunStore) -> list[ModelChoice]:
    """Completed runs with a checkpoint (newest first; the best on the chosen dataset marked), then the ImageNet
    models whose weights are present."""
    runs = [r for r in store.list_runs(status="completed", kind="train")
            if checkpoint_path(ws, r.run_id, "best").is_file()]  # fmt: skip
    best = default_run(store, runs)
    out = []
    for run in runs:
        stamp = checkpoint_path(ws, run.run_id, "best").stat().st_mtime_ns
        mark = best is not None and run.run_id == best.run_id
        out.append(ModelChoice(f"run:{run.run_id}:{stamp}", run_label(store, run, best=mark), run_id=run.run_id,
                               best=mark))  # fmt: skip
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
    """The model to classify with: the run the address names, else the best run on the chosen dataset; a choice
    other than that default is kept in the address, so a refresh or a shared link keeps it."""
    by_key = {c.key: c for c in choices}
    keys = list(by_key)
    wanted = url_run()
    default = next((c.key for c in choices if c.best), keys[0])
    start = next((c.key for c in choices if wanted is not None and c.run_id == wanted), default)
    key = container.selectbox("Model", keys, index=keys.index(start), format_func=lambda k: by_key[k].label,
                              key="classify_model", help="A completed training run (its best checkpoint), newest "
                              "first; the page opens on the best one on the chosen dataset. Or a torchvision "
                              "ImageNet model whose weights are on this machine.")  # fmt: skip
    chosen = by_key[key]
    set_url_run(chosen.run_id if key != default else None)
    return chosen


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


def cached_run_predictor(run_id: int) -> Predictor:
    """Run ``run_id``'s predictor from the same per-process cache the Classify page loads through (keyed by its best
    checkpoint's time, so a resumed run is loaded afresh)."""
    from ui.state import run_store, workspace

    ws, store = workspace(), run_store()
    stamp = checkpoint_path(ws, run_id, "best").stat().st_mtime_ns
    return _predictor(run_id, None, f"run:{run_id}:{stamp}", str(ws.root), ws, store)
