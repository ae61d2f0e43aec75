"""AppTest: what the divergence guard did and a run that did not learn, on the Runs page and the Train page's result.

A rate of 10 on the digits runs away (the issue's acceptance: caught, restarted at a lower rate, above 90% at the
end, with the event in the store and on the Runs page); a set whose labels say nothing about the images ends "did
not learn", which no page may show as a green success.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from core.store.runs import RunStore
from core.train import runner as train_run
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry
from core.train.verdict import DID_NOT_LEARN, LEARNED
from tests.support import ROOT
from tests.train.test_guard import write_meaningless_labels

TIMEOUT = 120


pytestmark = pytest.mark.usefixtures("no_training_left")  # never a training thread left running


def _train(ws: Path, config: TrainConfig) -> int:
    workspace = Workspace.open(ws)
    registry = JobRegistry(RunStore(workspace.runs_db))
    run_id = train_run.submit_training(registry, workspace, config)
    job = registry.wait(run_id, timeout=900)
    assert job.status == "completed", job.error
    return run_id


def _page(page: str, **state: object) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page(page)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def _texts(elements) -> str:
    return " | ".join(e.value for e in elements)


@pytest.mark.slow  # 5-21 s: the default suite had reached 7:21 alone; CI (.ci/run) runs it
def test_a_rate_of_10_on_the_digits_is_caught_restarted_and_said_on_the_runs_page(fresh_workspace: Path) -> None:
    run_id = _train(fresh_workspace, TrainConfig(dataset="sample:digits", lr=10))
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    events = store.params(run_id)["runaways"]
    assert events and not any(e["gave_up"] for e in events)
    first = events[0]["words"]
    assert first.startswith("the loss ran away at epoch ") and "; restarted from " in first
    assert "at a quarter of the rate (2.5)" in first
    went = train_run.result_json(store, run_id)
    assert went["test"]["accuracy"] > 0.9 and went["outcome"] == LEARNED and went["runaways"][0] == first

    at = _page("app_pages/runs.py")
    assert not at.exception
    assert f"Divergence guard: {first}." in _texts(at.info)
    assert first in at.dataframe[0].value["error"][0]  # the table says it too, beside the run
    assert at.subheader[0].value.endswith("finished") and DID_NOT_LEARN not in _texts(at.warning)


def test_a_run_that_did_not_learn_is_never_shown_as_a_success(tmp_path: Path, fresh_workspace: Path) -> None:
    data = write_meaningless_labels(tmp_path / "data" / "noise")
    run_id = _train(fresh_workspace, TrainConfig(dataset=str(data), epochs=8))
    store = RunStore(Workspace.open(fresh_workspace).runs_db)
    params = store.params(run_id)
    assert params["outcome"] == DID_NOT_LEARN and "is about chance" in params["outcome_why"]
    assert store.get_run(run_id).status == "completed"  # the status stays; the outcome is the new field
    chance = f"chance {params['chance']:.1%}"

    at = _page("app_pages/runs.py")
    assert not at.exception
    row = at.dataframe[0].value.iloc[0]
    assert row["status"] == f"finished, {DID_NOT_LEARN}" and row["test_accuracy"].endswith(f"({chance})")
    assert row["error"] == f"{DID_NOT_LEARN}: {params['outcome_why']}"
    assert at.subheader[0].value.endswith(f"finished · {DID_NOT_LEARN}")
    assert "This run did not learn: its best validation accuracy" in _texts(at.warning)
    assert {m.label: m.delta for m in at.metric}["Test accuracy"] == chance  # chance beside the score

    from core.datasets.sources import resolve_dataset

    at = _page("app_pages/train.py", dataset=resolve_dataset(str(data), Workspace.open()), train_last_started=run_id)
    assert not at.exception
    assert "did not learn" in _texts(at.warning) and "chance level" in _texts(at.warning)
    assert "finished in" not in _texts(at.success)  # no green box for it
