"""Do metres stay metres on other cameras? KITTI frames turned into other cameras, scored.

``python -m mono_depth_ros.camera_eval``: every frame is also cut and resized into other cameras
(centre crops = longer focal lengths for the same sensor, resizes = other resolutions, both),
with its intrinsics carried along, and run through the model with the camera's intrinsics (the
canonical-camera map of ``camera.py``) and without them (a plain resize to the network input,
what a model tied to one camera does). A camera keeps its metres when its ground-truth /
prediction scale stays within 10 % of the native camera's on the same pixels, and its metric
AbsRel is at most 10 % worse.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camera import Intrinsics
from .config import EvalConfig
from .kitti import KittiFormatError, read_rgb
from .kitti_index import ground_truth, intrinsics
from .metrics import score_frame

# name -> (resize factor, crop fraction of width, crop fraction of height), crop after resize
CAMERAS = {
    "native": (1.0, 1.0, 1.0),
    "crop 1/2": (1.0, 0.5, 0.5),
    "crop 0.7": (1.0, 0.7, 0.7),
    "crop 1/2 wide": (1.0, 0.5, 1.0),
    "resize 1/2": (0.5, 1.0, 1.0),
    "resize 1.5": (1.5, 1.0, 1.0),
    "resize 1/2 + crop 0.7": (0.5, 0.7, 0.7),
}
TOLERANCE = 0.10


@dataclass
class View:
    """One frame as another camera would have taken it."""

    rgb: np.ndarray
    gt: np.ndarray           # ground truth at the view's size (0 = none)
    camera: Intrinsics


def _resize_sparse(gt: np.ndarray, w: int, h: int) -> np.ndarray:
    """Sparse depth to another size: each point to one pixel, the nearest point wins."""
    v, u = np.nonzero(gt > 0)
    z = gt[v, u]
    tu = np.minimum(((u + 0.5) * w / gt.shape[1]).astype(np.int64), w - 1)
    tv = np.minimum(((v + 0.5) * h / gt.shape[0]).astype(np.int64), h - 1)
    out = np.zeros((h, w), np.float32)
    order = np.argsort(-z)
    out[tv[order], tu[order]] = z[order]
    return out


def make_view(rgb: np.ndarray, gt: np.ndarray, cam: Intrinsics, resize: float, crop_w: float,
              crop_h: float) -> View:
    """The frame resized by ``resize``, then centre-cropped to the given fractions."""
    import cv2

    h, w = gt.shape
    if resize != 1.0:
        w2, h2 = int(round(w * resize)), int(round(h * resize))
        interp = cv2.INTER_AREA if resize < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (w2, h2), interpolation=interp)
        gt = _resize_sparse(gt, w2, h2)
        cam = cam.resized(w2, h2)
        h, w = h2, w2
    cw, ch = int(round(w * crop_w)), int(round(h * crop_h))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return View(np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw]),
                np.ascontiguousarray(gt[y0:y0 + ch, x0:x0 + cw]), cam.cropped(x0, y0, cw, ch))


def native_on_view(pred: np.ndarray, resize: float, crop_w: float, crop_h: float) -> np.ndarray:
    """The native frame's prediction on the pixels of a view (same resize and crop), so a view
    is compared with the native camera on the same scene points."""
    import cv2

    h, w = pred.shape
    if resize != 1.0:
        w, h = int(round(w * resize)), int(round(h * resize))
        pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR)
    cw, ch = int(round(w * crop_w)), int(round(h * crop_h))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return pred[y0:y0 + ch, x0:x0 + cw]


def evaluate(backend, frames: list, cameras: dict | None = None, use_intrinsics=(True, False),
             progress: bool = False) -> list[dict]:
    """One row per (camera, with/without intrinsics): frame-mean scale (gt / prediction
    median), metric and median-scaled AbsRel, and the scale and metric AbsRel relative to the
    native camera's prediction scored on the same pixels."""
    from tqdm import tqdm

    cameras = cameras or CAMERAS
    cfg = EvalConfig(garg_crop=False)
    acc: dict[tuple[str, bool], list] = {(c, k): [] for c in cameras for k in use_intrinsics}
    for f in tqdm(frames, desc="camera eval", unit="frame", disable=not progress):
        rgb = read_rgb(f.rgb)
        gt, _ = ground_truth(f, rgb.shape[0], rgb.shape[1])
        cam = Intrinsics.from_matrix(intrinsics(f), rgb.shape[1], rgb.shape[0])
        native = backend.infer(rgb, camera=cam).fine
        for name, spec in cameras.items():
            view = make_view(rgb, gt, cam, *spec)
            ref = score_frame(native_on_view(native, *spec), view.gt, cfg)
            for known in use_intrinsics:
                pred = backend.infer(view.rgb, camera=view.camera if known else None).fine
                acc[(name, known)].append((score_frame(pred, view.gt, cfg), ref))
    rows = []
    for known in use_intrinsics:
        for name in cameras:
            scores = [a for a, _ in acc[(name, known)]]
            refs = [r for _, r in acc[(name, known)]]
            scale = float(np.mean([s.scale for s in scores]))
            metric = float(np.mean([s.metric["abs_rel"] for s in scores]))
            rows.append({"camera": name, "intrinsics": known, "frames": len(scores),
                         "scale": scale,
                         "scale_vs_native": scale / np.mean([r.scale for r in refs]),
                         "metric_abs_rel": metric,
                         "metric_vs_native": metric / np.mean([r.metric["abs_rel"]
                                                               for r in refs]),
                         "abs_rel": float(np.mean([s.scaled["abs_rel"] for s in scores]))})
    return rows


