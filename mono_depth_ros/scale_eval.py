"""Metric AbsRel with and without ground-plane scale on the KITTI validation frames.

``python -m mono_depth_ros.scale_eval [--backend torch] [--checkpoint C]`` prints a markdown
table: per frame, the metric AbsRel of the raw network depth, of the ground-plane-scaled depth,
the scale applied, the GT median scale (oracle, for reference) and the camera height fitted to
the annotated ground truth (a check of the plane fit itself, expected near 1.65 m).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from .config import BackendConfig, EvalConfig, ScaleConfig
from .kitti import find_raw_calib, read_depth_png, read_rgb
from .metrics import score_frame
from .scale import GroundPlaneScaler, fit_ground_plane
from .sample_frames import validation_frames


def evaluate(backend, scale_cfg: ScaleConfig | None = None) -> list[dict]:
    """One row per validation frame plus a 'mean' row (frames scored independently, no EMA)."""
    cfg = scale_cfg or ScaleConfig(mode="ground_plane")
    cfg = dataclasses.replace(cfg, mode="ground_plane", smoothing=1.0)
    rows = []
    for f in validation_frames():
        K = find_raw_calib(f.drive_dir).K
        gt = read_depth_png(f.gt)
        depth = backend.infer(read_rgb(f.image)).fine
        scaler = GroundPlaneScaler(cfg)  # fresh per frame: the frames are seconds apart
        s = scaler.update(depth, K)
        gt_fit = fit_ground_plane(gt, K, cfg)
        raw = score_frame(depth, gt, EvalConfig())
        scaled = score_frame(depth * np.float32(s), gt, EvalConfig())
        rows.append({"frame": f"0001/{f.frame}", "abs_rel_none": raw.metric["abs_rel"],
                     "abs_rel_ground_plane": scaled.metric["abs_rel"],
                     "abs_rel_median_oracle": raw.scaled["abs_rel"], "scale": s,
                     "fit_ok": scaler.last_fit is not None, "oracle_scale": raw.scale,
                     "gt_camera_height": gt_fit.distance if gt_fit else float("nan")})
    keys = [k for k in rows[0] if k not in ("frame", "fit_ok")]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    rows.append({"frame": "mean", "fit_ok": all(r["fit_ok"] for r in rows), **mean})
    return rows


def to_markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    head = ("| frame | metric AbsRel, no scaling | metric AbsRel, ground_plane | scale applied "
            "| plane found | GT median scale (oracle) | AbsRel median-scaled (oracle) "
            "| camera height fitted to GT (m) |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['frame']} | {r['abs_rel_none']:.3f} | {r['abs_rel_ground_plane']:.3f} "
                     f"| {r['scale']:.3f} | {'yes' if r['fit_ok'] else 'no'} "
                     f"| {r['oracle_scale']:.3f} | {r['abs_rel_median_oracle']:.3f} "
                     f"| {r['gt_camera_height']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="torch",
                    choices=("auto", "tensorrt", "onnxruntime", "torch"))
    ap.add_argument("--checkpoint", default="", help="checkpoint (default: shipped model)")
    ap.add_argument("--camera-height", type=float, default=1.65)
    args = ap.parse_args(argv)
    from .backends.base import BackendUnavailable
    from .backends.factory import create_backend
    from .model_io import ModelLoadError

    try:
        backend = create_backend(BackendConfig(backend=args.backend, checkpoint=args.checkpoint,
                                               device="cpu"))
        rows = evaluate(backend, ScaleConfig(mode="ground_plane",
                                             camera_height=args.camera_height))
    except (BackendUnavailable, ModelLoadError, OSError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"backend: {backend.describe()}\n")
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
