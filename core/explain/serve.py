"""``python -m core serve``: a small HTTP endpoint, as the warehouse report had.

``POST /predict`` with image bytes (``Content-Type: image/jpeg`` or ``image/png``) or JSON ``{"path": ...}``
(a file inside the workspace or the allowed data roots) answers the ``predict`` object of that image.
Query parameters ``cam=METHOD`` and ``class=LABEL`` add a CAM (its heat map is not sent; ``cam_ms`` is).
Bad input gets a 4xx with ``{"error"}``: 400 unreadable image, bad JSON (or JSON nested too deeply), a path no
file system can hold; 403 a path outside the workspace; 404 a missing file; 408 a body that stalls; 413 too
large; 415 another content type; 503 when busy. ``GET /health`` says which model answers.

Limits (``ServeLimits``), so that neither a flood nor a slow client can exhaust the machine:

* bodies: at most ``max_bytes`` (an image) or ``max_json_bytes`` (a path request), counted as they arrive;
* work: at most ``max_in_flight`` requests read their body and classify at once; the next ones wait up to
  ``queue_wait_s`` for a slot, then get 503 (10 parallel 30 MB uploads once raised the server's memory by
  427 MB; now at most ``max_in_flight`` bodies are held);
* slow clients: a body must arrive within ``body_timeout_s`` (408); a connection whose request headers are
  not complete ``header_timeout_s`` after it opened (or after its previous answer) is closed (slowloris);
  an idle keep-alive connection is closed after ``keep_alive_s``; at most ``max_connections`` connections
  at once, more get 503 (``GET /health`` excepted: it never waits behind work or connections).
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.common.errors import CoreError, ImageError, PathNotAllowedError
from core.common.untrusted import whole_number
from core.common.workspace import Workspace
from core.explain.predict import Predictor

MAX_BODY_BYTES = 32 * 1024 * 1024  # a 32 MB photo is already a 50+ megapixel JPEG
IMAGE_TYPES = ("image/jpeg", "image/png")
NAME_MAX, PATH_MAX = 255, 4096  # bytes: what Linux file systems hold (a longer name is an OSError, not a file)


@dataclass(frozen=True)
class ServeLimits:
    """How much the endpoint accepts at once and how long it waits (see the module docstring)."""

    max_bytes: int = MAX_BODY_BYTES
    max_json_bytes: int = 64 * 1024  # {"path": ...} needs a few hundred bytes
    max_in_flight: int = 4  # requests reading a body or classifying at once (CPU inference gains nothing more)
    queue_wait_s: float = 30.0  # how long a request waits for a slot before 503
    body_timeout_s: float = 30.0  # the whole body must arrive within this (408 otherwise)
    header_timeout_s: float = 10.0  # request headers must be complete within this (the connection is closed)
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 64  # open connections at once; more get 503


def build_app(
    predictor: Predictor, ws: Workspace, *, max_bytes: int = MAX_BODY_BYTES, limits: ServeLimits | None = None
) -> Starlette:
    """The endpoint's Starlette app (uvicorn serves it; tests may too). ``max_bytes`` overrides ``limits``'."""
    limits = limits or ServeLimits(max_bytes=max_bytes)
    if max_bytes != MAX_BODY_BYTES:
        limits = ServeLimits(**{**limits.__dict__, "max_bytes": max_bytes})
    gate = asyncio.Semaphore(limits.max_in_flight)

    async def predict(request: Request) -> JSONResponse:
        try:
            async with _slot(gate, limits.queue_wait_s):
                source, name = await _timed(_source(request, ws, limits), limits.body_timeout_s)
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


@asynccontextmanager
async def _slot(gate: asyncio.Semaphore, wait_s: float):
    try:
        await asyncio.wait_for(gate.acquire(), wait_s)
    except TimeoutError:
        raise _HTTPError(503, f"the server is busy (no free slot within {wait_s:g} s); try again shortly") from None
    try:
        yield
    finally:
        gate.release()


async def _timed(work, seconds: float) -> Any:
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise _HTTPError(408, f"the request body did not arrive within {seconds:g} s") from None


async def _source(request: Request, ws: Workspace, limits: ServeLimits) -> tuple[Any, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in (*IMAGE_TYPES, "application/json"):
        raise _HTTPError(415, f"Content-Type {kind or '(none)'} is not accepted; send image/jpeg, image/png or "
                              "application/json with {\"path\": ...}")  # fmt: skip
    limit = min(limits.max_json_bytes, limits.max_bytes) if kind == "application/json" else limits.max_bytes
    declared = whole_number(request.headers.get("content-length"))  # "²" is no size: the read below counts
    if declared is not None and declared > limit:
        raise _HTTPError(413, f"the body is {declared:,} bytes; the limit is {limit:,}")
    body = await _read_limited(request, limit)
    if kind in IMAGE_TYPES:
        if not body:
            raise _HTTPError(400, "the body is empty: send the image's bytes")
        return body, "upload"
    path = _json_path(body, ws)
    return path, path.name


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
    except RecursionError:  # [[[[...]]]] 100,000 deep: Python's parser gives up
        raise _HTTPError(400, 'the JSON is nested too deeply; send {"path": ...}') from None
    if not isinstance(doc, dict) or not isinstance(doc.get("path"), str) or not doc["path"]:
        raise _HTTPError(400, 'send JSON like {"path": "datasets/x/cat/1.jpg"}')
    _check_path_length(doc["path"])
    try:
        path = ws.confine(doc["path"], "path")
        is_file = path.is_file()
    except PathNotAllowedError as exc:
        raise _HTTPError(403, str(exc)) from None
    except OSError as exc:  # what the file system refuses (a name it cannot hold...) is the client's to fix
        raise _HTTPError(400, f"the path cannot be opened ({exc.strerror or 'invalid'})") from None
    if not is_file:
        raise _HTTPError(404, f"no such file: {ws.redact(doc['path'])}")
    return path


def _check_path_length(text: str) -> None:
    """Refuse a path no Linux file system can hold before it reaches the OS (which raises OSError)."""
    raw = os.fsencode(text) if "\0" not in text else b""
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if len(raw) > PATH_MAX or longest > NAME_MAX:
        raise _HTTPError(400, f"the path is too long: names hold at most {NAME_MAX} bytes and paths {PATH_MAX}; "
                              f"this one has a {longest}-byte name and {len(raw)} bytes in all")  # fmt: skip


def serve_config(app: Starlette, *, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None,
                 log_level: str = "info") -> Any:  # fmt: skip
    """The uvicorn configuration ``serve`` runs with: the connection limits and the header timeout."""
    import uvicorn

    limits = limits or ServeLimits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                          limit_concurrency=limits.max_connections, timeout_keep_alive=limits.keep_alive_s,
                          h11_max_incomplete_event_size=16 * 1024,
                          http=_header_timeout_protocol(limits.header_timeout_s))  # fmt: skip


def _header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete in time.

    uvicorn times out idle keep-alive connections but not a request whose headers trickle in byte by byte
    (slowloris): a few hundred of those would hold every connection slot forever. It also applies the connection
    limit itself, so that ``GET /health`` answers however many connections are open.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn's own connection limit answers 503 to every path, /health included: 64 stalled sockets made
            # the health check fail for as long as they stalled. The same limit, applied here, spares /health.
            self.connection_limit, self.limit_concurrency = self.limit_concurrency, None
            self.app = _sparing_health(self.app, self)

        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection gets the same time for its headers

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(seconds, self._drop_if_headers_incomplete)

        def _drop_if_headers_incomplete(self) -> None:
            waiting = self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def serve(predictor: Predictor, ws: Workspace, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    limits = ServeLimits()
    uvicorn.Server(serve_config(build_app(predictor, ws, limits=limits), host=host, port=port, limits=limits)).run()


def _sparing_health(app: Any, protocol: Any) -> Any:
    """``app`` behind uvicorn's connection limit (read from ``protocol``), which ``GET /health`` bypasses."""

    async def limited(scope: dict, receive: Any, send: Any) -> None:
        limit = protocol.connection_limit
        # This request's connection and task are counted already (uvicorn checked before adding its task).
        over = limit is not None and (len(protocol.connections) >= limit or len(protocol.tasks) > limit)
        if over and scope.get("path") != "/health":
            busy = JSONResponse({"error": "the server has too many open connections; try again shortly"},
                                status_code=503)  # fmt: skip
            return await busy(scope, receive, send)
        return await app(scope, receive, send)

    return limited
