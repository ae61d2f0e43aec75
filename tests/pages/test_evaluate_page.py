"""AppTest for the Evaluate page: its empty states (no run, a run still training, a run without test images),
the score cards with their sentences, a confusion-matrix cell's images, the classes table, the heat maps of the
worst mistakes, and the leakage-honest score on a run whose test holds copies of training images."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train.run_folder import run_splits
from tests.evaluate.runs import LEAK_CLASSES, N_COPIES, colour_folders, leaky_photos, train
from tests.support import ROOT

TIMEOUT = 180
PAGE = "app_pages/evaluate.py"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluate-page")


@pytest.fixture(scope="module")
def runs(base: Path) -> dict[str, object]:
    """One workspace: a colours run (with two planted mistakes), a run without test images, and the newest, a run
    on photos whose test holds copies of training photos."""
    ws = Workspace.open(base / "ws").with_roots(base)
    colours = colour_folders(base / "colours")
    out = {
        "colours": train(ws, colours, epochs=3),
        "no_test": train(ws, colours / "train", epochs=1, test_fraction=0.0),
    }
    root, planted = leaky_photos(base / "leaky")
    out["leaky"] = train(ws, root, epochs=12, image_size=32)
    out["planted"] = planted
    return out


@pytest.fixture
def open_page(base: Path, monkeypatch: pytest.MonkeyPatch):
    def go(workspace: Path, run: int | None = None, roots: Path | None = None) -> AppTest:
        monkeypatch.setenv("STUDIO_WORKSPACE", str(workspace))
        monkeypatch.setenv("STUDIO_DATA_ROOTS", str(roots or base))
        st.cache_resource.clear()  # a server started on this workspace and these roots: no cache of the last one
        st.cache_data.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
        if run is not None:
            at.query_params["run"] = str(run)
        return at.switch_page(PAGE).run()

    yield go
    st.cache_resource.clear()


def texts(at: AppTest) -> str:
    parts = [
        e.value for kind in ("markdown", "caption", "info", "warning", "success", "subheader") for e in at.get(kind)
    ]
    return "\n".join(str(p) for p in parts)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def assert_clean(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    shown = texts(at) + "".join(metrics(at).values())
    assert "None" not in shown and "nan" not in shown.lower().split()


def test_without_runs_the_page_says_what_to_do(tmp_path: Path, open_page) -> None:
    at = open_page(tmp_path / "empty")
    assert_clean(at)
    assert "No finished training run yet" in texts(at)
    assert "train" in [el.proto.page for el in at.get("page_link")]


def test_a_run_still_training_is_named_with_a_link_to_follow_it(tmp_path: Path, open_page, base: Path) -> None:
    store = RunStore(tmp_path / "busy" / "runs.sqlite")
    run_id = store.create_run(dataset=str(base / "colours"), kind="train")
    at = open_page(tmp_path / "busy")
    assert_clean(at)
    assert f"Run {run_id} is still training" in texts(at)
    assert "runs" in [el.proto.page for el in at.get("page_link")]


def test_a_run_without_test_images_says_so_and_offers_its_validation_images(runs, base: Path, open_page) -> None:
    at = open_page(base / "ws", runs["no_test"])
    assert_clean(at)
    assert at.selectbox(key="evaluate_run").value == runs["no_test"]
    assert "kept no images aside for a final test" in texts(at)
    at.segmented_control(key="evaluate_split").set_value("val").run()
    assert_clean(at)
    assert "Right answers" in metrics(at)
    n_val = int((run_splits(Workspace.open(base / "ws"), runs["no_test"])["split"] == "val").sum())
    assert n_val < 20 and f"Only {n_val} images" in texts(at)  # a warning beside a score on few images


def test_a_run_shows_its_scores_in_words_and_a_cell_of_the_matrix_shows_its_images(runs, base: Path, open_page) -> None:
    at = open_page(base / "ws", runs["colours"])
    assert_clean(at)
    shown = metrics(at)
    assert {"Right answers", "Right within 2 guesses", "Score of the 5 best guesses", "Balance across classes",
            "Surprise", "Confidence error"} <= set(shown)  # fmt: skip
    words = texts(at)
    assert "of 20 test images get the right label" in words
    assert "Not checked yet" in words  # looking for copies reads every image: only when asked (or cached)
    mistake = next(
        o for o in at.selectbox(key="evaluate_cell").options if " called " in o
    )  # "blue called red: 1 image"
    true, said = mistake.split(":")[0].split(" called ")
    at.selectbox(key="evaluate_cell").set_value(f"{true}\x1f{said}").run()
    assert_clean(at)
    count = int(mistake.split(": ")[1].split()[0])
    assert f"{count} {'image' if count == 1 else 'images'} of class “{true}” the model called “{said}”" in texts(at)
    assert len([c for c in at.caption if "% sure · test/" in c.value]) == count  # one picture per image
    table = next(d.value for d in at.dataframe if "Class" in d.value.columns)
    assert list(table.columns)[:3] == ["Class", "Test images", "Right"]
    assert list(table["Balance"]) == sorted(table["Balance"])  # worst first
    assert "Its most confident mistakes" in words
    assert "The heat map comes from a 4×4 grid of the network" in words
    at.button(key=f"evaluate_leaks_{runs['colours']}_test").click().run()
    assert_clean(at)
    assert "Not one of the 20 test images has a copy among the training images" in texts(at)


def test_a_run_whose_images_cannot_be_read_keeps_its_scores_and_says_why(
    runs, base: Path, tmp_path: Path, open_page
) -> None:
    """The scores come from the stored predictions; the pictures need the dataset. Each way it can be out of reach
    gets its own reason, in words, with no server path."""
    at = open_page(base / "ws", runs["colours"], roots=tmp_path)  # the operator narrowed the readable folders
    assert not at.exception and "Right answers" in metrics(at)
    words = texts(at)
    assert "The run's images cannot be read here: the dataset is outside the folders this studio may read" in words
    assert "no longer where" not in words and str(base) not in words
    colours = base / "colours"
    moved = colours.rename(base / "colours-moved")
    try:
        at = open_page(base / "ws", runs["colours"])
        assert not at.exception and "Right answers" in metrics(at)
        words = texts(at)
        assert "The dataset is no longer where the run found it. Its copies cannot be looked for." in words
        assert "cannot be read here" not in words and str(base) not in words
    finally:
        moved.rename(colours)


def test_copies_of_training_images_in_the_test_give_two_scores_and_the_gap(runs, base: Path, open_page) -> None:
    at = open_page(base / "ws", runs["leaky"])
    assert_clean(at)
    if "Look for copies" in [b.label for b in at.button]:
        at.button(key=f"evaluate_leaks_{runs['leaky']}_test").click().run()
    assert_clean(at)
    n_all = len(LEAK_CLASSES) * (4 + N_COPIES)
    n_clean = n_all - len(runs["planted"])
    shown = metrics(at)
    assert shown["With a copy in training"] == str(len(runs["planted"]))
    assert f"All {n_all} test images" in shown and f"The {n_clean} without a copy in training" in shown
    assert f"{len(runs['planted'])} of the {n_all} test images have a copy" in texts(at)


def test_the_report_names_each_score_as_the_page_does(runs, base: Path, open_page) -> None:
    import html
    import re

    from core.evaluate.evaluation import evaluate_run
    from core.evaluate.report import build_report, run_settings

    at = open_page(base / "ws", runs["colours"])
    ws = Workspace.open(base / "ws").with_roots(base)
    ev = evaluate_run(ws, RunStore(ws.runs_db), runs["colours"], "test", leaks="skip")
    report = build_report(ev, [], run_settings(ev.run, None, None))
    cards = [html.unescape(t) for t in re.findall(r"<div class='card'>(.*?)<b>", report)]
    assert len(cards) == 6 and [m.label for m in at.metric][:6] == cards


def test_the_report_names_every_score_and_column_as_the_page_does(runs, base: Path, open_page) -> None:
    """One vocabulary: each score card's and class column's title on the page is the report's title for it, and the
    technical names (MAP@5, F1, log loss) appear only in the help lines and the report's small print."""
    from core.common.words import METRIC_TECHNICAL, metric_word
    from core.evaluate.evaluation import evaluate_run
    from core.evaluate.report import build_report

    at = open_page(base / "ws", runs["colours"])
    table = next(d.value for d in at.dataframe if "Class" in d.value.columns)
    cards = {metric_word(k, k=2) for k in METRIC_TECHNICAL}  # the six score cards (3 classes: "within 2 guesses")
    assert cards <= set(metrics(at))
    on_page = cards | {c for c in table.columns if c != "Note"}
    ws = Workspace.open(base / "ws")
    report = build_report(evaluate_run(ws, RunStore(ws.runs_db), runs["colours"], "test"), [], [])
    titles = set(re.findall(r"<div class='card'>([^<]+)<b>", report)) | set(
        re.findall(r"<th(?: class='l')?>([^<]*)</th>", report)
    )
    assert on_page <= titles, on_page - titles
    for technical in ("MAP@5", "F1", "log loss", "precision", "recall"):
        assert not any(technical in t for t in on_page | titles), technical
    helps = {m.value.strip("*"): m.help for m in at.markdown if m.help}  # each card's title, with its help line
    assert all(helps.get(title) for title in cards), helps  # where the technical names are said
