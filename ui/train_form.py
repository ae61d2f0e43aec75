"""The Train form, generated from ``TrainConfig``'s field metadata: every option appears exactly once, the
essentials on top, the others in their groups under "Advanced" (``core.train.config``: each field's label, help,
group and whether 0 means automatic; ``choices()`` and ``choice_words`` for the selectboxes; ``limits`` for the
numbers). A new option appears here without touching this module.

What automatic chose is the run's plan (``core.train.runplan``), made once per page run after the widgets are
drawn: each widget left automatic gets an empty slot under it, filled from the plan (:func:`show_automatic`).
Errors are worded from their fields (:func:`error_words`), never from their message text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import streamlit as st

from core.common.errors import ChoiceError, CoreError
from core.common.percent import percent
from core.common.untrusted import whole_number
from core.common.words import AUTOMATIC
from core.train.archs import WEIGHTS_CHOICES
from core.train.config import ESSENTIAL, FIELD_META, GROUPS, OptionError, TrainConfig, choice_words, choices, label_of
from core.train.config import limits as bounds
from core.train.plan import RunPreview
from core.train.runplan import RunPlan
from ui.text import plain

CHOICES = {**choices(), "weights": WEIGHTS_CHOICES}
PLAN_NUMBERS = "train_plan_numbers"  # session key: the last plan's numbers, where an unticked "automatic" starts


def options_of(group: str) -> list[str]:
    """The options of a group (``ESSENTIAL`` or one of ``GROUPS``), in the config's order."""
    return [f.name for f in fields(TrainConfig) if FIELD_META[f.name]["group"] == group]


