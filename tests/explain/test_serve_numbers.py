"""Issue 22: the endpoint reads a declared body size strictly. ``"²".isdigit()`` is true and ``int("²")`` raises:
a Content-Length of ``²`` (one Latin-1 byte, which Starlette decodes as such) must be an ordinary answer, not a
ValueError. uvicorn's HTTP parser refuses such a header before the app sees it; the app does not rely on that.

The app is called as an ASGI application, as the server calls it; no model is needed before the body is read.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from core.common.workspace import Workspace
from core.explain.serve import build_app


def call(app, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> tuple[int, dict]:
    """POST /predict through the ASGI interface; the status and the JSON answer."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}  # fmt: skip
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.mark.parametrize("declared", ["²".encode("latin-1"), b"\xb9\xb2", b"-1", b"1_0"])
def test_an_odd_content_length_is_an_answer_in_words_not_a_server_error(ws: Workspace, declared: bytes) -> None:
    app = build_app(predictor=None, ws=ws)  # type: ignore[arg-type]  # never reached: the body is empty
    status, answer = call(app, [(b"content-type", b"image/png"), (b"content-length", declared)])
    assert status == 400 and "empty" in answer["error"]


def test_a_declared_size_over_the_limit_is_still_refused_before_reading(ws: Workspace) -> None:
    app = build_app(predictor=None, ws=ws, max_bytes=10)  # type: ignore[arg-type]
    status, answer = call(app, [(b"content-type", b"image/png"), (b"content-length", b"11")], b"x" * 11)
    assert status == 413 and "11 bytes" in answer["error"]
