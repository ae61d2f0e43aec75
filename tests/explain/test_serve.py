"""``python -m core serve``: a real HTTP server in a child process, spoken to with the standard library.

One tiny LeNet run is trained once per module; the server answers for it on a free localhost port and is
always stopped by the fixture's finalizer. The body-size limit is checked on ``core.serve.build_app`` with a
small ``max_bytes``, served by uvicorn in a thread of this process.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from core.common.workspace import Workspace
from core.explain.predict import Predictor, load_run_predictor
from core.explain.serve import build_app
from core.store.runs import RunStore
from tests import imagefactory as f
from tests.app_server import free_port
from tests.support import ROOT, TrainedRun, copy_workspace, wait_until

COLOURS = f.COLOURS
STARTUP_S = 120  # importing torch and loading the checkpoint on a busy 2-core machine


@dataclass
class Served:
    ws: Workspace
    run_id: int
    predictor: Predictor  # the same checkpoint, loaded in this process
    images: Path  # test images inside the workspace
    port: int
    log: Path


@pytest.fixture(scope="module")
def trained(trained_colours: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, int]:
    """The session's colour run in a copy of its workspace (the server's request images are added to it)."""
    run = copy_workspace(trained_colours, tmp_path_factory.mktemp("serve") / "ws")
    return run.ws, run.run_id


def _request(port: int, method: str, path: str, body=None, headers: dict | None = None,
             **kw) -> tuple[int, dict]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {}, **kw)
        response = conn.getresponse()
        raw = response.read()
        assert response.getheader("content-type", "").startswith("application/json"), raw
        return response.status, json.loads(raw)
    finally:
        conn.close()


def _wait_for_health(port: int, proc: subprocess.Popen | None, log: Path | None) -> dict:
    def health() -> dict | None:
        try:
            status, doc = _request(port, "GET", "/health")
        except OSError:
            return None
        return doc if status == 200 else None

    try:
        return wait_until(health, timeout=STARTUP_S, what="a /health answer", interval=0.1, process=proc)
    except AssertionError as exc:
        pytest.fail(f"{exc}:\n{log.read_text() if log else ''}")


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ws, run_id = trained
    images = ws.datasets / "requests"  # inside the workspace: reachable by {"path": ...}
    f.write_rgb(images / "wide.jpg", size=(20, 12), color=COLOURS["red"], seed=3, fmt="JPEG")
    f.write_rgb(images / "tall.png", size=(12, 18), color=COLOURS["blue"], seed=4)
    f.write_exif_rotated_jpeg(images / "rotated.jpg", size=(24, 12), orientation=6)
    f.write_truncated_jpeg(images / "truncated.jpg", size=(64, 64))
    f.write_text_as_image(images / "text.png")
    (images / "escape.jpg").symlink_to("/etc/passwd")
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "core", "serve", "--run", str(run_id), "--port", str(port),
            "--workspace", str(ws.root)]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for_health(port, proc, log)
        yield Served(ws, run_id, load_run_predictor(ws, RunStore(ws.runs_db), run_id, "cpu"), images, port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post(served: Served, body: bytes, content_type: str, query: str = "") -> tuple[int, dict]:
    return _request(served.port, "POST", f"/predict{query}", body=body, headers={"Content-Type": content_type})


def _post_path(served: Served, path: str, query: str = "") -> tuple[int, dict]:
    return _post(served, json.dumps({"path": path}).encode(), "application/json", query)


def _assert_prediction(doc: dict, served: Served, image: Path) -> None:
    """The ``predict`` object, and the same answer core.predict gives for the same file."""
    assert set(doc) >= {"image", "top", "ms"}, doc
    assert "error" not in doc
    top = doc["top"]
    assert len(top) == min(5, len(served.predictor.classes))
    ps = [t["p"] for t in top]
    assert all(0.0 <= p <= 1.0 for p in ps) and ps == sorted(ps, reverse=True) and sum(ps) <= 1.0 + 1e-5
    expected = served.predictor.run(image, image.name).top
    assert [t["label"] for t in top] == [t["label"] for t in expected]
    assert ps == pytest.approx([t["p"] for t in expected], abs=1e-4)


def _assert_error(status: int, doc: dict, expected: int) -> str:
    assert status == expected, doc
    assert set(doc) == {"error"}, doc
    assert isinstance(doc["error"], str) and re.search(r"[a-z]{3,}", doc["error"]), doc
    return doc["error"]


# --- answers -------------------------------------------------------------------------------------


def test_health_names_the_model(served: Served) -> None:
    status, doc = _request(served.port, "GET", "/health")
    assert status == 200
    assert doc == {"status": "ok", "model": f"run {served.run_id}", "classes": 3}


@pytest.mark.parametrize(("name", "content_type"), [("wide.jpg", "image/jpeg"), ("tall.png", "image/png"),
                                                    ("rotated.jpg", "image/jpeg")])  # fmt: skip
def test_image_bytes_get_the_predict_object(name: str, content_type: str, served: Served) -> None:
    image = served.images / name
    status, doc = _post(served, image.read_bytes(), content_type)
    assert status == 200, doc
    _assert_prediction(doc, served, image)
    assert "cam_ms" not in doc


def test_content_type_parameters_are_accepted(served: Served) -> None:
    image = served.images / "tall.png"
    status, doc = _post(served, image.read_bytes(), "Image/PNG; charset=binary")
    assert status == 200, doc
    _assert_prediction(doc, served, image)


@pytest.mark.parametrize("relative", [True, False])
def test_a_json_path_inside_the_workspace_is_classified(relative: bool, served: Served) -> None:
    image = served.images / "wide.jpg"
    path = str(image.relative_to(served.ws.root)) if relative else str(image)
    status, doc = _post_path(served, path)
    assert status == 200, doc
    _assert_prediction(doc, served, image)
    assert doc["image"] == "wide.jpg"


def test_cam_query_adds_cam_ms(served: Served) -> None:
    image = served.images / "wide.jpg"
    status, doc = _post(served, image.read_bytes(), "image/jpeg", "?cam=gradcam")
    assert status == 200, doc
    _assert_prediction(doc, served, image)
    assert doc["cam_method"] == "gradcam" and doc["cam_class"] == doc["top"][0]["label"]
    assert isinstance(doc["cam_ms"], int | float) and doc["cam_ms"] >= 0
    assert "cam" not in doc  # the heat map itself is not sent


def test_cam_query_with_a_class(served: Served) -> None:
    image = served.images / "wide.jpg"
    other = served.predictor.run(image, "x").top[-1]["label"]
    status, doc = _post_path(served, str(image), f"?cam=eigencam&class={other}")
    assert status == 200, doc
    assert doc["cam_class"] == other and doc["cam_method"] == "eigencam"


# --- bad input -----------------------------------------------------------------------------------


def test_a_path_outside_the_workspace_is_forbidden(served: Served) -> None:
    for path in ("/etc/passwd", "../../../../../../etc/passwd", str(served.images / "escape.jpg")):  # last: a link out
        message = _assert_error(*_post_path(served, path), 403)
        # Neither the path asked for nor where the workspace is on the server's disk.
        assert "passwd" not in message and str(served.ws.root) not in message and "/" not in message, message


def test_a_missing_file_inside_is_named_relative_to_the_workspace(served: Served) -> None:
    message = _assert_error(*_post_path(served, str(served.ws.root / "datasets" / "gone.png")), 404)
    assert str(served.ws.root) not in message and "datasets/gone.png" in message


def test_a_missing_file_is_404(served: Served) -> None:
    message = _assert_error(*_post_path(served, str(served.images / "nothing-here.jpg")), 404)
    assert "nothing-here.jpg" in message


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00", b"", json.dumps({"image": "x.jpg"}).encode(), b"[1, 2]",
     json.dumps({"path": ""}).encode(), json.dumps({"path": 3}).encode()],
    ids=["broken", "binary", "empty", "no-path", "list", "empty-path", "number-path"],
)  # fmt: skip
def test_bad_json_is_400(body: bytes, served: Served) -> None:
    _assert_error(*_post(served, body, "application/json"), 400)


def test_bad_json_says_it_is_not_json(served: Served) -> None:
    assert "JSON" in _assert_error(*_post(served, b"{not json", "application/json"), 400)
    assert "path" in _assert_error(*_post(served, b'{"image": "x.jpg"}', "application/json"), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "image/gif", "application/octet-stream", None])
def test_other_content_types_are_415(content_type: str | None, served: Served) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = (served.images / "wide.jpg").read_bytes()
    message = _assert_error(*_request(served.port, "POST", "/predict", body=body, headers=headers), 415)
    assert "image/jpeg" in message


def test_truncated_jpeg_bytes_are_400_with_a_reason(served: Served) -> None:
    message = _assert_error(*_post(served, (served.images / "truncated.jpg").read_bytes(), "image/jpeg"), 400)
    assert "truncated" in message


def test_unreadable_uploads_and_files_are_400(served: Served) -> None:
    _assert_error(*_post(served, b"hello, I am not an image\n", "image/png"), 400)
    _assert_error(*_post(served, b"", "image/jpeg"), 400)
    _assert_error(*_post_path(served, str(served.images / "text.png")), 400)
    _assert_error(*_post_path(served, str(served.images / "truncated.jpg")), 400)


def test_bad_cam_requests_are_400(served: Served) -> None:
    body = (served.images / "wide.jpg").read_bytes()
    assert "nosuchcam" in _assert_error(*_post(served, body, "image/jpeg", "?cam=nosuchcam"), 400)
    assert "zebra" in _assert_error(*_post(served, body, "image/jpeg", "?cam=gradcam&class=zebra"), 400)
    assert "zebra" in _assert_error(*_post(served, body, "image/jpeg", "?class=zebra"), 400)


def test_get_predict_is_not_allowed(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        conn.request("GET", "/predict")
        assert conn.getresponse().status == 405
    finally:
        conn.close()


def test_the_server_still_answers_after_bad_requests(served: Served) -> None:
    for _ in range(3):
        _post(served, b"garbage", "image/jpeg")
    status, doc = _request(served.port, "GET", "/health")
    assert status == 200 and doc["status"] == "ok"


def test_no_request_so_far_raised_inside_the_server(served: Served) -> None:
    """Every bad request above was answered by the endpoint itself, never by an unhandled exception (500)."""
    log = served.log.read_text()
    assert "Traceback" not in log and " 500 " not in log, log
    assert "POST /predict" in log  # the access log is there: the check above looked at the right file


# --- the body-size limit: build_app(max_bytes=1000) served by uvicorn in a thread -------------------

SMALL_LIMIT = 1000


@pytest.fixture(scope="module")
def small_server(trained) -> Iterator[int]:
    ws, run_id = trained
    predictor = load_run_predictor(ws, RunStore(ws.runs_db), run_id, "cpu")
    port = free_port()
    config = uvicorn.Config(build_app(predictor, ws, max_bytes=SMALL_LIMIT), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="small-server", daemon=True)
    thread.start()
    try:
        _wait_for_health(port, None, None)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_body_over_the_limit_is_413(small_server: int, tmp_path: Path) -> None:
    big = f.write_rgb(tmp_path / "big.png", size=(64, 64), seed=1).read_bytes()
    big += b"\0" * max(0, SMALL_LIMIT + 1 - len(big))
    assert len(big) > SMALL_LIMIT
    status, doc = _request(small_server, "POST", "/predict", body=big, headers={"Content-Type": "image/png"})
    assert f"{SMALL_LIMIT:,}" in _assert_error(status, doc, 413)


def test_a_chunked_body_over_the_limit_is_413_too(small_server: int) -> None:
    """No Content-Length to refuse up front: the body is counted as it arrives."""
    chunks = [b"x" * 400] * 4
    status, doc = _request(small_server, "POST", "/predict", body=iter(chunks),
                           headers={"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"},
                           encode_chunked=True)  # fmt: skip
    _assert_error(status, doc, 413)


def test_a_json_body_over_the_limit_is_413(small_server: int) -> None:
    body = json.dumps({"path": "x" * (SMALL_LIMIT + 10)}).encode()
    _assert_error(*_request(small_server, "POST", "/predict", body=body,
                            headers={"Content-Type": "application/json"}), 413)  # fmt: skip


def test_a_small_body_passes_the_limit(small_server: int, tmp_path: Path) -> None:
    small = f.write_rgb(tmp_path / "small.png", size=(8, 8), seed=2).read_bytes()
    assert len(small) <= SMALL_LIMIT
    status, doc = _request(small_server, "POST", "/predict", body=small, headers={"Content-Type": "image/png"})
    assert status == 200, doc
    assert len(doc["top"]) == 3