def keeps_metres(row: dict, tolerance: float = TOLERANCE) -> bool:
    """Scale within ``tolerance`` of the native camera's on the same pixels, and metric AbsRel
    at most ``tolerance`` worse."""
    return (abs(row["scale_vs_native"] - 1) <= tolerance
            and row["metric_vs_native"] <= 1 + tolerance)


def to_markdown(rows: list[dict]) -> str:
    out = ["| camera | intrinsics | frames | scale gt/pred | vs native | metric AbsRel | "
           "vs native | AbsRel (median-scaled) | keeps metres |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['camera']} | {'given' if r['intrinsics'] else 'none'} | {r['frames']} "
                   f"| {r['scale']:.3f} | {r['scale_vs_native']:.3f} | {r['metric_abs_rel']:.3f} "
                   f"| {r['metric_vs_native']:.3f} | {r['abs_rel']:.3f} | "
                   f"{'yes' if keeps_metres(r) else 'no'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from .backends.factory import add_backend_arguments, backend_from_arguments
    from .scale_eval import default_index_files, select_frames

    ap = argparse.ArgumentParser(prog="python -m mono_depth_ros.camera_eval",
                                 description=__doc__.splitlines()[0])
    add_backend_arguments(ap)
    ap.add_argument("--list", nargs="+", default=None,
                    help="index.tsv files (default: ../shared/kitti/not_for_training/index.tsv, "
                         "frames of drives the model never trained on)")
    ap.add_argument("--per-drive", type=int, default=4, help="at most this many frames per drive")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .backends.base import BackendUnavailable
    from .config import ConfigError
    from .model_io import ModelLoadError

    try:
        if args.list:
            lists = [Path(p) for p in args.list]
        else:
            lists = [p for p in default_index_files() if "not_for_training" in p.parts] \
                or default_index_files()
        frames = select_frames(lists, args.per_drive)
        backend = backend_from_arguments(args)
        rows = evaluate(backend, frames, progress=sys.stderr.isatty())
    except (BackendUnavailable, ConfigError, ModelLoadError, KittiFormatError, OSError,
            ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"model: {backend.describe()}; {len(frames)} frames of "
          f"{', '.join(str(p) for p in lists)}\n")
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
