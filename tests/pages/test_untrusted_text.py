"""Issue 22: labels, file names, dataset names and error texts are shown as text on every page, never acted on as
Markdown or HTML (a label ``![b](http://...)`` must not make every viewer's browser fetch that URL), and a page
address with odd numbers (``?run=²``) is ignored instead of raising.

One real LeNet run on a CSV dataset whose labels, file names and folder name are payloads (``tests/payloads.py``).
Every text that Streamlit renders as Markdown (bodies, captions, alerts, widget labels and tooltips, metric
labels, image captions, tab and expander labels, progress texts) is read from the page's elements; option lists of
select boxes are plain text in Streamlit and stay as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.experiments.search import SearchSpec
from core.experiments.space import parse_space
from core.store.runs import RunStore
from core.train.config import TrainConfig
from tests.evaluate.runs import train
from tests.payloads import BEACON, FORMULA, HTML, LABELS, active_markdown, payload_csv
from tests.support import ROOT

TIMEOUT = 180
MARKDOWN_FIELDS = {"body", "label", "help", "caption", "text", "delta", "content"}  # rendered as Markdown
PLAIN_ELEMENTS = {"Text", "Code"}  # st.text and st.code: shown as typed


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("untrusted")


@pytest.fixture(scope="module")
def payload(base: Path) -> dict:
    """The payload dataset, one completed run on it, a failed run and a stopped search whose errors are payloads."""
    csv = payload_csv(base)
    ws = Workspace.open(base / "ws").with_roots(base)
    run_id = train(ws, csv, epochs=3)
    store = RunStore(ws.runs_db)
    failed = store.create_run(dataset=str(csv), kind="train", arch="lenet")
    store.set_status(failed, "failed", error=f"cannot read {BEACON}")
    spec = SearchSpec(TrainConfig(dataset=str(csv), arch="lenet", epochs=1), parse_space({"lr": [0.01, 0.1]}), 2)
    search = store.create_run(dataset=str(csv), kind="search", config=spec.to_dict())
    store.set_status(search, "cancelled", error=f"stopped on {HTML}")
    return {"csv": csv, "ws": ws.root, "run": run_id, "failed": failed, "search": search}


@pytest.fixture
def open_page(base: Path, payload: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A page of the app on the payload workspace, with the payload dataset (and ``query``) in its address."""

    def go(page: str, **query: str) -> AppTest:
        monkeypatch.setenv("STUDIO_WORKSPACE", str(payload["ws"]))
        monkeypatch.setenv("STUDIO_DATA_ROOTS", str(base))
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
        at.query_params["dataset"] = str(payload["csv"])
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        return at.switch_page(page).run()

    yield go
    st.cache_resource.clear()


def _strings(message: Message, out: list[str]) -> None:
    if message.DESCRIPTOR.name in PLAIN_ELEMENTS:
        return
    for field, value in message.ListFields():
        values = list(value) if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for inner in values:
                _strings(inner, out)
        elif field.type == FieldDescriptor.TYPE_STRING and (
            field.name in MARKDOWN_FIELDS or (message.DESCRIPTOR.name == "Radio" and field.name == "options")
        ):
            out.extend(values)


def rendered(at: AppTest) -> list[str]:
    """Every text of the page that Streamlit renders as Markdown."""
    out: list[str] = []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        if isinstance(proto, Message):
            _strings(proto, out)
    return out


def assert_shown_as_text(at: AppTest, *expected: str) -> None:
    """No exception, no payload acting as Markdown, and each ``expected`` fragment shown (escaped) somewhere."""
    assert not at.exception, at.exception
    texts = rendered(at)
    assert not active_markdown(texts), active_markdown(texts)
    joined = "\n".join(texts)
    for fragment in expected:
        assert fragment in joined, (fragment, texts)


# --- the escape -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        (BEACON, r"!\[b\](http://127.0.0.1:9/beacon.png)"),
        (HTML, r"\<img src=x onerror=alert(1)\>"),
        ("$x^2$ :red[z] ~~s~~ `c` *e* a|b", r"\$x^2\$ :red\[z\] \~\~s\~\~ \`c\` \*e\* a\|b"),
        ("back\\slash", r"back\\slash"),
        ("new_whale", "new_whale"),  # an underscore between letters never emphasises: left as it is
        ("_e_ __s__", r"\_e\_ \_\_s\_\_"),
        ("&lt;img&gt; & co", r"\&lt;img\&gt; & co"),  # an entity would turn into "<"
        ("- item", r"\- item"),  # a list, a heading, a rule when the text starts a block
        ("1. item", r"1\. item"),
        ("## big", r"\## big"),
        ("---", r"\---"),
        ("-1", "-1"),
        ("#3 in 2.5", "#3 in 2.5"),
        ("two\nlines\r\n# h", "two lines # h"),  # one line: a line break would start a new block
        (3, "3"),
    ],
)
def test_plain_escapes_what_markdown_would_act_on_and_nothing_else(text, escaped: str) -> None:
    from ui.text import plain

    assert plain(text) == escaped


