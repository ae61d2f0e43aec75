"""The demo page's files (``core.export.demo.write_demo``): what it writes, what it says without its runtime, and
labels that stay text. The page itself is driven in headless Chromium by tests/browser/test_browser_demo.py."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from core.common.errors import CoreError
from core.export import demo
from core.export.demo import DemoError, write_demo

NASTY = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "cat & dog", "line\u2028break"]
MODEL_BYTES = bytes(range(256)) * 3  # write_demo carries the bytes as they are; it never parses the model


@pytest.fixture
def runtime() -> Path:
    """onnxruntime-web's installed files; skipped without them (./studio test installs them), failed in CI."""
    if not all((demo.RUNTIME_DIST / name).is_file() for name in demo.RUNTIME_FILES):
        why = "onnxruntime-web is not installed: ./studio test runs npm ci --prefix web"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return demo.RUNTIME_DIST


def export_folder(folder: Path, labels: list[str], *, head: bool = True, not_sure: bool = True) -> Path:
    """An export folder as export_run writes it before the demo (the model's bytes stand in for a model)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(MODEL_BYTES)
    (folder / "labels.json").write_text(json.dumps(labels, ensure_ascii=False), encoding="utf-8")
    preprocess = {"side": 32, "channels": 3, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "layout": "NCHW"}
    (folder / "preprocess.json").write_text(json.dumps(preprocess))
    if head:
        weights = [[0.5 * k - c / 7 for c in range(6)] for k in range(len(labels))]
        doc = {"block": "layer4", "block_words": "the last convolutional block", "map_side": 1, "weights": weights,
               "bias": [0.0] * len(labels)}  # fmt: skip
        (folder / "head.json").write_text(json.dumps(doc))
    if not_sure:
        (folder / "not_sure.json").write_text(json.dumps({"unsure_p": 0.42, "unlike_words": "not like them"}))
    return folder


def script_value(path: Path, name: str) -> object:
    """The JSON value a ``window.<name> = ...;`` script assigns."""
    text = path.read_text(encoding="ascii")
    prefix = f"window.{name} = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix) : -2])


@pytest.mark.usefixtures("runtime")
def test_write_demo_writes_the_page_and_what_it_loads(tmp_path: Path) -> None:
    folder = export_folder(tmp_path / "export", ["cat", "dog", "bird"])
    written = write_demo(folder)
    names = {p.name for p in written}
    assert names == {"index.html", "demo-data.js", "model.js", "ort.wasm.min.js", "ort-runtime.js"}
    assert all(p.parent == folder and p.is_file() and p.stat().st_mode & 0o044 == 0o044 for p in written)

    page = (folder / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'<script src="([^"]+)"', page)
    assert sources == ["ort.wasm.min.js", "ort-runtime.js", "demo-data.js"]  # model.js comes later, by name
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing from outside

    model = (folder / "model.js").read_text(encoding="ascii")
    assert base64.b64decode(model.split('"')[1]) == MODEL_BYTES

    runtime = (folder / "ort-runtime.js").read_text(encoding="utf-8")
    packed = runtime.split('wasm: "')[1].split('"')[0]
    wasm = (demo.RUNTIME_DIST / demo.WASM).read_bytes()
    assert gzip.decompress(base64.b64decode(packed)) == wasm
    assert len(runtime) < 0.5 * len(wasm)  # compressed: the runtime is a third of its plain size
    assert demo.pinned_version() in runtime and "sourceMappingURL" not in (folder / "ort.wasm.min.js").read_text()

    data = script_value(folder / "demo-data.js", "studioDemoData")
    assert data["labels"] == ["cat", "dog", "bird"]
    assert data["preprocess"] == {"side": 32, "channels": 3, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    assert data["notSure"] == {"unsure_p": 0.42, "unlike_words": "not like them"}
    head = data["head"]
    weights = np.frombuffer(base64.b64decode(head["weights"]), dtype="<f4").reshape(3, head["channels"])
    expected = np.array([[0.5 * k - c / 7 for c in range(6)] for k in range(3)], dtype=np.float32)
    assert np.array_equal(weights, expected) and head["block"] == "layer4"


@pytest.mark.usefixtures("runtime")
def test_a_network_without_a_map_and_a_run_without_checks(tmp_path: Path) -> None:
    folder = export_folder(tmp_path / "export", ["a", "b"], head=False, not_sure=False)
    write_demo(folder)
    data = script_value(folder / "demo-data.js", "studioDemoData")
    assert data["head"] is None
    from core.train.familiar import MAX_UNSURE_P

    assert data["notSure"]["unsure_p"] == MAX_UNSURE_P  # the studio's own rule for a run without checks


@pytest.mark.usefixtures("runtime")
def test_labels_stay_text(tmp_path: Path) -> None:
    """A class name is the user's text: the data script holds no markup character at all, and the page sets names
    only as text (no innerHTML anywhere)."""
    folder = export_folder(tmp_path / "export", NASTY)
    write_demo(folder)
    raw = (folder / "demo-data.js").read_bytes()
    assert not set(raw) & set(b"<>&") and b"\xe2\x80\xa8" not in raw
    assert script_value(folder / "demo-data.js", "studioDemoData")["labels"] == NASTY
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", page)


def test_without_the_runtime_it_says_what_to_run(tmp_path: Path) -> None:
    folder = export_folder(tmp_path / "export", ["cat", "dog"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DemoError) as caught:
        write_demo(folder, runtime=empty)
    words = str(caught.value)
    assert isinstance(caught.value, CoreError)
    assert "onnxruntime-web" in words and "npm ci --prefix web" in words and "./studio" in words
    assert not (folder / "index.html").exists()  # nothing half-made


def test_another_installed_version_is_refused(tmp_path: Path) -> None:
    """A runtime other than the pinned one was not checked against the lockfile: the words say to reinstall."""
    dist = tmp_path / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in demo.RUNTIME_FILES:
        (dist / name).write_text("x")
    (dist.parent / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": "0.0.1"}))
    folder = export_folder(tmp_path / "export", ["cat", "dog"])
    with pytest.raises(DemoError, match=r"0\.0\.1 is installed but web/package\.json asks for .*npm ci --prefix web"):
        write_demo(folder, runtime=dist)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("labels.json", '{"cat": 0}', "labels.json"),
        ("labels.json", "[1, 2]", "labels.json must be a list of class names"),
        ("preprocess.json", '{"side": 32, "channels": 2, "mean": [0, 0], "std": [1, 1]}', "do not fit"),
        ("preprocess.json", '{"side": 32}', "preprocess.json lacks"),
        ("head.json", '{"weights": [[1, 2]]}', "weights must be 2 rows"),
    ],
)
@pytest.mark.usefixtures("runtime")
def test_a_folder_it_cannot_use_is_refused_in_words(tmp_path: Path, name: str, content: str, words: str) -> None:
    folder = export_folder(tmp_path / "export", ["cat", "dog"])
    (folder / name).write_text(content)
    with pytest.raises(DemoError, match=re.escape(words)):
        write_demo(folder)


@pytest.mark.usefixtures("runtime")
def test_no_model_no_demo(tmp_path: Path) -> None:
    folder = export_folder(tmp_path / "export", ["cat", "dog"])
    (folder / "model.onnx").unlink()
    with pytest.raises(DemoError, match="no model.onnx"):
        write_demo(folder)
