"""``python -m core serve``: a small HTTP endpoint, as the warehouse report had.

``POST /predict`` with image bytes (``Content-Type: image/jpeg`` or ``image/png``) or JSON ``{"path": ...}``
(a file inside the workspace or the allowed data roots) answers the ``predict`` object of that image.
Query parameters ``cam=METHOD`` and ``class=LABEL`` add a CAM (its heat map is not sent; ``cam_ms`` is).
Bad input gets a 4xx with ``{"error"}``: 400 unreadable image or bad JSON, 403 a path outside the workspace,
404 a missing file, 413 too large, 415 another content type. ``GET /health`` says which model answers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.common.errors import CoreError, ImageError, PathNotAllowedError
from core.common.workspace import Workspace
from core.explain.predict import Predictor

MAX_BODY_BYTES = 32 * 1024 * 1024  # a 32 MB photo is already a 50+ megapixel JPEG
IMAGE_TYPES = ("image/jpeg", "image/png")


def build_app(predictor: Predictor, ws: Workspace, *, max_bytes: int = MAX_BODY_BYTES) -> Starlette:
    """The endpoint's Starlette app (uvicorn serves it; tests may too)."""

    async def predict(request: Request) -> JSONResponse:
        try:
            source, name = await _source(request, ws, max_bytes)
            cam, target = request.query_params.get("cam"), request.query_params.get("class")
            # Inference is CPU work: off the event loop, so /health stays responsive meanwhile.
            pred = await asyncio.to_thread(predictor.run, source, name, cam=cam, target=target)
        except _HTTPError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except ImageError as exc:
            return JSONResponse({"error": ws.redact(exc.reason)}, status_code=400)
        except CoreError as exc:  # paths in messages are named relative to the workspace, as the client names them
            return JSONResponse({"error": ws.redact(str(exc))}, status_code=400)
        return JSONResponse(pred.to_json())

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": predictor.source, "classes": len(predictor.classes)})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)])


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _source(request: Request, ws: Workspace, max_bytes: int) -> tuple[Any, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _HTTPError(413, f"the body is {int(declared):,} bytes; the limit is {max_bytes:,}")
    body = await _read_limited(request, max_bytes)
    if kind in IMAGE_TYPES:
        if not body:
            raise _HTTPError(400, "the body is empty: send the image's bytes")
        return body, "upload"
    if kind == "application/json":
        path = _json_path(body, ws)
        return path, path.name
    raise _HTTPError(415, f"Content-Type {kind or '(none)'} is not accepted; send image/jpeg, image/png or "
                          "application/json with {\"path\": ...}")  # fmt: skip


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a lying or missing Content-Length cannot help
        size += len(chunk)
        if size > max_bytes:
            raise _HTTPError(413, f"the body is larger than the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_path(body: bytes, ws: Workspace) -> Path:
    try:
        doc = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise _HTTPError(400, "the body is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("path"), str) or not doc["path"]:
        raise _HTTPError(400, 'send JSON like {"path": "datasets/x/cat/1.jpg"}')
    try:
        path = ws.confine(doc["path"], "path")
    except PathNotAllowedError as exc:
        raise _HTTPError(403, str(exc)) from None
    if not path.is_file():
        raise _HTTPError(404, f"no such file: {ws.redact(doc['path'])}")
    return path


def serve(predictor: Predictor, ws: Workspace, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(build_app(predictor, ws), host=host, port=port, log_level="info")
