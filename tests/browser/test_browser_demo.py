"""Issue 26's demo page in headless Chromium: a ResNet-18 run exported with ``export_run(..., demo=True)``, its
``index.html`` opened from ``file://`` with every network request refused, the golden images dropped on it.

Done when: the page's top-1 equals the studio's on at least 19 of 20 golden images with probabilities within 0.02
(each disagreement named), and its heat map correlates >= 0.99 with the studio's Grad-CAM of the same block, at the
map's own resolution. Also: the same page from a static server, labels that stay text, the webcam in words.
The times (model load, one photo) are printed, never asserted.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from core.common.workspace import Workspace
from tests.conftest import CHROMIUM
from tests.imagefactory import write_rgb
from tests.support import TrainedRun, train_to_the_end, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NASTY = "<img src=x onerror=alert(1)>"  # a class name: the page must show it as text
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), NASTY: (150, 40, 170)}
SIDE = 160  # layer4's map is 5 x 5 cells at 160 px: enough cells for a correlation to mean something
TOP1_AT_LEAST = 19
P_TOLERANCE = 0.02
CORRELATION = 0.99
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-component-update", "--no-first-run"]  # fmt: skip


@dataclass
class Export:
    run: TrainedRun
    folder: Path
    golden: list[dict]


@dataclass
class Answers:
    """What the page showed for the golden images, read from its elements and from ``window.studioDemo``."""

    cards: dict[str, dict]  # file name -> top-1 label and p as shown, and the not-sure line
    results: dict[str, dict]  # file name -> studioDemo.results entry (top-5, raw class map)
    load_ms: float
    status: str
    outside: list[str] = field(default_factory=list)  # requests that were not file:// (all refused)
    dialogs: list[str] = field(default_factory=list)  # an alert() here would be a label run as markup
    images_in_results: int = 0


def write_colours(root: Path) -> Path:
    """Four colour classes, one named like markup; PNGs (landscape and portrait) and bigger JPEGs, which the studio
    decodes at half scale (Pillow's draft) and the page reduces the same way."""
    for label, colour in COLOURS.items():
        for i in range(34):
            size, ext = ((480, 360), "jpg") if i % 2 else ((200, 150) if i % 4 == 0 else (150, 210), "png")
            write_rgb(root / label / f"{i}.{ext}", size=size, color=colour, seed=i)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Export:
    from core.export.demo import RUNTIME_DIST, RUNTIME_FILES
    from core.export.folder import export_run
    from core.export.golden import read_golden
    from core.store.runs import RunStore

    if not all((RUNTIME_DIST / name).is_file() for name in RUNTIME_FILES):
        why = "onnxruntime-web is not installed: ./studio test runs npm ci --prefix web"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    base = tmp_path_factory.mktemp("demo")
    ws = Workspace.open(base / "ws")
    data = write_colours(ws.datasets / "colours")
    run = train_to_the_end(ws, dataset=str(data), arch="resnet18", epochs=2, image_size=SIDE, batch_size=16)
    result = export_run(ws, RunStore(ws.runs_db), run.run_id, fmt="onnx", out=base / "export", demo=True)
    return Export(run, result.folder, read_golden(result.folder)["images"])


@pytest.fixture(scope="module")
def answers(browser, exported: Export) -> Iterator[Answers]:
    """The page opened from the disk, every golden image dropped on it at once."""
    context = browser.new_context()
    outside: list[str] = []
    dialogs: list[str] = []

    def only_files(route) -> None:
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", only_files)
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto((exported.folder / "index.html").as_uri())
    status = _ready(page)
    files = [exported.folder / g["file"] for g in exported.golden]
    page.set_input_files("[data-testid=file-input]", [str(f) for f in files])
    page.locator("[data-testid=result], [data-testid=problem]").nth(len(files) - 1).wait_for(timeout=180_000)
    cards = {}
    for card in page.locator("[data-testid=result]").all():
        first = card.locator("[data-testid=top] li").first
        cards[card.get_attribute("data-file")] = {
            "label": card.locator("[data-testid=top1-label]").text_content(),
            "p": float(first.get_attribute("data-p")),
            "shown": card.locator("[data-testid=top1-p]").text_content().strip(),
            "not_sure": card.locator("[data-testid=not-sure]").all_text_contents(),
        }
    results = {r["name"]: r for r in page.evaluate("window.studioDemo.results")}
    load_ms = page.evaluate("window.studioDemo.loadMs")
    found = Answers(cards, results, load_ms, status, outside, dialogs, page.locator("#results img").count())
    times = sorted(r["ms"] for r in results.values())
    print(f"\ndemo page from file://: model loaded in {load_ms / 1000:.2f} s; one photo in {times[len(times) // 2]:.0f} "
          f"ms (median of {len(times)}, {times[0]:.0f}-{times[-1]:.0f})")  # fmt: skip
    yield found
    context.close()


def _ready(page) -> str:
    page.wait_for_selector("[data-testid=status]:not([data-state=loading])", timeout=120_000)
    status = page.locator("[data-testid=status]")
    assert status.get_attribute("data-state") == "ready", status.text_content()
    return status.text_content()


# A DataTransfer holding one file made of base64 bytes: what a drop from the file manager hands the page.
DROPPED = """([b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name));
  return transfer;
}"""


def test_the_page_from_the_disk_answers_like_the_studio(exported: Export, answers: Answers) -> None:
    assert not answers.outside, f"the page asked for {answers.outside}"
    assert len(answers.cards) == len(exported.golden), f"cards for {sorted(answers.cards)}"
    agree, disagreements, far = 0, [], []
    for g in exported.golden:
        studio, page = g["top"][0], answers.cards[Path(g["file"]).name]
        same = page["label"] == studio["label"]
        agree += same
        gap = abs(page["p"] - studio["p"])
        if not same or gap > P_TOLERANCE:
            line = f"{g['file']}: the studio says {studio['label']!r} {studio['p']:.4f}, the page {page['label']!r} {page['p']:.4f}"
            disagreements.append(line)
            if same:
                far.append(line)
        assert not page["shown"].startswith("100") or page["p"] == 1.0, page  # 100% only when it is exactly 1
    report = "\n".join(disagreements) or "none"
    print(f"\ndisagreements with golden.json: {report}")
    assert agree >= len(exported.golden) - (20 - TOP1_AT_LEAST) and not far, report


def test_not_sure_lines_follow_the_studio(exported: Export, answers: Answers) -> None:
    """The "not sure" line where the studio was not sure (an image near the line may differ: named)."""
    differ = [
        g["file"] for g in exported.golden if bool(answers.cards[Path(g["file"]).name]["not_sure"]) != g["not_sure"]
    ]
    print(f"\nnot-sure verdicts that differ: {differ or 'none'}")
    assert len(differ) <= len(exported.golden) - TOP1_AT_LEAST, differ
    for card in answers.cards.values():
        for line in card["not_sure"]:
            assert line.startswith("Not sure: ") and ("not like the photos" in line or "best guess has only" in line)


def test_labels_stay_text(answers: Answers) -> None:
    shown = [card["label"] for card in answers.cards.values()]
    assert NASTY in shown  # shown as the very characters, so not run as markup
    assert answers.images_in_results == 0 and not answers.dialogs


def test_the_heat_map_is_grad_cam_of_the_block(exported: Export, answers: Answers) -> None:
    """The page's raw class map against the studio's Grad-CAM of the same block (head.json's ``block``) for the
    same class, both at the block's own resolution (before any upsampling)."""
    from core.common.jsonfile import read_json
    from core.explain.cam import explain, inference_copy
    from core.explain.predict import load_run_predictor
    from core.store.runs import RunStore

    head = read_json(exported.folder / "head.json", "head.json", expect=dict, max_bytes=2**28)
    ws = exported.run.ws
    predictor = load_run_predictor(ws, RunStore(ws.runs_db), exported.run.run_id, device="cpu")
    model = inference_copy(predictor.inference.model)
    block = model.get_submodule(head["block"])
    labels = predictor.classes
    correlations, skipped = {}, []
    for g in exported.golden:
        result = answers.results[Path(g["file"]).name]
        h, w = result["mapSize"]
        page_map = np.asarray(result["map"], dtype=np.float64).reshape(h, w)
        batch = predictor.inference.preprocess([predictor.open(exported.folder / g["file"])])
        cam = explain(model, batch, target_layer=block, target_class=labels.index(result["top"][0]["label"]),
                      out_size=(h, w))  # fmt: skip
        if not cam.has_evidence or page_map.max() <= 0 or np.ptp(page_map) == 0:
            skipped.append(g["file"])  # nothing for the class anywhere: no map to compare
            continue
        correlations[g["file"]] = float(np.corrcoef(page_map.ravel(), cam.heatmap.ravel())[0, 1])
    worst = min(correlations.values())
    print(f"\nclass maps ({h} x {w} cells of {head['block']}) against the studio's Grad-CAM: lowest correlation "
          f"{worst:.5f} over {len(correlations)} images; skipped (no evidence): {skipped or 'none'}")  # fmt: skip
    assert (h, w) == (head["map_side"], head["map_side"]) and len(correlations) >= len(exported.golden) // 2
    low = {f: round(c, 4) for f, c in correlations.items() if c < CORRELATION}
    assert not low, f"correlation under {CORRELATION}: {low}"


def test_a_static_server_serves_the_same_page(browser, exported: Export) -> None:
    """From http://, the page reads model.onnx itself (not its larger base64 copy) and answers the same."""
    handler = functools.partial(_QuietHandler, directory=str(exported.folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    context = browser.new_context()
    asked: list[str] = []

    def only_the_server(route) -> None:
        asked.append(route.request.url)
        route.continue_() if route.request.url.startswith((origin, "blob:")) else route.abort()

    try:
        context.route("**/*", only_the_server)
        page = context.new_page()
        page.goto(origin + "index.html")
        _ready(page)
        picked = exported.golden[:2]
        page.set_input_files("[data-testid=file-input]", [str(exported.folder / g["file"]) for g in picked])
        page.locator("[data-testid=result]").nth(len(picked) - 1).wait_for(timeout=60_000)
        shown = {r["name"]: r["top"][0] for r in page.evaluate("window.studioDemo.results")}
    finally:
        context.close()
        server.shutdown()
        server.server_close()
    assert origin + "model.onnx" in asked and origin + "model.js" not in asked, asked
    assert all(u.startswith(origin) for u in asked), asked
    for g in picked:
        page_top, studio_top = shown[Path(g["file"]).name], g["top"][0]
        assert page_top["label"] == studio_top["label"] and abs(page_top["p"] - studio_top["p"]) <= P_TOLERANCE, g


def test_a_drop_and_the_webcam(browser, exported: Export) -> None:
    """A photo dropped anywhere on the page is classified; without a camera the page says so in words; with
    Chromium's fake camera a photo taken from it is classified."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto((exported.folder / "index.html").as_uri())
        _ready(page)
        g = exported.golden[0]
        payload = base64.b64encode((exported.folder / g["file"]).read_bytes()).decode("ascii")
        dropped = page.evaluate_handle(DROPPED, [payload, "dropped photo"])
        page.dispatch_event("h1", "drop", {"dataTransfer": dropped})
        card = page.locator("[data-testid=result][data-file='dropped photo']")
        card.wait_for(timeout=30_000)
        assert card.locator("[data-testid=top1-label]").text_content() == g["top"][0]["label"]
        page.click("[data-testid=webcam]")
        words = page.locator("[data-testid=camera-words]")
        words.filter(has_text="webcam").wait_for(timeout=10_000)
        assert "webcam" in words.text_content().lower()
    finally:
        context.close()

    fake = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    camera_browser = browser.browser_type.launch(executable_path=CHROMIUM, args=ARGS + fake)
    try:
        page = camera_browser.new_context(permissions=["camera"]).new_page()
        page.goto((exported.folder / "index.html").as_uri())
        _ready(page)
        page.click("[data-testid=webcam]")
        # Polled from here: the page's content policy forbids the eval that wait_for_function would need.
        wait_until(lambda: page.evaluate("document.getElementById('video').videoWidth") > 0, timeout=15,
                   what="the fake camera's first frame")  # fmt: skip
        page.click("#snap")
        card = page.locator("[data-testid=result]").first
        card.wait_for(timeout=30_000)
        assert card.get_attribute("data-file") == "Webcam photo 1"
        assert card.locator("[data-testid=top1-label]").text_content() in COLOURS
    finally:
        camera_browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass
