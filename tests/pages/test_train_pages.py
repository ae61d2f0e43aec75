"""AppTest for the Train and Runs pages: the form starts a real run in the background, the Runs page shows it
with its curves and acts on it (resume, rerun with changes, delete)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import run_folder
from core.train import runner as train_run
from core.train.config import TrainConfig, label_of
from core.train.jobs import JobRegistry
from core.train.runplan import DataFacts, resolve
from tests import imagefactory as fx
from tests.support import ROOT, cancel_after_first_checkpoint

TIMEOUT = 120


pytestmark = pytest.mark.usefixtures("no_training_left")  # never a training thread left running


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "colours"
    for label, colour in {"red": (220, 30, 30), "green": (30, 200, 40)}.items():
        for i in range(16):
            fx.write_rgb(root / label / f"{i}.png", size=(12, 12), color=colour, seed=i)
    return root


def _app(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    return at.switch_page(page).run()


def _choose_folder(at: AppTest, folder: Path) -> None:
    from core.datasets.sources import resolve_dataset

    at.session_state["dataset"] = resolve_dataset(str(folder), Workspace.open())


def _finished_run(ws: Path, folder: Path, epochs: int = 1) -> int:
    workspace = Workspace.open(ws)
    store = RunStore(workspace.runs_db)
    registry = JobRegistry(store)
    config = TrainConfig(dataset=str(folder), arch="lenet", epochs=epochs, batch_size=8, log_every=1)
    run_id = train_run.submit_training(registry, workspace, config)
    assert registry.wait(run_id, timeout=300).status == "completed"
    return run_id


def test_train_form_shows_the_essentials_with_what_automatic_chose_and_help_on_every_field() -> None:
    at = _app("app_pages/train.py")
    assert not at.exception
    arch = at.selectbox(key="train_arch")
    assert arch.value == "auto"
    shown = [c.value for c in at.caption]
    assert any(c.startswith("Automatic: LeNet (small CNN). The images' median side is 8 px") for c in shown), shown
    assert any(c.startswith("Automatic: 16 px. From the images' median side (8 px)") for c in shown), shown
    assert at.checkbox(key="train_epochs_auto").value and TrainConfig().epochs == 0
    assert "Automatic: As many as the data needs: 12, then longer cycles while it still learns (at most 100)." in shown
    assert [s.label for s in at.selectbox][:2] == ["Network", "Starting weights"]  # words, not field names
    widgets = [*at.selectbox, *at.number_input, *at.toggle, *at.checkbox]
    helps = [w.help for w in widgets if w.key and w.key.startswith("train_") and w.key != "train_weights_file"]
    assert helps and all(helps)
    text = " ".join(c.value for c in at.caption)
    assert "1,257 images to learn from, 270 to watch progress on (validation) and 270 kept apart" in text
    # 1,797 digits at 16 px: 1.4 MB decoded, on the disk; the run's own memory before what is free
    assert re.search(r"Memory: about [\d.,]+ MB for this run, of [\d.,]+ GB free\. The decoded images \(1 MB\) "
                     r"stay on the disk, read a batch at a time\.", text)  # fmt: skip
    assert "Automatic. An eighth of the memory free when the run starts" in text  # Working memory, under Advanced
    assert not at.warning  # the digits have large enough splits and the small CNN suits them


def test_estimate_then_start_a_run_from_the_form(colours: Path, fresh_workspace: Path) -> None:
    at = _app("app_pages/train.py")
    _choose_folder(at, colours)
    at.run()
    at.selectbox(key="train_arch").select("lenet").run()
    at.checkbox(key="train_epochs_auto").uncheck().run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_estimate").click().run()
    assert not at.exception
    assert any("per epoch" in i.value for i in at.info), [i.value for i in at.info]
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("started" in s.value for s in at.success)
    from ui.state import jobs

    job = jobs().active()[0]
    assert jobs().wait(job.run_id, timeout=300).status == "completed"
    run = RunStore(Workspace.open(fresh_workspace).runs_db).get_run(job.run_id)
    assert run.config["epochs"] == 1 and run.arch == "lenet" and run.dataset == str(colours)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({}, ["2.0 s per epoch", "trains 12 epochs (about 0.4 min)", "at most 100 epochs (3.3 min)"]),
        ({"epochs": 30}, ["about 1.0 min for 30 epochs"]),
        ({"epochs": 1}, ["for 1 epoch."]),
        ({"schedule": "plateau"}, ["stops when validation stops improving, at most after 100 epochs (3.3 min)"]),
    ],
)
def test_the_estimate_says_how_long_the_run_can_take(changes: dict, words: list[str]) -> None:
    plan = resolve(TrainConfig(dataset="x", **changes), DataFacts(8, True))  # the words of the plan's epochs
    text = plan.epochs.time_words(2.0)
    assert all(w in text for w in words), text


def test_every_option_appears_exactly_once_on_the_form_with_its_label() -> None:
    """The form is made from the options' metadata: each option but the dataset (the picker's) has one widget,
    ``train_<option>`` (a 0-is-automatic one its "automatic" box first), labelled in words; none is placed by hand."""
    at = _app("app_pages/train.py")
    at.expander[0]  # Advanced settings: drawn, collapsed
    widgets = [*at.selectbox, *at.number_input, *at.toggle, *at.checkbox, *at.text_input]
    keys = [w.key for w in widgets if w.key and w.key.startswith("train_")]
    options = [f.name for f in fields(TrainConfig) if f.name != "dataset"]
    for name in options:
        own = [k for k in keys if k in (f"train_{name}", f"train_{name}_auto")]
        assert len(own) == 1, (name, own)  # automatic ones show only their box while automatic
    labels = {w.key: w.label for w in widgets if w.key}
    assert labels["train_log_every"] == label_of("log_every") == "Report every (steps)"  # it had no widget
    assert not [k for k in keys if k.removesuffix("_auto").removeprefix("train_") not in options
                and k not in ("train_weights_parent", "train_weights_file")]  # fmt: skip


def test_a_bad_value_in_the_form_is_a_message_in_words_not_a_run() -> None:
    at = _app("app_pages/train.py")
    at.number_input(key="train_val_fraction").set_value(0.9).run()
    assert not at.exception
    assert at.error and "Validation share 0.9 and Test share 0.15" in at.error[0].value
    assert not [b for b in at.button if b.key == "train_start"]  # nothing to start until the value is fixed


def test_a_large_network_on_few_images_and_tiny_splits_are_warned_before_the_start(colours: Path) -> None:
    at = _app("app_pages/train.py")
    _choose_folder(at, colours)
    at.run()
    at.selectbox(key="train_arch").select("resnet18").run()
    warnings = " ".join(w.value for w in at.warning)
    assert "ResNet-18 would learn from scratch on 24 images" in warnings
    assert "Only 4 images for validation" in warnings and "Only 4 images for test" in warnings


def test_runs_page_empty_state_links_to_train() -> None:
    at = _app("app_pages/runs.py")
    assert not at.exception
    assert "No runs yet" in at.info[0].value


def test_runs_page_shows_a_finished_run_with_curves_and_actions(colours: Path, fresh_workspace: Path) -> None:
    run_id = _finished_run(fresh_workspace, colours)
    at = _app("app_pages/runs.py")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run_id"]) == [run_id] and table["status"][0] == "finished"
    assert table["test_images"][0] == "4" and table["test_accuracy"][0].endswith("%")  # the score and what it counts
    assert at.subheader[0].value.endswith("finished")
    cards = {m.label: m.value for m in at.metric}
    assert cards["Test accuracy"].endswith("%") and cards["Epochs"] == "1"
    assert "Measured on only 4 test images" in " ".join(w.value for w in at.warning)  # beside the score
    assert len(at.get("plotly_chart")) >= 3  # loss and accuracy per epoch, and the learning rate per step
    assert at.button(key="run_resume").disabled  # completed: nothing to resume
    at.button(key="run_rerun").click().run()
    assert not at.exception
    assert at.selectbox(key="train_arch").value == "lenet"  # the Train form opened with this run's settings
    assert at.number_input(key="train_batch_size").value == 8
    said = " ".join(i.value for i in at.info)
    assert f"The form holds the settings of run {run_id} (lenet-{run_id}, LeNet" in said and "colours" in said
    at.switch_page("app_pages/train.py").run()  # still said on the next redraw, until a run starts
    assert f"the settings of run {run_id}" in " ".join(i.value for i in at.info)


def test_a_run_that_finished_while_the_user_was_away_shows_its_result_on_the_train_page(
    colours: Path, fresh_workspace: Path
) -> None:
    run_id = _finished_run(fresh_workspace, colours)  # started elsewhere (another tab, the command line)
    at = _app("app_pages/train.py")  # a new session: it started nothing
    assert not at.exception
    assert any(s.value.startswith(f"**lenet-{run_id}** finished in") for s in at.success), [s.value for s in at.success]


def test_the_run_named_in_the_address_is_the_one_shown(colours: Path, fresh_workspace: Path) -> None:
    first = _finished_run(fresh_workspace, colours)
    _finished_run(fresh_workspace, colours)
    at = _app("app_pages/runs.py")
    assert at.subheader[0].value.startswith(f"lenet-{first + 1}")  # the newest by default
    at.query_params["run"] = str(first)  # a refresh, a bookmark or a shared link
    at.run()
    assert at.subheader[0].value.startswith(f"lenet-{first}") and not at.exception
    assert f"Showing run {first}" in " ".join(c.value for c in at.caption)


def test_runs_page_resumes_a_cancelled_run_and_deletes_it(colours: Path, fresh_workspace: Path) -> None:
    workspace = Workspace.open(fresh_workspace)
    run_id = _finished_run(fresh_workspace, colours, epochs=1)
    store = RunStore(workspace.runs_db)
    # A second run, cancelled after its first epoch, is resumable from the page.
    from ui.state import jobs

    at = _app("app_pages/runs.py")
    registry = jobs()
    config = TrainConfig(dataset=str(colours), arch="lenet", epochs=3, batch_size=8, log_every=1)
    second = train_run.submit_training(registry, workspace, config)
    last = run_folder.checkpoint_path(workspace, second, "last")
    cancel_after_first_checkpoint(registry, second, last)
    registry.wait(second, timeout=120)
    at.run()
    at.dataframe[0]  # newest first: the cancelled run is selected by default
    assert not at.button(key="run_resume").disabled
    good = last.read_bytes()  # a checkpoint damaged after the page was drawn: a message in words, no traceback
    last.write_bytes(good[: len(good) // 2])
    at.button(key="run_resume").click().run()
    assert not at.exception and store.get_run(second).status == "cancelled"
    assert any("cannot be resumed" in e.value and "damaged" in e.value for e in at.error), [e.value for e in at.error]
    last.write_bytes(good)
    at.button(key="run_resume").click().run()
    assert not at.exception
    assert registry.wait(second, timeout=300).status == "completed"
    assert store.get_run(second).status == "completed"
    at.run()
    at.button(key="run_delete").click().run()
    assert not at.exception
    assert [r.run_id for r in store.list_runs()] == [run_id]
    assert not run_folder.run_dir(workspace, second).exists()


def test_runs_page_warns_when_the_runs_data_leaks(tmp_path: Path, fresh_workspace: Path) -> None:
    """A val image that is a copy of a train image makes the run's scores optimistic: the page says so."""
    from core.datasets.sources import resolve_dataset
    from core.dedup.groups import find_duplicates

    root = tmp_path / "data" / "leaky"
    for label, seed in (("a", 10), ("b", 40)):
        for i in range(6):
            fx.write_photo(root / "train" / label / f"{i}.png", seed=seed + i)
            fx.write_photo(root / "val" / label / f"{i}.png", seed=seed + 20 + i)
    (root / "val" / "a" / "copy.png").write_bytes((root / "train" / "a" / "0.png").read_bytes())
    workspace = Workspace.open(fresh_workspace)
    find_duplicates(resolve_dataset(str(root), workspace), workspace.cache)  # the Duplicates page was visited
    _finished_run(fresh_workspace, root)
    at = _app("app_pages/runs.py")
    assert not at.exception
    assert any("val" in w.value and "train" in w.value for w in at.warning), [w.value for w in at.warning]
