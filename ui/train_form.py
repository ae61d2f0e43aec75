"""The Train form: the few choices a newcomer needs on top, every other option under "Advanced".

Widgets come from ``TrainConfig`` itself (its defaults, its help lines, ``LABELS`` for the names, ``choices()``
for the selectboxes), so a new option appears here without touching this module. ``auto`` and 0-means-auto
values are shown as "Automatic", followed by what automatic chose for this dataset (``core.train.plan``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import streamlit as st

from core.common.untrusted import whole_number
from core.common.words import CHOICE_WORDS
from core.train.archs import ARCHS, WEIGHTS_CHOICES, arch_label
from core.train.config import LABELS, TrainConfig, choices, label_of, limits
from core.train.plan import RunPlan

ESSENTIALS = ("arch", "weights", "epochs")
ADVANCED = {
    "Data": ["val_fraction", "test_fraction", "oversample", "rare_threshold", "seed"],
    "Model": ["from_run", "freeze", "backbone_lr_factor", "image_size"],
    "Optimisation": ["batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
                     "plateau_patience", "milestones", "gamma", "warmup_epochs", "label_smoothing",
                     "early_stop_patience", "best_metric"],
    "Augmentation and device": ["augment", "normalize", "device", "amp", "threads", "ranks"],
}  # fmt: skip
ZERO_IS_AUTO = ("epochs", "image_size", "lr", "threads")  # 0 means "let the studio choose"
# Choice values in words (core.common.words; networks by the architecture registry): the values themselves stay
# what the command line takes.
WORDS = {**CHOICE_WORDS, "arch": {k: arch_label(k) for k in ARCHS}}
CHOICES = {**choices(), "weights": WEIGHTS_CHOICES}
HELP = TrainConfig.help()


def essentials(defaults: TrainConfig, plan: RunPlan | None) -> dict[str, Any]:
    """Network, starting weights and how long, side by side; returns the values set."""
    values: dict[str, Any] = {}
    parent = st.session_state.get("train_from_run", defaults.from_run)  # this rerun's value, set under Advanced
    for column, name in zip(st.columns(len(ESSENTIALS)), ESSENTIALS, strict=True):
        with column:
            if name == "weights" and parent:  # another run's weights replace these: say so, not "Random"
                st.selectbox(label_of(name), [parent], format_func=lambda run_id: f"Run {run_id}'s (see Advanced)",
                             disabled=True, key="train_weights_parent",
                             help="Start from run, under Advanced settings, chose these weights.")  # fmt: skip
                values[name] = defaults.weights
            else:
                values[name] = option(name, getattr(defaults, name), plan)
    return values


def advanced(defaults: TrainConfig, plan: RunPlan | None) -> dict[str, Any]:
    """Every other option, grouped, inside an expander; returns the values set."""
    values: dict[str, Any] = {}
    with st.expander("Advanced settings", icon=":material/tune:"):
        st.caption("Every option has a default that works; hover the ? for what it does.")
        for column, (group, names) in zip(st.columns(len(ADVANCED)), ADVANCED.items(), strict=True):
            with column:
                st.markdown(f"**{group}**")
                for name in names:
                    values[name] = option(name, getattr(defaults, name), plan)
    return values


def option(name: str, value: Any, plan: RunPlan | None) -> Any:
    """One widget for the option ``name`` showing ``value``; returns what the user set."""
    chosen = getattr(plan.config, name) if plan is not None else None
    key, label, help_text = f"train_{name}", label_of(name), HELP[name]
    if name == "from_run":
        return parent_run(value, key, label)
    if name in CHOICES:
        return _choice(name, value, chosen, key, label, help_text)
    if name in ZERO_IS_AUTO:
        return _zero_is_auto(name, value, chosen, key, label, help_text)
    if isinstance(value, bool):
        return st.toggle(label, value=value, help=help_text, key=key)
    if isinstance(value, int):
        low, high = _widened(name, value)
        return int(st.number_input(label, value=value, min_value=int(low), max_value=int(high), step=1,
                                   help=help_text, key=key))  # fmt: skip
    if isinstance(value, float):
        low, high = _widened(name, value)
        return float(st.number_input(label, value=value, min_value=float(low), max_value=float(high), format="%g",
                                     help=help_text, key=key))  # fmt: skip
    if isinstance(value, list):
        text = st.text_input(label, value=", ".join(map(str, value)), help=help_text, key=key)
        numbers = (whole_number(part.strip(), negative=True) for part in text.replace(";", ",").split(","))
        return [n for n in numbers if n is not None]  # "²" or "--3" is left out, never int()'s ValueError
    return st.text_input(label, value=str(value), help=help_text, key=key)


def _choice(name: str, value: Any, chosen: Any, key: str, label: str, help_text: str) -> Any:
    allowed: Sequence[str] = CHOICES[name]
    options = list(allowed) if value in allowed else [value, *allowed]  # a weights file path, kept as given
    words: Mapping[str, str] = WORDS.get(name, {})

    def shown(v: str) -> str:
        if v == "auto":
            return f"Automatic: {words.get(chosen, chosen)}" if chosen not in (None, "auto") else "Automatic"
        return words.get(v, "a weights file" if name == "weights" else str(v))

    return st.selectbox(label, options, index=options.index(value), format_func=shown, help=help_text, key=key)


def _zero_is_auto(name: str, value: Any, chosen: Any, key: str, label: str, help_text: str) -> Any:
    """A checkbox "Automatic" (0), and a number input once it is unticked."""
    automatic = st.checkbox(f"{label}: automatic", value=not value, help=help_text, key=f"{key}_auto")
    if automatic:
        st.caption(_auto_caption(name, chosen))
        return 0 if isinstance(value, int) else 0.0
    start = value or _number_like(chosen, value)
    if isinstance(value, int) and not isinstance(value, bool):
        start = int(start) or 1
        high = _widened(name, start)[1]
        return int(st.number_input(label, value=start, min_value=1, max_value=int(high), step=1, key=key))
    start = float(start) or 0.01
    high = _widened(name, start)[1]
    return float(st.number_input(label, value=start, min_value=0.0, max_value=float(high), format="%g", key=key))


def _widened(name: str, value: float) -> tuple[float, float]:
    """The option's limits (``core.train.config.limits``), widened to hold ``value``: a run recorded before a
    bound existed still shows its settings (validation then says what is wrong, in words)."""
    low, high = limits(name)
    return min(low, value), max(high, value)


def parent_run(value: int, key: str, label: str) -> int:
    """ "Start from run": no, or a training run with a best checkpoint (newest first), named in words."""
    from core.train.run_folder import checkpoint_path
    from ui.state import run_store, workspace

    store, ws = run_store(), workspace()
    usable = {r.run_id: r for r in store.list_runs(kind="train") if r.arch and checkpoint_path(ws, r.run_id).is_file()}
    options = [0, *usable] if value in (0, *usable) else [0, value, *usable]

    def shown(run_id: int) -> str:
        if not run_id:
            return "No: the starting weights above"
        run = usable.get(run_id)
        if run is None:
            return f"Run {run_id} (no checkpoint)"
        best = store.best_metric(run_id, "val_acc")
        return f"Run {run_id} · {ARCHS[run.arch].label if run.arch in ARCHS else run.arch}" + (
            f" · {best:.0%} validation" if best is not None else ""
        )

    help_text = ("Start from another run's best weights (its network too): the classification head is replaced "
                 "when the classes differ and fitted to the new ones first; freezing and the backbone rate apply "
                 "as with ImageNet weights; the rate, when automatic, is a tenth of the usual.")  # fmt: skip
    return st.selectbox(label, options, index=options.index(value), format_func=shown, help=help_text, key=key)


def with_parent(config: TrainConfig) -> TrainConfig:
    """A child's config with its parent's network (so what automatic chose is shown right); raises ConfigError."""
    if not config.from_run:
        return config
    from core.train.run_folder import checkpoint_path
    from core.train.transfer import child_config
    from ui.state import run_store, workspace

    parent = run_store().get_run(config.from_run)
    return child_config(config, parent, checkpoint_path(workspace(), parent.run_id))


def _auto_caption(name: str, chosen: Any) -> str:
    if name == "epochs":
        return "As many as the data needs: 12, then longer cycles while it still learns (at most 100)."
    if name == "threads":
        return "All cores while it trains alone; shared fairly when several runs train."
    if chosen in (None, 0, 0.0):
        return "Chosen from the images when the run starts."
    return f"For this dataset: {chosen:g}" + (" px" if name == "image_size" else "")


def _number_like(chosen: Any, value: Any) -> Any:
    return chosen if isinstance(chosen, int | float) and chosen else value


def config_from(defaults: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """The config the widgets describe (not yet validated)."""
    known = {f.name for f in fields(TrainConfig)}
    return replace(defaults, **{k: v for k, v in values.items() if k in known})


def in_words(message: str) -> str:
    """An error about options, with each option's name in words ("Validation share" for val_fraction)."""
    return re.sub(r"\b(" + "|".join(map(re.escape, LABELS)) + r")\b", lambda m: LABELS[m.group(1)], message)


def split_caption(plan: RunPlan) -> str:
    s = plan.splits
    return (f"{s['train']:,} images to learn from, {s['val']:,} to watch progress on (validation) and "
            f"{s['test']:,} kept apart for the final test, in {plan.n_classes} classes.")  # fmt: skip
