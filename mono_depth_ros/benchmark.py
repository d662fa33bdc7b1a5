"""Latency of every available backend at several input sizes on real KITTI frames.

``python -m mono_depth_ros.benchmark [--sizes 416x128,640x192,832x256] [--iters 30]`` exports a
temporary ONNX file per size from the same checkpoint (the network is fully convolutional), then
runs each (backend, size) in its own child process so that peak RSS is that backend's alone.
Timed: ``backend.infer`` on full-size KITTI frames, i.e. preprocessing, network and resizing the
depth back to 1242x375, plus, per stage, decoding the PNG file (p50 ms of decode, pre-process,
inference, post-process). ``onnxruntime-cpu-int8`` is the statically quantised model that
``precision: int8`` runs (built into the cache on first use, ``backends.ort_quant``). A
variant with ``+flip`` appended (``--backends onnxruntime-cpu,onnxruntime-cpu+flip``) runs
with flip averaging on (``flip_average``: two inferences a frame). Prints
one markdown table with p50/p99 latency, fps, the stage breakdown, peak RSS, speed-up over torch
eager, model GFLOP and the share of the machine's peak (default 157 GFLOP/s, the figure measured
on this project's 2-core CPU machine) the backend reaches.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CPU_PEAK_GFLOPS = 157.0


def _available() -> list[str]:
    """Backend variants that can run here, in AUTO order (reference torch-cpu always included)."""
    out = []
    try:
        import tensorrt  # noqa: F401
        import torch

        if torch.cuda.is_available():
            out.append("tensorrt-fp16")
    except ImportError:
        pass
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" in ort.get_available_providers():
        out.append("onnxruntime-cuda")
    if torch.cuda.is_available():
        out.append("torch-cuda")
    return out + ["onnxruntime-cpu", "onnxruntime-cpu-int8", "torch-cpu"]


def _make(variant: str, onnx_path: str, checkpoint: str, size: tuple[int, int], threads: int,
          cache_dir: str, calibration: str = ""):
    """Build one backend variant at ``size`` (h, w)."""
    if variant.endswith("+flip"):
        b = _make(variant[:-len("+flip")], onnx_path, checkpoint, size, threads, cache_dir,
                  calibration)
        b.flip_average = True
        return b
    if variant.startswith("torch"):
        from .backends.torch_backend import TorchBackend

        b = TorchBackend(checkpoint or None, "cuda" if variant == "torch-cuda" else "cpu", threads)
        b.model_config = dataclasses.replace(b.model_config, height=size[0], width=size[1])
        return b
    if variant.startswith("onnxruntime"):
        from .backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, "cuda" if "cuda" in variant else "cpu", threads)
    from .backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(onnx_path, cache_dir, variant.split("-")[1], allow_build=True,
                           calibration=calibration)


def run_one(variant: str, onnx_path: str, checkpoint: str, size: tuple[int, int], iters: int,
            warmup: int, threads: int, cache_dir: str, calibration: str = "") -> dict:
    """Time one backend in this process; returns latencies (ms), stages (ms) and peak RSS."""
    from .kitti import read_rgb
    from .sample_frames import all_frames
    from .timing import StageTimes

    paths = [f.image for f in all_frames()]
    images = [read_rgb(p) for p in paths]
    b = _make(variant, onnx_path, checkpoint, size, threads, cache_dir, calibration)
    for i in range(warmup):
        b.infer(images[i % len(images)])
    times = []
    stages = StageTimes()
    for i in range(iters):
        t0 = time.perf_counter()
        read_rgb(paths[i % len(paths)])  # the decode stage: PNG file -> RGB (not part of infer)
        t1 = time.perf_counter()
        b.infer(images[i % len(images)])
        times.append((time.perf_counter() - t1) * 1e3)
        stages.add("decode", t1 - t0)
        stages.update(b.last_timing)
    t = np.array(times)
    return {"variant": variant, "describe": b.describe(), "size": f"{size[1]}x{size[0]}",
            "precision": getattr(b, "precision", "fp32"),
            "p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
            "mean_ms": float(t.mean()), "stages": stages.summary(),
            "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """Peak RSS of this process image. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from
    the parent across fork+exec, which would charge every child with the parent's memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model_file(variant: str, onnx_path: Path, args) -> Path:
    """The file a variant runs: the INT8 model (quantised here, in the parent, so the child's
    peak RSS is inference alone; cached like engines) for onnxruntime int8, else the export."""
    variant = variant.removesuffix("+flip")
    if not (variant.startswith("onnxruntime") and variant.endswith("-int8")):
        return onnx_path
    from .backends.factory import cache_root
    from .backends.ort_quant import int8_model
    from .config import BackendConfig

    root = cache_root(BackendConfig(engine_cache_dir=args.engine_cache_dir))
    return int8_model(onnx_path, root, args.calibration)[0]


