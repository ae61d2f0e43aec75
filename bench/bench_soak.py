"""Soak: the endpoint under 200 requests 20 at once, and the dashboard under 50 page loads in Chromium.

    .venv/bin/python -m bench.bench_soak [--requests 200] [--concurrency 20] [--page-loads 50] [--workspace DIR]

In a fresh workspace (or ``--workspace``), one small LeNet run is trained on ``sample:digits`` (about a minute),
then:

* endpoint: ``python -m core serve --run RUN`` in its own process; ``--requests`` POSTs of a real image (half as
  bytes, half as ``{"path"}``), ``--concurrency`` at once. Prints the status counts, latency median / 95th
  percentile / max, and the server's resident memory before the first request and after the last;
* dashboard: ``streamlit run app.py``; after WARM_ROUNDS untimed rounds through every page (first visits import
  torch and fill the caches), ``--page-loads`` loads of its pages in turn by headless Chromium
  (``/usr/bin/chromium``), each waited for until Streamlit has drawn it. Prints load time median / max and the
  server's memory before any page, at the start of the timed loads and at their end.

A growth of memory over 50 MB from start to end is flagged MEMORY GROWTH. Nothing here is a pass/fail test of
time; a request answered 5xx or a page that does not draw stops with BROKEN RUN.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_scan import cpu_model, load_average
from bench.checks import check
from tests.app_server import free_port, running_app

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
PAGES = ["", "datasets", "duplicates", "train", "runs", "classify", "evaluate", "scaling"]
GROWTH_MB = 50
WARM_ROUNDS = 4  # untimed rounds through every page before the memory at the start is taken


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MB (VmRSS)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            for task in Path(f"/proc/{current}/task").glob("*/children"):
                todo += [int(c) for c in task.read_text().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def train_run(ws: Path) -> int:
    cmd = [sys.executable, "-m", "core", "train", "sample:digits", "--arch", "lenet", "--epochs", "2", "--json",
           "--workspace", str(ws)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    check(done.returncode == 0, f"training for the soak failed: {done.stderr[-500:]}")
    return json.loads(done.stdout)["run_id"]


def soak_endpoint(ws: Path, run_id: int, n: int, concurrency: int) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "core", "serve", "--run", str(run_id), "--port", str(port), "--workspace", str(ws)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _post(port, "GET", "/health", None, "")[0] == 200, 120)
        image = next((ws / "datasets" / "sample-digits").rglob("*.png"))
        relative = str(image.relative_to(ws))
        before = rss_mb(proc.pid)
        requests = [(image.read_bytes(), "image/png") if k % 2 else (json.dumps({"path": relative}).encode(),
                    "application/json") for k in range(n)]  # fmt: skip
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            answers = list(pool.map(lambda r: _timed_post(port, *r), requests))
        wall = time.perf_counter() - started
        after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    statuses = {s: sum(1 for a in answers if a[0] == s) for s in sorted({a[0] for a in answers})}
    check(all(s < 500 for s in statuses), f"5xx answers: {statuses}")
    ms = sorted(a[1] for a in answers)
    print(f"endpoint: {n} requests, {concurrency} at once, {wall:.1f} s ({n / wall:.0f}/s); statuses {statuses}")
    print(
        f"  latency ms: median {statistics.median(ms):.0f}, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f}, max {ms[-1]:.0f}"
    )
    _memory("  server memory", before, after)


def soak_pages(ws: Path, loads: int) -> None:
    from playwright.sync_api import sync_playwright

    with running_app(ws) as url, sync_playwright() as p:
        server = _streamlit_pid(url)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        cold = rss_mb(server)
        # Untimed rounds: first visits import what a page needs (torch: ~600 MB) and fill Streamlit's caches; measured
        # every 8 loads, memory rose for 3-4 rounds (573, 666, 745, 908 MB) and then stayed within +16 MB for 56 more.
        for k in range(WARM_ROUNDS * len(PAGES)):
            _load(page, f"{url}/{PAGES[k % len(PAGES)]}")
        before, times, trace = rss_mb(server), [], []
        for k in range(loads):
            times.append(_load(page, f"{url}/{PAGES[k % len(PAGES)]}"))
            if (k + 1) % len(PAGES) == 0:
                trace.append(f"{rss_mb(server):.0f}")
        after = rss_mb(server)
        browser.close()
    print(f"dashboard: {loads} page loads ({', '.join(p or 'home' for p in PAGES)} in turn) after {WARM_ROUNDS} untimed "
          "rounds")  # fmt: skip
    print(f"  load ms: median {statistics.median(times):.0f}, max {max(times):.0f}")
    print(f"  server memory before any page: {cold:.0f} MB (the warm-up's imports and caches are not growth)")
    print(f"  server memory after each round of {len(PAGES)} loads (MB): {', '.join(trace)}")
    _memory("  server memory", before, after)


def _load(page, address: str) -> float:
    """Milliseconds until Streamlit has drawn the page and stopped running its script."""
    began = time.perf_counter()
    page.goto(address)
    page.wait_for_selector("[data-testid='stMain']", timeout=60_000)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    return (time.perf_counter() - began) * 1000


def _streamlit_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", "--", f"--server.port {port}"], capture_output=True, text=True).stdout.split()
    check(bool(out), "the streamlit process was not found")
    return int(out[0])


def _memory(label: str, before: float, after: float) -> None:
    flag = "  ** MEMORY GROWTH **" if after - before > GROWTH_MB else ""
    print(f"{label}: {before:.0f} MB at the start, {after:.0f} MB at the end ({after - before:+.0f} MB){flag}")


def _post(port: int, method: str, path: str, body: bytes | None, kind: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": kind} if kind else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _timed_post(port: int, body: bytes, kind: str) -> tuple[int, float]:
    began = time.perf_counter()
    status, _ = _post(port, "POST", "/predict", body, kind)
    return status, (time.perf_counter() - began) * 1000


def _wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    check(False, "the server did not answer in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--page-loads", type=int, default=50)
    parser.add_argument("--workspace", type=Path, help="a workspace to use (default: a fresh temporary one)")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, CPU {cpu_model()}; load before {load_average()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        ws = (args.workspace or Path(tmp)).resolve()
        run_id = train_run(ws)
        soak_endpoint(ws, run_id, args.requests, args.concurrency)
        if args.page_loads:
            check(Path(CHROMIUM).exists(), f"{CHROMIUM} is needed for the page loads (or --page-loads 0)")
            soak_pages(ws, args.page_loads)
    print(f"load after {load_average()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