def form(defaults: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every option once: the essentials side by side, the others grouped inside "Advanced settings".

    Returns (values set, slots): a slot is an empty placeholder under each widget that may be automatic, for
    :func:`show_automatic` to fill once the plan is made.
    """
    values: dict[str, Any] = {}
    slots: dict[str, Any] = {}
    parent = st.session_state.get("train_from_run", defaults.from_run)  # this rerun's value, set under Advanced
    essentials = options_of(ESSENTIAL)
    for column, name in zip(st.columns(len(essentials)), essentials, strict=True):
        with column:
            if name == "weights" and parent:  # another run's weights replace these: say so, not "Random"
                st.selectbox(label_of(name), [parent], format_func=lambda run_id: f"Run {run_id}'s (see Advanced)",
                             disabled=True, key="train_weights_parent",
                             help="Start from run, under Advanced settings, chose these weights.")  # fmt: skip
                values[name] = defaults.weights
            else:
                values[name] = option(name, getattr(defaults, name), slots)
    return values, slots


def advanced(defaults: TrainConfig, slots: dict[str, Any]) -> dict[str, Any]:
    """The options of every group but the essentials, inside an expander; returns the values set."""
    values: dict[str, Any] = {}
    with st.expander("Advanced settings", icon=":material/tune:"):
        st.caption("Every option has a default that works; hover the ? for what it does.")
        for column, group in zip(st.columns(len(GROUPS)), GROUPS, strict=True):
            with column:
                st.markdown(f"**{group}**")
                for name in options_of(group):
                    values[name] = option(name, getattr(defaults, name), slots)
    return values


def option(name: str, value: Any, slots: dict[str, Any]) -> Any:
    """One widget for the option ``name`` showing ``value``; returns what the user set."""
    key, label, help_text = f"train_{name}", label_of(name), FIELD_META[name]["help"]
    if name == "from_run":
        return parent_run(value, key, label)
    if name in CHOICES:
        chosen = _choice(name, value, key, label, help_text)
        if "auto" in CHOICES[name]:
            slots[name] = st.empty()
        return chosen
    if FIELD_META[name]["zero_is_auto"]:
        return _zero_is_auto(name, value, key, label, help_text, slots)
    if isinstance(value, bool):
        return st.toggle(label, value=value, help=help_text, key=key)
    if isinstance(value, int):
        low, high = _widened(name, value)
        return int(st.number_input(label, value=value, min_value=int(low), max_value=int(high), step=1,
                                   help=help_text, key=key))  # fmt: skip
    if isinstance(value, float):
        low, high = _widened(name, value)
        chosen = float(st.number_input(label, value=value, min_value=float(low), max_value=float(high), format="%g",
                                       help=help_text, key=key))  # fmt: skip
        if not chosen:  # 0 may leave it to the schedule (the warm-up: its own rise): said where the plan says why
            slots[name] = st.empty()
        return chosen
    if isinstance(value, list):
        text = st.text_input(label, value=", ".join(map(str, value)), help=help_text, key=key)
        numbers = (whole_number(part.strip(), negative=True) for part in text.replace(";", ",").split(","))
        return [n for n in numbers if n is not None]  # "²" or "--3" is left out, never int()'s ValueError
    return st.text_input(label, value=str(value), help=help_text, key=key)


def _choice(name: str, value: Any, key: str, label: str, help_text: str) -> Any:
    allowed: Sequence[str] = CHOICES[name]
    options = list(allowed) if value in allowed else [value, *allowed]  # a weights file path, kept as given
    words: Mapping[str, str] = choice_words(name)

    def shown(v: str) -> str:
        if v == "auto":
            return AUTOMATIC
        return words.get(v, "a weights file" if name == "weights" else str(v))

    return st.selectbox(label, options, index=options.index(value), format_func=shown, help=help_text, key=key)


def _zero_is_auto(name: str, value: Any, key: str, label: str, help_text: str, slots: dict[str, Any]) -> Any:
    """A checkbox "automatic" (0), and a number input once it is unticked (starting from what automatic chose)."""
    automatic = st.checkbox(f"{label}: automatic", value=not value, help=help_text, key=f"{key}_auto")
    if automatic:
        slots[name] = st.empty()
        return 0 if isinstance(value, int) else 0.0
    start = value or st.session_state.get(PLAN_NUMBERS, {}).get(name) or 0
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
    low, high = bounds(name)
    return min(low, value), max(high, value)


def show_automatic(slots: dict[str, Any], plan: RunPlan, asked: dict[str, Any]) -> None:
    """Under each widget the user left automatic (``asked``: the form's values): what the plan chose and why
    (``RunPlan.explain``). A child run's network is its parent's though the widget says automatic: said here."""
    why = plan.explain()
    for name, slot in slots.items():
        if asked.get(name, getattr(plan.config, name)) not in ("auto", 0, 0.0):
            continue
        if not FIELD_META[name]["zero_is_auto"] and name not in CHOICES and name not in why:
            continue  # a 0 that means none (no warm-up for this schedule): nothing was chosen
        chosen, reason = _chosen_words(name, plan), why.get(name, "")
        if name == "epochs":  # the epoch plan's words say both what and why
            chosen, reason = reason.rstrip("."), ""
        slot.caption(
            plain(" ".join(p for p in (f"{AUTOMATIC}: {chosen}." if chosen else f"{AUTOMATIC}.", reason) if p))
        )
    st.session_state[PLAN_NUMBERS] = {"image_size": plan.image_size, "lr": plan.lr, "epochs": plan.epochs.first,
                                      "batch_size": plan.batch_size}  # fmt: skip


def _chosen_words(name: str, plan: RunPlan) -> str:
    """What the plan chose for ``name``, in words ("" where it is decided when the run starts: device, threads)."""
    if name == "image_size":
        return f"{plan.image_size} px"
    if name == "lr":
        return f"{plan.lr:g}"
    if name == "batch_size":
        return f"{plan.batch_size} images"
    value = getattr(plan, name, None)
    return choice_words(name).get(value, str(value)) if isinstance(value, str) else ""


def parent_run(value: int, key: str, label: str) -> int:
    """ "Start from run": no, or a training run with a best checkpoint (newest first), named in words."""
    from core.train.archs import arch_label
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
        return f"Run {run_id} · {arch_label(run.arch)}" + (f" · {percent(best)} validation" if best is not None else "")

    help_text = ("Start from another run's best weights (its network too): the classification head is replaced "
                 "when the classes differ and fitted to the new ones first; freezing and the backbone rate apply "
                 "as with ImageNet weights; the rate, when automatic, is a tenth of the usual.")  # fmt: skip
    return st.selectbox(label, options, index=options.index(value), format_func=shown, help=help_text, key=key)


def with_parent(config: TrainConfig) -> TrainConfig:
    """A child's config with its parent's network (``core.train.transfer.with_parent``); raises OptionError."""
    from core.train.transfer import with_parent as completed
    from ui.state import run_store, workspace

    return completed(config, run_store(), workspace())


def config_from(defaults: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """The config the widgets describe (not yet validated)."""
    known = {f.name for f in fields(TrainConfig)}
    return replace(defaults, **{k: v for k, v in values.items() if k in known})


def error_words(exc: CoreError) -> str:
    """An error about options in words, from its fields: each option by its label ("Validation share" for
    ``val_fraction``), a choice's allowed values in words. Other errors as they are."""
    if isinstance(exc, OptionError):
        return exc.worded(label_of)
    if isinstance(exc, ChoiceError):
        words = choice_words(exc.field)
        allowed = ", ".join(AUTOMATIC if v == "auto" else words.get(str(v), str(v)) for v in exc.allowed)
        return f"{label_of(exc.field)} {exc.value!r} is not a choice here; choose one of: {allowed}"
    return str(exc)


def show_problem(exc: CoreError) -> None:
    """``st.error`` with :func:`error_words`, as text, without the workspace's place on the server's disk."""
    from ui.state import workspace

    st.error(plain(workspace().redact(error_words(exc))), icon=":material/error:")


def split_caption(preview: RunPreview) -> str:
    s = preview.splits
    return (f"{s['train']:,} images to learn from, {s['val']:,} to watch progress on (validation) and "
            f"{s['test']:,} kept apart for the final test, in {preview.n_classes} classes.")  # fmt: skip
