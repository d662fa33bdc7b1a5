"""INT8 vs FP32 (ONNX Runtime, CPU): AbsRel delta on validation frames and speed, one table.

    python -m mono_depth_ros.int8_eval [--onnx models/default/model.onnx] \
        [--list ../shared/kitti/index.tsv] [--calibration ''|INDEX.tsv|DIR] [--threads 2]

Validation frames: every frame of ``--list`` with ground truth (``kitti_index``, the runtime's
reader of index.tsv files), minus the calibration frames and minus any frame of the 28 Eigen test
drives; scored with
``mono_depth_ros.metrics`` (Garg crop, median-scaled and metric AbsRel), grouped by drive. The
INT8 model is the one ``precision: int8`` runs (``backends.ort_quant``, built into the cache on
first use). Speed: inference of the two sessions timed alternately, frame by frame, in this
process, so load from other processes weighs on both alike. Policy (issue 12): INT8 is
recommended only if the mean AbsRel delta is <= 0.005.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POLICY_MAX_DELTA = 0.005


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Sample:
    """One validation frame: its index row, RGB image and ground truth (metres, 0 = none)."""

    frame: object  # kitti_index.IndexFrame
    rgb: np.ndarray
    depth: np.ndarray


def validation_samples(list_path: str, exclude: set[str], limit: int = 0):
    """(samples, skipped) of ``list_path``: frames with ground truth, not calibration frames
    (``exclude``: sha256 of their image files, so a copy elsewhere is recognised too), not of an
    Eigen test drive (the built-in list plus the test-scene list next to an index.tsv)."""
    from .calibration import EIGEN_TEST_DRIVES, TEST_SCENES_REL
    from .kitti import read_rgb, read_test_scenes
    from .kitti_index import ground_truth, read_index

    frames = read_index(list_path)
    scenes_file = Path(list_path).parent / TEST_SCENES_REL
    scenes = set(EIGEN_TEST_DRIVES)
    if scenes_file.is_file():
        scenes |= read_test_scenes(scenes_file)

    def has_gt(f) -> bool:
        gts = (f.gt_png, f.velodyne, f.velodyne_raw_png, f.disparity_png)
        return any(p is not None for p in gts)

    keep = [f for f in frames if has_gt(f) and f.drive not in scenes
            and "not_for_training" not in f.rgb.parts and _digest(f.rgb) not in exclude]
    if limit:
        keep = keep[:: max(1, len(keep) // limit)][:limit]
    samples = []
    for f in keep:
        rgb = read_rgb(f.rgb)
        samples.append(Sample(f, rgb, ground_truth(f, *rgb.shape[:2])[0]))
    return samples, len(frames) - len(keep)


def score(backends: dict, samples) -> dict[str, list[dict]]:
    """Per backend and sample: drive, median-scaled and metric AbsRel of the fine depth."""
    from .config import EvalConfig
    from .metrics import score_frame

    out: dict[str, list[dict]] = {k: [] for k in backends}
    for s in samples:
        for name, b in backends.items():
            sc = score_frame(b.infer(s.rgb).fine, s.depth, EvalConfig())
            out[name].append({"frame": s.frame.frame_id, "drive": s.frame.drive or "unknown",
                              "abs_rel": sc.scaled["abs_rel"],
                              "metric_abs_rel": sc.metric["abs_rel"]})
    return out


def timing(backends: dict, images: list[np.ndarray], iters: int) -> dict[str, dict]:
    """Inference time (ms) of each backend, timed alternately frame by frame after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in backends}
    for b in backends.values():
        for img in images[:2]:
            b.infer(img)
    for i in range(iters):
        for name, b in backends.items():
            t = time.perf_counter()
            b.infer(images[i % len(images)])
            times[name].append(time.perf_counter() - t)
            times[name + ":inference"] = times.get(name + ":inference", [])
            times[name + ":inference"].append(b.last_timing["inference"])
    out = {}
    for name in backends:
        t, inf = np.array(times[name]) * 1e3, np.array(times[name + ":inference"]) * 1e3
        out[name] = {"infer_p50_ms": float(np.median(t)),
                     "inference_p50_ms": float(np.median(inf)),
                     "inference_p99_ms": float(np.percentile(inf, 99))}
    return out


