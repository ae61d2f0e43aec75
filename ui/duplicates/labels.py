"""The Label issues tab: images whose label is probably wrong (``core.labels``: out-of-sample probabilities and
confident learning), what each is confused with, and a person's decisions on them (keep the label, take the
suggestion, drop the image), which the Clean up tab's ``relabel`` and ``drop-suspects`` turn into a cleaned copy."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.common.errors import CoreError
from core.common.percent import percent
from core.datasets.sources import DatasetRef
from core.dedup.groups import DedupResult
from core.labels.confident import LabelIssues, find_label_issues
from core.labels.probabilities import OutOfSample, load_out_of_sample, out_of_sample_file, save_out_of_sample
from core.store.records import RunRecord
from ui.common import count_of, default_run, run_label, show_error
from ui.duplicates.cards import pager
from ui.state import jobs, run_store, workspace
from ui.text import plain

DECISIONS = "label_decisions"  # session key: {dataset spec: {path: new label, or None to drop}}
PER_PAGE = 6
MODE_WORDS = {
    "quick": "Quick: seconds, with the model's own view of each image",
    "thorough": "Thorough: trains 5 models, each without a fifth of the images (minutes)",
}
KEEP, TAKE, DROP = "Keep the label", "Take the suggestion", "Drop the image"


def label_decisions(ref: DatasetRef) -> dict[str, str | None]:
    """The decisions made on this dataset's suspects in this session (path -> label to take, or None: drop)."""
    return dict(st.session_state.get(DECISIONS, {}).get(ref.spec, {}))


def label_issues(result: DedupResult) -> None:
    ref, store = result.ref, run_store()
    runs = [r for r in store.list_runs(kind="train", status="completed") if r.dataset == ref.spec]
    st.markdown("Images whose label is probably wrong: a model that never saw the image is sure it shows another "
                "class, more sure than it usually is of that image's own class (confident learning).")  # fmt: skip
    if not runs:
        st.info("Finding wrong labels needs a model trained on this dataset. Train one with the default settings, "
                "then come back here.", icon=":material/info:")  # fmt: skip
        st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
        return
    run = _pick_run(runs)
    mode = st.segmented_control("How", list(MODE_WORDS), default="quick", format_func=MODE_WORDS.get,
                                key="labels_mode") or "quick"  # fmt: skip
    oos, issues = checked(ref.spec, run.run_id, mode)
    if oos is None and mode == "thorough":
        oos = _thorough(ref, run)
    elif oos is None and st.button("Check the labels", type="primary", key="labels_go", icon=":material/fact_check:"):
        oos = _quick(ref, run)
    if oos is not None:
        _show(issues if issues is not None else find_label_issues(oos), ref, oos)


def checked(dataset: str, run_id: int, mode: str) -> tuple[OutOfSample | None, LabelIssues | None]:
    """The stored check of (dataset, run, mode) and its issues, read and ranked once per version of its file: every
    click on a card reruns the page, and confident learning over thousands of classes takes a second."""
    path = out_of_sample_file(workspace(), dataset, run_id, mode)
    if not path.is_file():
        return None, None
    return _checked(str(path), path.stat().st_mtime_ns, dataset, run_id, mode)


@st.cache_resource(show_spinner=False, max_entries=8)
def _checked(
    path: str, stamp: int, dataset: str, run_id: int, mode: str
) -> tuple[OutOfSample | None, LabelIssues | None]:
    oos = load_out_of_sample(workspace(), dataset, run_id, mode)
    return oos, None if oos is None else find_label_issues(oos)


def _pick_run(runs: list[RunRecord]) -> RunRecord:
    store = run_store()
    best = default_run(store, runs) or runs[0]
    by_id = {r.run_id: r for r in runs}
    ids = list(by_id)
    chosen = st.selectbox("Model that looks at the images", ids, index=ids.index(best.run_id), key="labels_run",
                          format_func=lambda i: run_label(store, by_id[i], best=i == best.run_id))  # fmt: skip
    return by_id[chosen]


def _quick(ref: DatasetRef, run: RunRecord) -> OutOfSample | None:
    from core.labels.quick import quick_out_of_sample

    bar = st.progress(0.0, text="Looking at every image...")
    try:
        oos = quick_out_of_sample(workspace(), run_store(), ref, run.run_id,
                                  progress=lambda done, total: bar.progress(min(done / max(total, 1), 1.0)))  # fmt: skip
        save_out_of_sample(workspace(), oos)  # the next visit opens on it at once
        return oos
    except CoreError as exc:
        show_error(exc, "Cannot check the labels")
        return None
    finally:
        bar.empty()


def _thorough(ref: DatasetRef, run: RunRecord) -> OutOfSample | None:
    """A thorough check: started here, followed while its folds train, collected when they are done."""
    from core.labels import thorough

    store, ws = run_store(), workspace()
    group = thorough.find_thorough(store, ref.spec, run.run_id)
    if group is None:
        if st.button("Check the labels", type="primary", key="labels_go", icon=":material/fact_check:"):
            try:
                thorough.submit_thorough(jobs(), ws, store, ref, run.run_id)
            except CoreError as exc:
                show_error(exc, "Cannot start the check")
                return None
            st.rerun()
        return None
    return _follow(group)


