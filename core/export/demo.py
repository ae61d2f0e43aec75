"""The demo page of an export folder: ``index.html`` that classifies photos in a browser, with no Python and no
network, opened by a double click (``file://``) or from any static server.

Why so many ``.js`` files. Chromium refuses ``fetch()`` and module imports of ``file://`` addresses, so the page
cannot read ``model.onnx`` nor let onnxruntime-web load its ``.wasm``/``.mjs`` files the usual way. Classic
``<script src>`` files are allowed, so everything the page needs travels as one: ``model.js`` (the model's bytes
as base64), ``ort-runtime.js`` (the runtime's glue module as text, imported from a ``blob:`` URL, and its
WebAssembly gzip-compressed then base64: 15 MB become 5 MB; the browser's ``DecompressionStream`` unpacks it),
``demo-data.js`` (labels, preprocessing, the head's weights for the heat map, the "not sure" threshold) and
``ort.wasm.min.js`` (the runtime's WebAssembly-only build, 54 kB). The runtime is single-threaded: a page opened
from the disk is not cross-origin isolated, so WebAssembly threads are not allowed there.

The runtime is never a copy kept in this repository: ``web/package.json`` pins onnxruntime-web and
``web/package-lock.json`` carries its integrity hash; ``./studio`` runs ``npm ci --prefix web``. Its files are
copied from ``web/node_modules/onnxruntime-web/dist/`` at export time.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

from core.common.atomic import write_atomic
from core.common.errors import CoreError
from core.common.jsonfile import JsonFileError, read_json

ROOT = Path(__file__).resolve().parents[2]  # the repository: core/export/demo.py -> core/export -> core -> root
WEB = ROOT / "web"
# onnxruntime-web 1.31.1, pinned exactly in web/package.json: the newest release when the demo was written, and
# the one the browser test proves from file:// (its WebAssembly build takes the binary as env.wasm.wasmBinary and
# the glue module from env.wasm.wasmPaths.mjs, which a blob: URL can be). Change the pin there, not here.
RUNTIME_DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
PAGE = Path(__file__).with_name("demo_page.html")

LOADER = "ort.wasm.min.js"  # the classic-script build with the WebAssembly backend only
GLUE = "ort-wasm-simd-threaded.mjs"  # Emscripten's glue; the same build runs with one thread
WASM = "ort-wasm-simd-threaded.wasm"
RUNTIME_FILES = (LOADER, GLUE, WASM)

DEFAULT_UNSURE_P = 0.5  # core.train.familiar.MAX_UNSURE_P: the studio's rule for a run without its own checks
HEAD_MAX_BYTES = 512 * 2**20  # head.json of a 2,048-channel network with 1,000 classes is ~40 MB of text

INSTALL_WORDS = (
    "run `npm ci --prefix web --no-audit --no-fund` in {root} (./studio run, test and cli do it by themselves "
    "when npm is installed; npm comes with Node.js: `apt-get install npm`, or https://nodejs.org)"
)


class DemoError(CoreError):
    """The demo page cannot be written: its runtime is not installed, or the export folder lacks what it needs."""


def write_demo(folder: Path, *, runtime: Path = RUNTIME_DIST) -> list[Path]:
    """Turn an export folder into a demo: ``index.html`` plus the scripts it loads, beside ``model.onnx``.

    Args:
        folder: An export folder holding ``model.onnx``, ``labels.json``, ``preprocess.json`` and, when the
            network allows a heat map, ``head.json`` (``not_sure.json`` is optional).
        runtime: onnxruntime-web's ``dist`` folder (the one installed by ``npm ci --prefix web``).

    Returns:
        The files written, in the folder.

    Raises:
        DemoError: onnxruntime-web is not installed (the message says what to run), or a file of the folder is
            missing or not what the export writes.
    """
    folder = Path(folder)
    files = _runtime_files(Path(runtime))
    model = folder / "model.onnx"
    if not model.is_file():
        raise DemoError(f"{folder} holds no model.onnx: export the run as ONNX first")
    settings = demo_settings(folder)
    outputs = {
        "index.html": PAGE.read_bytes(),
        "demo-data.js": _script("studioDemoData", settings),
        "model.js": _base64_script("studioModel", model.read_bytes()),
        LOADER: _without_source_map(files[LOADER].read_bytes()),
        "ort-runtime.js": _runtime_script(files[GLUE].read_text(encoding="utf-8"), files[WASM].read_bytes()),
    }
    written = []
    for name, content in outputs.items():
        write_atomic(folder / name, content)
        (folder / name).chmod(0o644)  # the temporary file's 0600 would hide the page from a web server's user
        written.append(folder / name)
    return written


def pinned_version() -> str:
    """The onnxruntime-web version ``web/package.json`` pins."""
    return str(_read(WEB / "package.json", "web/package.json", dict)["dependencies"]["onnxruntime-web"])


def demo_settings(folder: Path) -> dict[str, Any]:
    """What the page needs besides the model, read from the export folder and checked: labels, preprocessing,
    the head (weights as little-endian float32, base64) or None, and the "not sure" rule."""
    labels = _read(folder / "labels.json", "labels.json", list)
    if not labels or not all(isinstance(label, str) for label in labels):
        raise DemoError("labels.json must be a list of class names (texts)")
    pre = _read(folder / "preprocess.json", "preprocess.json", dict)
    try:
        side, channels = int(pre["side"]), int(pre["channels"])
        mean, std = [float(v) for v in pre["mean"]], [float(v) for v in pre["std"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DemoError(f"preprocess.json lacks a usable side, channels, mean or std ({exc})") from None
    if side < 1 or channels not in (1, 3) or len(mean) != channels or len(std) != channels or 0.0 in std:
        raise DemoError(f"preprocess.json: side {side}, channels {channels}, mean {mean}, std {std} do not fit")
    not_sure = _read(folder / "not_sure.json", "not_sure.json", dict) if (folder / "not_sure.json").is_file() else {}
    return {
        "labels": labels,
        "preprocess": {"side": side, "channels": channels, "mean": mean, "std": std},
        "head": _head(folder / "head.json", len(labels)),
        "notSure": {
            "unsure_p": float(not_sure.get("unsure_p", DEFAULT_UNSURE_P)),
            "unlike_words": str(not_sure.get("unlike_words", "not like the photos this model learned from")),
        },
    }


def _head(path: Path, n_classes: int) -> dict[str, Any] | None:
    """head.json for the page: the class map is relu(weights[k] . block), so the bias is not needed."""
    if not path.is_file():
        return None
    head = _read(path, "head.json", dict, max_bytes=HEAD_MAX_BYTES)
    weights = head.get("weights")
    if not isinstance(weights, list) or len(weights) != n_classes or not weights or not isinstance(weights[0], list):
        raise DemoError(f"head.json: weights must be {n_classes} rows (one per class) of the block's channels")
    channels = len(weights[0])
    if channels == 0 or any(not isinstance(row, list) or len(row) != channels for row in weights):
        raise DemoError("head.json: every row of weights must have one number per channel of the block")
    import numpy as np  # here: only a folder with a heat map needs it

    packed = np.asarray(weights, dtype="<f4")  # little-endian float32: what a browser's Float32Array reads
    return {
        "block": str(head.get("block", "")),
        "block_words": str(head.get("block_words", "the last convolutional block")),
        "map_side": head.get("map_side"),
        "channels": channels,
        "weights": base64.b64encode(packed.tobytes()).decode("ascii"),
    }


def _runtime_files(dist: Path) -> dict[str, Path]:
    missing = [name for name in RUNTIME_FILES if not (dist / name).is_file()]
    if missing:
        raise DemoError(
            f"the demo page needs onnxruntime-web, which is not installed ({dist} lacks {', '.join(missing)}): "
            + INSTALL_WORDS.format(root=ROOT)
        )
    installed = _installed_version(dist.parent / "package.json")
    pinned = pinned_version()
    if installed is not None and installed != pinned:
        raise DemoError(
            f"onnxruntime-web {installed} is installed but web/package.json asks for {pinned}: "
            + INSTALL_WORDS.format(root=ROOT)
        )
    return {name: dist / name for name in RUNTIME_FILES}


def _installed_version(package_json: Path) -> str | None:
    if not package_json.is_file():
        return None
    version = _read(package_json, "onnxruntime-web's package.json", dict).get("version")
    return str(version) if version is not None else None


def _read(path: Path, what: str, expect: type, **limits: int) -> Any:
    if not path.is_file():
        raise DemoError(f"{path.parent} holds no {path.name}: export the run again")
    try:
        return read_json(path, what, expect=expect, **limits)
    except JsonFileError as exc:
        raise DemoError(str(exc)) from None


def _script(name: str, value: object) -> bytes:
    """``window.<name> = <value>;`` with every ``<``, ``>`` and ``&`` escaped: a label such as ``</script>`` stays
    text even if the script is ever inlined into a page (JSON has these characters only inside strings)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"window.{name} = {text};\n".encode("ascii")


def _base64_script(name: str, payload: bytes) -> bytes:
    return b"window." + name.encode("ascii") + b' = "' + base64.b64encode(payload) + b'";\n'


def _runtime_script(glue: str, wasm: bytes) -> bytes:
    # mtime=0: the same runtime gives the same bytes, so two exports of one run are identical files.
    packed = base64.b64encode(gzip.compress(wasm, compresslevel=9, mtime=0)).decode("ascii")
    header = f"/* onnxruntime-web {pinned_version()} (MIT License, Copyright (c) Microsoft Corporation): */\n"
    return (header + f'window.studioOrt = {{glue: {json.dumps(glue)}, wasm: "{packed}"}};\n').encode("utf-8")


def _without_source_map(script: bytes) -> bytes:
    """The loader without its last ``//# sourceMappingURL=`` line: the map is not copied, and a browser's
    developer tools would otherwise look for it."""
    lines = script.rstrip(b"\n").split(b"\n")
    if lines and lines[-1].startswith(b"//# sourceMappingURL="):
        lines.pop()
    return b"\n".join(lines) + b"\n"
