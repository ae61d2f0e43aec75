"""The endpoint's limits, on the exact uvicorn configuration ``serve`` uses (``serve_config``), in a thread.

A slow client (headers or body trickling in), a flood of connections, names no file system can hold and JSON
nested 100,000 deep each get a 4xx/503 or a closed connection, never a 500 and never a hang. The model is an
untrained LeNet: these tests are about the server, not the answers.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn

from core.common.workspace import Workspace
from core.explain.predict import Predictor
from core.explain.serve import ServeLimits, build_app, serve_config
from core.train.checkpoints import InferenceModel
from core.train.models import build_model
from tests import imagefactory as f
from tests.app_server import free_port
from tests.support import wait_until

LIMITS = ServeLimits(max_in_flight=1, queue_wait_s=1.0, body_timeout_s=3.0, header_timeout_s=1.0, keep_alive_s=1,
                     max_connections=8)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Workspace]]:
    ws = Workspace.open(tmp_path_factory.mktemp("limits") / "ws")
    f.write_rgb(ws.datasets / "one.png", size=(16, 16))
    model = InferenceModel(build_model("lenet", 2).eval(), "lenet", ["a", "b"], 16, [0.5] * 3, [0.25] * 3)
    port = free_port()
    app = build_app(Predictor(model, source="untrained lenet"), ws, limits=LIMITS)
    uv = uvicorn.Server(serve_config(app, port=port, limits=LIMITS, log_level="warning"))
    thread = threading.Thread(target=uv.run, name="limits-server", daemon=True)
    thread.start()
    wait_until(lambda: _health(port) == 200, timeout=60, what="the server to answer")
    try:
        yield port, ws
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def _health(port: int) -> int | None:
    try:
        return _request(port, "GET", "/health")[0]
    except OSError:
        return None


def _request(port: int, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode(errors="replace")}
    finally:
        conn.close()


def _post_json(port: int, doc: object | bytes) -> tuple[int, dict]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return _request(port, "POST", "/predict", body, "application/json")


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` within ``seconds`` (recv returns b"" or the reset is seen)."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _read_answer(sock: socket.socket, seconds: float) -> bytes:
    """One whole HTTP answer (headers and a Content-Length body) from a raw socket."""
    sock.settimeout(seconds)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_300_character_name_is_400_not_500(server) -> None:
    port, _ = server
    status, doc = _post_json(port, {"path": "datasets/" + "a" * 300 + ".jpg"})
    assert status == 400 and "too long" in doc["error"] and "304-byte name" in doc["error"]


def test_json_nested_100000_deep_is_400(server) -> None:
    port, _ = server
    status, doc = _post_json(port, b"[" * 100_000 + b"]" * 100_000)
    assert status == 413  # a path request is small: the nesting is refused by size first
    status, doc = _post_json(port, b"[" * 30_000 + b"]" * 30_000)
    assert status == 400 and "nested too deeply" in doc["error"]


def test_a_path_inside_still_works(server) -> None:
    port, _ = server
    status, doc = _post_json(port, {"path": "datasets/one.png"})
    assert status == 200 and {t["label"] for t in doc["top"]} == {"a", "b"}


def test_stalled_headers_are_dropped_and_the_server_keeps_answering(server) -> None:
    port, _ = server
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMITS.max_connections)]
    try:
        for sock in stalled:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and nothing more (slowloris)
        started = time.monotonic()
        assert all(_closed_within(sock, LIMITS.header_timeout_s + 5) for sock in stalled)
        assert time.monotonic() - started < LIMITS.header_timeout_s + 5
    finally:
        for sock in stalled:
            sock.close()
    assert _health(port) == 200


@pytest.fixture
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The same limits, but stalled headers and bodies are dropped only after 30 s: long enough to look while they
    stall, however busy the machine."""
    limits = ServeLimits(**{**LIMITS.__dict__, "header_timeout_s": 30.0, "body_timeout_s": 30.0})
    ws = Workspace.open(tmp_path_factory.mktemp("patient") / "ws")
    f.write_rgb(ws.datasets / "one.png", size=(16, 16))
    model = InferenceModel(build_model("lenet", 2).eval(), "lenet", ["a", "b"], 16, [0.5] * 3, [0.25] * 3)
    port = free_port()
    app = build_app(Predictor(model, source="untrained lenet"), ws, limits=limits)
    uv = uvicorn.Server(serve_config(app, port=port, limits=limits, log_level="warning"))
    thread = threading.Thread(target=uv.run, name="patient-server", daemon=True)
    thread.start()
    wait_until(lambda: _health(port) == 200, timeout=60, what="the server to answer")
    try:
        yield port
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def test_health_answers_while_every_connection_slot_is_held_by_stalled_clients(patient_server: int) -> None:
    port = patient_server
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMITS.max_connections)]
    try:
        for sock in stalled:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and nothing more (slowloris)
        # Work waits for a free connection: 503 once the server has taken them all in (at once on a quiet machine).
        wait_until(lambda: _post_json(port, {"path": "datasets/one.png"})[0] == 503, timeout=30, what="503")
        assert _request(port, "GET", "/health") == (200, {"status": "ok", "model": "untrained lenet", "classes": 2})
    finally:
        for sock in stalled:
            sock.close()
    wait_until(lambda: _post_json(port, {"path": "datasets/one.png"})[0] == 200, timeout=30, what="slots back")


