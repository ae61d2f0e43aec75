"""The Export panel of the Runs page (issue 26), through AppTest: a finished run exports as ONNX or TorchScript with
the parity in words and a ZIP to download; the demo is offered for ONNX only; a better run on the same data is
named; an export that cannot be made says why."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.common.workspace import Workspace
from tests import imagefactory as fx
from tests.export.test_demo import runtime  # noqa: F401 (a fixture: onnxruntime-web installed, else skipped)
from tests.support import ROOT, train_to_the_end

pytestmark = pytest.mark.usefixtures("no_training_left")


@pytest.fixture
def two_runs(tmp_path: Path, fresh_workspace: Path) -> Workspace:
    ws = Workspace.open(fresh_workspace).with_roots(tmp_path / "data")
    colours = fx.write_colour_classes(tmp_path / "data" / "colours", 30, size=(16, 16))
    train_to_the_end(ws, dataset=str(colours), arch="lenet", epochs=4)  # run 1: learns the colours
    train_to_the_end(ws, dataset=str(colours), arch="lenet", epochs=1, lr=1e-9)  # run 2, newer: learns nothing
    return ws


def _runs_page(run_id: int) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["run"] = str(run_id)
    at.run()
    return at.switch_page("app_pages/runs.py").run()


def _texts(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("caption", "success", "error", "markdown") for e in getattr(at, kind))


def test_a_run_exports_as_onnx_with_its_proof_and_a_zip(two_runs: Workspace) -> None:
    at = _runs_page(1)
    assert not at.exception, at.exception
    at.checkbox(key="export_demo").set_value(False).run()
    at.button(key="export_go").click().run()
    assert not at.exception, at.exception
    said = _texts(at)
    assert "It answers like the studio: the same best guess on" in said, said
    archive = two_runs.root / "exports" / "run-1-onnx.zip"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
    assert {"run-1-onnx/model.onnx", "run-1-onnx/golden.json", "run-1-onnx/predict.py"} <= names
    assert str(two_runs.root) not in said  # no server path on the page


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_torchscript_has_no_demo_and_a_poorer_run_names_the_best(two_runs: Workspace) -> None:
    at = _runs_page(2)
    assert "Run 1 is the best on this data" in _texts(at)
    at.segmented_control(key="export_format").set_value("torchscript").run()
    assert at.checkbox(key="export_demo").disabled
    at.button(key="export_go").click().run()
    assert not at.exception, at.exception
    assert "Exported as TorchScript" in _texts(at)
    assert (two_runs.root / "exports" / "run-2-torchscript" / "model.pt").is_file()


@pytest.mark.slow  # 3-6 s each: the default suite measured 6:28 alone; CI (.ci/run) runs it
def test_an_export_that_cannot_read_its_test_images_says_why(two_runs: Workspace, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(tmp_path / "data" / "colours")  # the dataset moved away since training
    at = _runs_page(1)
    at.checkbox(key="export_demo").set_value(False).run()
    at.button(key="export_go").click().run()
    assert not at.exception, at.exception
    assert any("test images cannot be read" in e.value for e in at.error), [e.value for e in at.error]
    assert not (two_runs.root / "exports" / "run-1-onnx").exists()


@pytest.mark.usefixtures("runtime")
def test_the_demo_comes_in_the_zip_and_a_lenet_says_it_has_no_heat_map(two_runs: Workspace) -> None:
    at = _runs_page(1)
    assert at.checkbox(key="export_demo").value  # on by default for ONNX
    at.button(key="export_go").click().run()
    assert not at.exception, at.exception
    said = _texts(at)
    assert "open index.html in a browser" in said and "The demo page shows no heat map for LeNet" in said, said
    with zipfile.ZipFile(two_runs.root / "exports" / "run-1-onnx.zip") as z:
        assert "run-1-onnx/index.html" in z.namelist()