def _child(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "mono_depth_ros.benchmark", "--child", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        w, h = (int(v) for v in part.lower().split("x"))
        if w % 32 or h % 32:
            raise ValueError(f"size {part}: width and height must be multiples of 32")
        sizes.append((h, w))
    return sizes


def to_markdown(rows: list[dict], peak: float) -> str:
    """Rows as one markdown table (speed-up relative to torch-cpu at the same size)."""
    ref = {r["size"]: r["p50_ms"] for r in rows
           if r.get("variant") == "torch-cpu" and "p50_ms" in r}
    out = ["| backend | precision | input (WxH) | GFLOP | p50 ms | p99 ms | fps "
           "| decode / pre / inference / post ms (p50) | peak RSS MiB "
           "| speed-up vs torch eager | GFLOP/s (share of peak) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['variant']} | | {r['size']} | | failed: {r['error']} "
                       "| | | | | | |")
            continue
        gflops = r["gflop"] / (r["p50_ms"] / 1e3)
        share = f" ({gflops / peak:.0%})" if "cpu" in r["variant"] else ""
        speed = f"{ref[r['size']] / r['p50_ms']:.2f}x" if r["size"] in ref else "n/a"
        st = r.get("stages", {})
        parts = " / ".join(f"{st[k]['p50_ms']:.1f}" if k in st else "-"
                           for k in ("decode", "preprocess", "inference", "postprocess"))
        out.append(f"| {r['describe']} | {r.get('precision', 'fp32')} | {r['size']} | "
                   f"{r['gflop']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{1e3 / r['mean_ms']:.1f} | {parts} | {r['peak_rss_mib']:.0f} | "
                   f"{speed} | {gflops:.0f}{share} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="416x128,640x192,832x256", help="WxH list")
    ap.add_argument("--backends", default="", help="comma list (default: all available)")
    ap.add_argument("--checkpoint", default="", help="checkpoint (default: shipped model)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")
    ap.add_argument("--peak-gflops", type=float, default=CPU_PEAK_GFLOPS)
    ap.add_argument("--engine-cache-dir", default="", help="TensorRT engines and INT8 models")
    ap.add_argument("--calibration", default="", help="INT8 calibration frames (index.tsv or "
                    "image folder; empty = the KITTI sample frames), as the backend parameter")
    ap.add_argument("--child", nargs=5, metavar=("VARIANT", "ONNX", "H", "W", "ITERS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        v, onnx_path, h, w, iters = args.child
        res = run_one(v, onnx_path, args.checkpoint, (int(h), int(w)), int(iters), args.warmup,
                      args.threads, args.engine_cache_dir, args.calibration)
        print(json.dumps(res))
        return 0

    from .model_io import ModelLoadError, load_model
    from .networks import count_flops
    from .onnx_export import export_checkpoint

    try:
        sizes = _parse_sizes(args.sizes)
        model, _ = load_model(args.checkpoint or None)
    except (ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    variants = args.backends.split(",") if args.backends else _available()
    rows = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mono_depth_bench_") as tmp:
        for h, w in sizes:
            gflop = count_flops(model, h, w) / 1e9
            onnx_path = export_checkpoint(args.checkpoint or None, Path(tmp) / f"m_{w}x{h}.onnx",
                                          h, w)
            for v in variants:
                try:
                    model_file = _model_file(v, onnx_path, args)
                except Exception as exc:  # noqa: BLE001 - reported in the table, like a child
                    rows.append({"variant": v, "size": f"{w}x{h}",
                                 "error": str(exc).splitlines()[0]})
                    continue
                res = _child([v, str(model_file), str(h), str(w), str(args.iters)] +
                             (["--checkpoint", args.checkpoint] if args.checkpoint else []) +
                             ["--threads", str(args.threads), "--warmup", str(args.warmup)] +
                             (["--engine-cache-dir", args.engine_cache_dir]
                              if args.engine_cache_dir else []) +
                             (["--calibration", args.calibration] if args.calibration else []))
                res.setdefault("variant", v)
                res.setdefault("size", f"{w}x{h}")
                res["gflop"] = gflop * (2 if v.endswith("+flip") else 1)  # two passes
                rows.append(res)
                took = f"p50 {res['p50_ms']:.1f} ms" if "p50_ms" in res else res["error"]
                print(f"# {v} {w}x{h}: {took}", file=sys.stderr)
    end = os.getloadavg()
    print(f"cpu cores: {os.cpu_count()}, load average at start: "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at end: {end[0]:.2f}, iterations: "
          f"{args.iters}, threads: {args.threads or 'library default'}, int8 calibration: "
          f"{args.calibration or 'data/kitti_sample'}\n")
    print(to_markdown(rows, args.peak_gflops))
    print("\nStages: decode = PNG file -> RGB (outside infer); pre = resize + scale to the "
          "network input; post = network depth -> camera-size metres. Each row ran in its own "
          "process one after the other: on a shared machine compare rows of one run only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