def test_a_silent_connection_is_closed_too(server) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        assert _closed_within(sock, LIMITS.header_timeout_s + 5)


def test_a_body_that_stalls_gets_408_and_frees_its_slot(server) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
        sock.sendall(b"\x89PNG")  # 4 of the 1,000 bytes promised
        answer = _read_answer(sock, LIMITS.body_timeout_s + 10)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer
    assert _post_json(port, {"path": "datasets/one.png"})[0] == 200  # the slot was given back


def test_requests_beyond_the_work_slots_wait_then_get_503(patient_server: int) -> None:
    port = patient_server
    with socket.create_connection(("127.0.0.1", port)) as holder:  # holds the only slot while its body trickles
        holder.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 50\r\n\r\n")
        # The holder has the slot once a request gets 503 (a fixed pause raced the server on a busy machine); its
        # body may stall for 30 s, so the slot stays taken while the three below wait their 1 s each.
        wait_until(lambda: _post_json(port, {"path": "datasets/one.png"})[0] == 503, timeout=30, what="slot held")
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: _post_json(port, {"path": "datasets/one.png"}), range(3)))
    assert [status for status, _ in answers] == [503] * 3
    assert all("busy" in doc["error"] for _, doc in answers)
    assert _post_json(port, {"path": "datasets/one.png"})[0] == 200


# --- the bad-file corpus (tests/badfiles.py) through the endpoint --------------------------------------------


def test_every_corpus_file_gets_an_answer_or_a_4xx_never_a_500(server) -> None:
    from tests.badfiles import CORPUS, write_corpus

    port, ws = server
    root = write_corpus(ws.datasets / "corpus")
    seen = {}
    for kind in CORPUS:
        path = root / "a" / kind.name
        by_path = _post_json(port, {"path": f"datasets/corpus/a/{kind.name}"})
        by_bytes = _request(port, "POST", "/predict", path.read_bytes(), "image/png") if path.is_file() else None
        seen[kind.name] = (by_path[0], by_bytes[0] if by_bytes else None)
        expected = 200 if kind.good else {"link-out.jpg": 403, "folder.jpg": 404}.get(kind.name, 400)
        assert by_path[0] == expected, (kind.what, by_path)
        if by_bytes is not None:
            assert by_bytes[0] == (200 if kind.good else 400), (kind.what, by_bytes)
        for status, doc in filter(None, (by_path, by_bytes)):
            assert status < 500 and ("top" in doc) == (status == 200), doc
    assert _health(port) == 200
