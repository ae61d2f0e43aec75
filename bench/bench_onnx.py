"""Benchmark: batch-1 latency of an exported model in ONNX Runtime against the same network in PyTorch (issue 26).

    .venv/bin/python -m bench.bench_onnx [--repeats 3] [--calls 30] [--threads 2] [--sides 112,224]
                                         [--models resnet18,mobilenet_v3_small]

For each model (the studio's own build, 10 classes, random weights, eval mode) and input side: PyTorch is
``model(x)`` under ``torch.inference_mode()`` (the studio's classify path, softmax included); ONNX Runtime runs the
file ``core.export.graph.write_onnx`` writes (probabilities only: no "not sure" banks, no block output) on the CPU
provider with ``--threads`` intra-op threads. Each repeat times ``--calls`` calls of one and then of the other,
interleaved (torch, ort, torch, ort, ...), after 5 untimed calls each; the medians per call and their ratio
(ort/torch, under 1: ONNX Runtime is faster) are printed per repeat and overall. Outputs are compared
(max abs difference of the probabilities).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_scan import load_average
from core.export.graph import Exported, run_onnx, write_onnx
from core.train.familiar import last_linear
from core.train.models import build_model


def per_call_ms(call, x, calls: int) -> float:
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def measure(arch: str, side: int, args: argparse.Namespace, folder: Path) -> dict:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(arch, 10).eval()
    # Random heads answer ~uniformly (every probability ~0.1): widen the last layer so the outputs compared differ.
    torch.nn.init.normal_(last_linear(model).weight, std=1.0)
    module = Exported(model, None, None)
    x = torch.randn(1, 3, side, side)
    path = write_onnx(module, x, folder / f"{arch}-{side}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = x.numpy()

    def torch_call(t: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model(t).softmax(dim=1).numpy()

    def ort_call(_: torch.Tensor) -> np.ndarray:
        return session.run(None, {"image": feed})[0]

    diff = float(np.abs(torch_call(x) - run_onnx(path, feed)["probabilities"]).max())
    for _ in range(5):
        torch_call(x), ort_call(x)
    rows = []
    for _ in range(args.repeats):
        t_ms, o_ms = per_call_ms(torch_call, x, args.calls), per_call_ms(ort_call, x, args.calls)
        rows.append((t_ms, o_ms))
    return {"arch": arch, "side": side, "repeats": rows, "diff": diff}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_onnx", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", default="112,224")
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s); load average before {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.models.split(","):
            for side in (int(s) for s in args.sides.split(",")):
                r = measure(arch, side, args, Path(tmp))
                ratios = [o / t for t, o in r["repeats"]]
                each = ", ".join(f"{t:.1f}/{o:.1f} ms" for t, o in r["repeats"])
                print(f"{arch} {side} px: torch/ort per call {each}; ort/torch {statistics.median(ratios):.2f} "
                      f"(repeats {', '.join(f'{x:.2f}' for x in ratios)}); max |dp| {r['diff']:.1e}")  # fmt: skip
    print(f"load average after {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