# --- Markdown: labels, file names, dataset names and errors are text ------------------------------------------


def test_datasets_page_shows_payload_labels_and_names_as_text(open_page) -> None:
    at = open_page("app_pages/datasets.py")
    at.session_state["dataset_tab"] = "Class balance"  # the largest and smallest classes, named in a caption
    at.run()
    assert_shown_as_text(at, r"!\[d\](beacon)", r"Largest class '\<img src=x onerror=alert(1)\>'")
    at.session_state["dataset_tab"] = "Samples"  # a heading per class, then one class's pictures with their names
    at.run()
    assert_shown_as_text(at, r"**!\[b\](http://127.0.0.1:9/beacon.png)**", r"**@SUM(1+1) \$x^2\$ :red\[z\]**")
    at.selectbox(key="grid_class").set_value(HTML).run()
    assert_shown_as_text(at, r"!\[f\](beacon) =1+2.png")


def test_the_metadata_picker_shows_label_values_as_text(open_page, base: Path) -> None:
    meta = base / "meta-payload" / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(LABELS):
        (meta / f"{i}.json").write_text(json.dumps({"kind": label}))
    at = open_page("app_pages/datasets.py")
    at.radio(key="picker_source").set_value("JSON metadata").run()
    at.text_input(key="meta_path").set_value(str(meta)).run()
    assert_shown_as_text(at, r"!\[b\](http://127.0.0.1:9/beacon.png) (1)")


def test_evaluate_page_shows_payload_labels_and_file_names_as_text(open_page, payload: dict) -> None:
    at = open_page("app_pages/evaluate.py", run=str(payload["run"]))
    assert at.selectbox(key="evaluate_run").value == payload["run"]
    # The most confident mistakes (the mislabelled picture among them) and the most confused pairs.
    assert_shown_as_text(at, r"\<img src=x onerror=alert(1)\>", r"!\[f\](beacon) =1+2.png")
    cells = at.selectbox(key="evaluate_cell")  # its values are "true<US>said"; a mistake's cell
    mistake = next(f"{a}\x1f{b}" for a in LABELS for b in LABELS if a != b and cells.format_func(f"{a}\x1f{b}"))
    cells.set_value(mistake).run()
    assert_shown_as_text(at, " sure · ")  # a cell's pictures, each captioned with its file name


def test_classify_page_shows_the_class_list_and_file_names_as_text(open_page, payload: dict) -> None:
    at = open_page("app_pages/classify.py")
    assert_shown_as_text(at, r"This model knows 5 classes: ", r"!\[b\](http://127.0.0.1:9/beacon.png)")
    data = (payload["csv"].parent / "train" / "r0.png").read_bytes()
    at.file_uploader(key="classify_files").set_value([(f"{BEACON}.png", data, "image/png")]).run()
    assert_shown_as_text(at, r"!\[b\](http://127.0.0.1:9/beacon.png).png")  # the name, and the class explained
    at.file_uploader(key="classify_files").set_value(
        [(f"{BEACON}.png", data, "image/png"), (f"{FORMULA}.png", data, "image/png")]
    ).run()
    assert_shown_as_text(at, r"!\[b\](http://127.0.0.1:9/beacon.png).png")  # the gallery's captions


def test_duplicates_page_shows_payload_labels_and_names_as_text(open_page) -> None:
    at = open_page("app_pages/duplicates.py")
    # The mislabelled picture is an exact copy of a training picture: a group with a label conflict.
    assert_shown_as_text(at, r"\<img src=x onerror=alert(1)\>", r"!\[f\](beacon) =1+2.png")


@pytest.mark.parametrize("page", ["runs", "train", "search", "scaling", "compare"])
def test_other_pages_show_dataset_names_and_errors_as_text(open_page, payload: dict, page: str) -> None:
    query = {"runs": {"run": str(payload["failed"])}, "search": {"search": str(payload["search"])}}.get(page, {})
    at = open_page(f"app_pages/{page}.py", **query)
    expected = {"runs": [r"cannot read !\[b\]"], "search": [r"stopped on \<img"]}.get(page, [])
    assert_shown_as_text(at, r"!\[d\](beacon)", *expected)


# --- odd numbers in the address -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "١٢", "1_0", " 1", "-1", "99999999999999999999999"])
@pytest.mark.parametrize("page", ["runs", "evaluate", "search"])
def test_an_odd_number_in_the_address_is_ignored(open_page, page: str, value: str) -> None:
    key = "search" if page == "search" else "run"
    at = open_page(f"app_pages/{page}.py", **{key: value})
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_odd_numbers_in_a_typed_list_are_left_out(open_page) -> None:
    at = open_page("app_pages/train.py")
    at.text_input(key="train_milestones").set_value("3, ², --4, ١٢").run()
    assert not at.exception, at.exception