@st.fragment(run_every=3.0)
def _follow(group: int) -> OutOfSample | None:
    from core.labels import thorough

    store = run_store()
    done, total, stopped = thorough.thorough_progress(store, group)
    if done == total:
        found = thorough.collect_thorough(workspace(), store, group)
        if found is not None:
            st.rerun(scope="app")  # the whole tab, now with the stored result (and no more polling)
        return found
    st.progress(done / total, text=f"{done} of {total} models trained (each leaves out a different fifth of the "
                                   "images and then judges them)")  # fmt: skip
    left, right = st.columns(2)
    if stopped and left.button("Resume the check", key="labels_resume", icon=":material/play_arrow:"):
        thorough.resume_thorough(jobs(), workspace(), store, group)
    if right.button("Cancel the check", key="labels_cancel", icon=":material/stop:"):
        thorough.cancel_thorough(jobs(), store, group)
    if stopped:
        st.caption(f"{count_of(stopped, 'model')} stopped before the end: resume to finish the check.")
    return None


def _show(issues: LabelIssues, ref: DatasetRef, oos: OutOfSample) -> None:
    n, suspects = issues.n_images, issues.suspects
    cols = st.columns(3)
    cols[0].metric("Images checked", f"{n:,}")
    cols[1].metric("Probably mislabelled", f"{len(suspects):,}")
    cols[2].metric("Share", percent(len(suspects) / n, 1) if n else "n/a")
    if issues.left_out:
        st.caption(f"{count_of(len(issues.left_out), 'image')} could not be judged (unreadable or unlabelled).")
    if suspects.empty:
        st.success("Nothing suspicious: for every image, the model that never saw it agrees enough with its label.",
                   icon=":material/check_circle:")  # fmt: skip
        return
    _confusions(issues)
    _cards(suspects, ref, oos)
    _decided(ref)


def _confusions(issues: LabelIssues) -> None:
    """Which labels look like which classes: the off-diagonal of the confident joint, classes involved only."""
    joint = pd.DataFrame(issues.confident_joint, index=issues.classes, columns=issues.classes)
    for c in issues.classes:
        joint.loc[c, c] = 0
    involved = [c for c in issues.classes if joint.loc[c].sum() or joint[c].sum()]
    st.markdown("**Which labels look like which classes** (estimated images: rows are the label given, columns the "
                "class the image seems to show)")  # fmt: skip
    st.dataframe(joint.loc[involved, involved], width="content")


def _cards(suspects: pd.DataFrame, ref: DatasetRef, oos: OutOfSample) -> None:
    page = pager(len(suspects), PER_PAGE, "labels_page", "suspects, most likely wrong first")
    chosen = st.session_state.setdefault(DECISIONS, {}).setdefault(ref.spec, {})
    for row in suspects.iloc[page * PER_PAGE : (page + 1) * PER_PAGE].itertuples():
        with st.container(border=True):
            picture, words = st.columns([1, 3])
            _picture(picture, ref, row.path)
            words.markdown(f"**{plain(row.path)}** · labelled **{plain(row.given)}** "
                           f"({percent(row.p_given, 1)}), the model says **{plain(row.suggested)}** "
                           f"({percent(row.p_suggested, 1)})")  # fmt: skip
            options = [KEEP, TAKE, DROP]
            current = {None: DROP}.get(chosen.get(row.path, KEEP), TAKE) if row.path in chosen else KEEP
            pick = words.radio("Decision", options, index=options.index(current), horizontal=True,
                               key=f"labels_decide_{_key(row.path)}", label_visibility="collapsed",
                               format_func=lambda o, s=row.suggested: f"Take “{s}”" if o == TAKE else o)  # fmt: skip
            if pick == KEEP:
                chosen.pop(row.path, None)
            else:
                chosen[row.path] = row.suggested if pick == TAKE else None
            if words.toggle("Show where the model looked", key=f"labels_cam_{_key(row.path)}"):
                _heat_maps(words, oos.run_id, ref, row.path, [row.given, row.suggested])


def _key(path: str) -> str:
    """A widget key for an image's card: the same for the same image whatever its rank in a later check."""
    import hashlib

    return hashlib.sha1(path.encode()).hexdigest()[:12]


def _picture(column, ref: DatasetRef, path: str) -> None:
    from core.images.opener import ImageError, open_image

    try:
        column.image(open_image(ref.root / path), width="stretch")
    except (ImageError, OSError):
        column.caption(":material/broken_image: cannot be opened any more")


def _heat_maps(column, run_id: int, ref: DatasetRef, path: str, classes: list[str]) -> None:
    from core.explain.overlay import overlay
    from ui.classify.models import cached_run_predictor

    predictor = cached_run_predictor(run_id)
    picture = predictor.open(ref.root / path)
    cells = column.columns(len(classes))
    for cell, label in zip(cells, classes, strict=True):
        pred = predictor.explain(picture, path, "gradcam", target=label)
        empty = pred.heatmap is None or float(pred.heatmap.max()) <= 0.0  # no evidence for it anywhere in the image
        caption = f"for “{plain(label)}”" + (": no evidence anywhere" if empty else "")
        cell.image(picture if empty else overlay(picture, pred.heatmap), caption=caption, width="stretch")


def _decided(ref: DatasetRef) -> None:
    decisions = label_decisions(ref)
    relabel = sum(v is not None for v in decisions.values())
    drop = len(decisions) - relabel
    if not decisions:
        st.caption("Decide on each image above; then the Clean up tab writes a cleaned copy with your decisions "
                   "(the source files are never changed).")  # fmt: skip
        return
    st.info(f"Your decisions: {count_of(relabel, 'image')} to relabel, {count_of(drop, 'image')} to drop. Open the "
            "Clean up tab: the policies relabel and drop-suspects apply them in a cleaned copy.",
            icon=":material/checklist:")  # fmt: skip
