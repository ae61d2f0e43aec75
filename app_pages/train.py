"""Train: a form with sensible defaults, an estimate of time per epoch, start, and the runs training now."""

from dataclasses import replace

import streamlit as st

from core.common.errors import CoreError
from core.train import runner as train_run
from core.train.archs import ARCHS, WEIGHTS_CHOICES
from core.train.config import TrainConfig, choices
from core.train.estimate import estimate_epoch_seconds
from ui import runs, train_form
from ui.common import show_error
from ui.state import current_ref, jobs, run_store, scan, workspace

GROUPS = {
    "Data": ["val_fraction", "test_fraction", "oversample", "rare_threshold", "seed"],
    "Model": ["arch", "weights", "freeze", "backbone_lr_factor", "image_size"],
    "Optimisation": ["epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
                     "plateau_patience", "milestones", "gamma", "warmup_epochs", "label_smoothing",
                     "early_stop_patience", "best_metric"],
    "Augmentation and device": ["augment", "normalize", "device", "amp"],
}  # fmt: skip
CHOICES = {**choices(), "weights": WEIGHTS_CHOICES}
LABELS = {"arch": {"auto": "auto (LeNet for small images, else ResNet-18)", **{k: a.label for k, a in ARCHS.items()}}}

st.title("Train")
ref = current_ref()
if ref is None:
    st.stop()
st.caption(f"Dataset: **{ref.display}** · change it on the Datasets page. Every field has a default that "
           "works; hover the ? for what it does.")  # fmt: skip
start = TrainConfig.from_dict({**TrainConfig().to_dict(), **st.session_state.pop(runs.TRAIN_PREFILL, {})})
defaults = replace(start, dataset=ref.spec)
specs = train_form.field_map(TrainConfig)

with st.form("train_form", border=True):
    values: dict = {}
    columns = st.columns(len(GROUPS))
    for column, (group, names) in zip(columns, GROUPS.items(), strict=True):
        column.markdown(f"**{group}**")
        for name in names:
            values[name] = train_form.widget(specs[name], getattr(defaults, name), key=f"train_{name}",
                                              choices=CHOICES.get(name), labels=LABELS.get(name), container=column)  # fmt: skip
        if group == "Model":
            weights_file = column.file_uploader("...or start from a weights file", type=["pth", "pt"],
                                                key="train_weights_file", help="a state dict (.pth) of the same "
                                                "network, e.g. torchvision's ImageNet file; the head is replaced")  # fmt: skip
    estimate = st.form_submit_button("Estimate time per epoch", icon=":material/timer:")
    go = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")

try:
    if weights_file is not None:
        values["weights"] = str(train_run.save_weights_upload(workspace(), weights_file.getvalue(), weights_file.name))
    config = replace(defaults, **values)
    config.validate()
    if estimate:
        with st.spinner("Timing a few real training steps..."):
            seconds = estimate_epoch_seconds(config, scan(ref).manifest)
        st.info(runs.estimate_text(seconds, config), icon=":material/timer:")
    if go:
        run_id = train_run.submit_training(jobs(), workspace(), config)
        st.success(f"Run {run_id} started. It trains in the background: switch pages freely.", icon=":material/check:")
except CoreError as exc:
    show_error(exc)


polling = bool(jobs().active())


@st.fragment(run_every=2.0 if polling else None)
def training_now() -> None:
    runs.active_jobs(jobs(), run_store())
    if not jobs().active():
        st.caption("Nothing is training now.")
        if polling:
            st.rerun()  # the last run ended: a full rerun stops the polling
    st.page_link("app_pages/runs.py", label="See the curves on the Runs page", icon=":material/monitoring:")


training_now()