def report(scores: dict[str, list[dict]], speed: dict[str, dict],
           n_skipped: int) -> tuple[str, dict]:
    """Markdown tables (per drive, overall, speed) and the summary dict."""
    fp, q = scores["fp32"], scores["int8"]
    drives = sorted({r["drive"] for r in fp})
    lines = ["| drive | frames | AbsRel fp32 | AbsRel int8 | delta | metric AbsRel fp32 | "
             "metric AbsRel int8 | delta |", "|---|---|---|---|---|---|---|---|"]
    per_drive = {}
    for d in drives:
        idx = [i for i, r in enumerate(fp) if r["drive"] == d]
        m = {k: float(np.mean([s[i][m_] for i in idx])) for k, s, m_ in (
            ("fp32", fp, "abs_rel"), ("int8", q, "abs_rel"),
            ("fp32_metric", fp, "metric_abs_rel"), ("int8_metric", q, "metric_abs_rel"))}
        per_drive[d] = {"frames": len(idx), **m}
        lines.append(f"| {d} | {len(idx)} | {m['fp32']:.4f} | {m['int8']:.4f} | "
                     f"{m['int8'] - m['fp32']:+.4f} | {m['fp32_metric']:.4f} | "
                     f"{m['int8_metric']:.4f} | {m['int8_metric'] - m['fp32_metric']:+.4f} |")
    frame_delta = float(np.mean([b["abs_rel"] - a["abs_rel"] for a, b in zip(fp, q)]))
    drive_delta = float(np.mean([v["int8"] - v["fp32"] for v in per_drive.values()]))
    metric_delta = float(np.mean([b["metric_abs_rel"] - a["metric_abs_rel"]
                                  for a, b in zip(fp, q)]))
    summary = {
        "frames": len(fp), "drives": len(drives), "skipped_frames": n_skipped,
        "abs_rel_fp32": float(np.mean([r["abs_rel"] for r in fp])),
        "abs_rel_int8": float(np.mean([r["abs_rel"] for r in q])),
        "delta_abs_rel_per_frame_mean": frame_delta, "delta_abs_rel_per_drive_mean": drive_delta,
        "delta_metric_abs_rel": metric_delta, "speed": speed, "per_drive": per_drive,
    }
    worst = max(frame_delta, drive_delta)
    summary["recommended"] = worst <= POLICY_MAX_DELTA
    sp = ["| precision | backend.infer p50 ms | inference p50 ms | inference p99 ms |",
          "|---|---|---|---|"]
    for name, v in speed.items():
        sp.append(f"| {name} | {v['infer_p50_ms']:.1f} | {v['inference_p50_ms']:.1f} | "
                  f"{v['inference_p99_ms']:.1f} |")
    ratio = speed["fp32"]["inference_p50_ms"] / speed["int8"]["inference_p50_ms"]
    text = "\n".join(lines) + (
        f"\n\n{len(fp)} frames of {len(drives)} drives ({n_skipped} rows skipped: no ground "
        f"truth, calibration frames, test drives). Median-scaled AbsRel fp32 "
        f"{summary['abs_rel_fp32']:.4f}, int8 {summary['abs_rel_int8']:.4f}; delta "
        f"{frame_delta:+.4f} (mean over frames), {drive_delta:+.4f} (mean over drives); metric "
        f"AbsRel delta {metric_delta:+.4f}.\n\n" + "\n".join(sp) +
        f"\n\nint8 inference speed-up {ratio:.2f}x. Policy: ship INT8 only if the AbsRel delta "
        f"<= {POLICY_MAX_DELTA}: {'met' if summary['recommended'] else 'NOT met'} "
        f"(worst of the two means {worst:+.4f}).")
    return text, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mono_depth_ros.int8_eval",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default="models/default/model.onnx")
    ap.add_argument("--list", default="../shared/kitti/index.tsv", help="validation frames")
    ap.add_argument("--calibration", default="", help="calibration source, as the backend's "
                    "'calibration' parameter (default: the KITTI sample frames, which "
                    "'precision: int8' uses unless told otherwise)")
    ap.add_argument("--cache-dir", default="", help="cache root (as engine_cache_dir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="at most this many validation frames")
    ap.add_argument("--iters", type=int, default=40, help="timed frames per precision")
    ap.add_argument("--json", default="", help="also write the summary here")
    args = ap.parse_args(argv)

    from .backends.factory import create_backend
    from .calibration import CalibrationError, calibration_frames
    from .config import BackendConfig
    from .kitti import KittiFormatError
    from .model_io import ModelLoadError

    try:
        common = dict(backend="onnxruntime", device="cpu", onnx=args.onnx, threads=args.threads,
                      engine_cache_dir=args.cache_dir, calibration=args.calibration)
        backends = {"fp32": create_backend(BackendConfig(precision="fp32", **common)),
                    "int8": create_backend(BackendConfig(precision="int8", **common))}
        calib = {_digest(p) for p in calibration_frames(args.calibration)}
        samples, skipped = validation_samples(args.list, calib, args.limit)
        if not samples:
            raise KittiFormatError(f"{args.list}: no validation frames with ground truth")
    except (CalibrationError, KittiFormatError, ModelLoadError, OSError, ValueError) as exc:
        print(f"int8_eval: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"fp32: {backends['fp32'].describe()}\nint8: {backends['int8'].describe()}\n"
          f"calibration: {len(calib)} frames of {args.calibration or 'data/kitti_sample'}\n")
    scores = score(backends, samples)
    speed = timing(backends, [s.rgb for s in samples[:8]], args.iters)
    text, summary = report(scores, speed, skipped)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "scores": scores}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
