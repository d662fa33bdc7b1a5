"""``evaluate_bag --bag B --out DIR [--model M --backend ...]``: Eigen metrics of the depth network
on a KITTI bag, offline (no DDS, no rclpy).

Reads the camera image, camera_info and LiDAR scan of each frame (ROS 2 bags from kitti_to_bag,
or ROS 1 bags from kitti2bag), runs the model, projects the scan with the same code as
``kitti_eval_node`` and scores with ``metrics.score_frame`` (the function ``training.evaluate``
uses). Writes ``metrics.json`` (abs_rel ... d3 median-scaled, metric_* without scaling, frames),
``metrics.csv``, ``error_vs_distance.csv`` and plots.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ..camera import Intrinsics
from ..config import BackendConfig, ConfigError, EvalNodeConfig, KittiTopicsConfig, \
    add_arguments, from_args, from_dict
from ..kitti import KittiFormatError
from ..lidar_eval import (EvalRecorder, calib_velo_to_cam, format_table, frame_to_camera,
                          lidar_depth)
from .reader import BagContents, BagError, read_eval_frames


def velo_to_camera(contents: BagContents, camera_frame: str, lidar_frame: str,
                   calib_dir: str = "", P: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The LiDAR -> camera-optical-frame extrinsic, and one line saying where it came from:
    ``calib_dir`` when given, else /tf_static to the camera_info's frame, plus P's offset when
    that frame is the reference camera (``lidar_eval.frame_to_camera``)."""
    if calib_dir:
        return calib_velo_to_cam(calib_dir), f"geometry: LiDAR -> camera 2 from {calib_dir}"
    T = contents.tf.lookup(camera_frame, lidar_frame)
    if T is None:
        raise BagError(f"no transform {lidar_frame} -> {camera_frame} in /tf_static; pass "
                       "--calib-dir with the drive's KITTI calibration folder")
    if P is None:
        return T, f"geometry: /tf_static {lidar_frame} -> {camera_frame}"
    C, why = frame_to_camera(P, camera_frame, contents.tf)
    return C @ T, f"geometry: /tf_static {lidar_frame} -> {why}"


def make_backend(cfg: BackendConfig):
    """The depth backend from ``backends.factory``, so that auto picks what the depth node picks."""
    from ..backends.factory import create_backend

    return create_backend(cfg)


def evaluate(bag: str | Path, out_dir: str | Path, backend_cfg: BackendConfig | None = None,
             eval_cfg: EvalNodeConfig | None = None, topics: KittiTopicsConfig | None = None,
             backend=None, predict=None, plots: bool = True, progress: bool = False,
             explicit_topics: bool = False) -> dict:
    """Evaluate ``bag``; returns the summary dict that was written to ``out_dir/metrics.json``.

    ``predict`` (rgb -> depth in metres) overrides the backend, for tests and other models.
    Camera topics: ``topics`` when the bag has them (or ``explicit_topics``), else found
    (``summary['camera']`` and ``summary['geometry']`` say what was used).
    """
    eval_cfg = eval_cfg or EvalNodeConfig()
    topics = topics or KittiTopicsConfig()
    t0 = time.monotonic()
    contents = read_eval_frames(bag, topics, eval_cfg.slop, explicit_topics)
    if predict is None:
        backend = backend or make_backend(backend_cfg or BackendConfig())

        def run(f):  # the bag's camera_info intrinsics bring its camera to the model's
            return backend.infer(f.rgb, camera=Intrinsics.from_matrix(f.K, f.width, f.height)
                                 ).fine
    else:
        def run(f):
            return predict(f.rgb)
    rec = EvalRecorder(eval_cfg.eval_config(), eval_cfg.distance_bin)
    scored = [f for f in contents.frames if f.points is not None]
    T, geometry = None, "geometry: no frame with a LiDAR scan"
    if scored:
        T, geometry = velo_to_camera(contents, scored[0].camera_frame or topics.camera_frame,
                                     scored[0].lidar_frame or topics.lidar_frame,
                                     eval_cfg.calib_dir, scored[0].P)
    it = scored
    if progress:
        from tqdm import tqdm

        it = tqdm(scored, desc="evaluate_bag", unit="frame")
    for f in it:
        pred = np.asarray(run(f), dtype=np.float32)
        gt = lidar_depth(f.points, f.K, T, f.width, f.height)
        rec.add(f.stamp_ns, pred, gt, label=f"{f.stamp_ns * 1e-9:.3f}")
    extra = {"bag": str(bag), "images": len(contents.frames),
             "unmatched_images": contents.unmatched_images,
             "unmatched_scans": contents.unmatched_scans, "topics": contents.topics,
             "camera": contents.camera_note, "geometry": geometry,
             "backend": getattr(backend, "describe", lambda: "custom")() if backend else "custom",
             "seconds": round(time.monotonic() - t0, 3)}
    rec.write(out_dir, extra, plots=plots)
    summary = rec.summary()
    summary.update(extra)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="evaluate_bag", description=__doc__.splitlines()[0])
    ap.add_argument("--bag", required=True, help="ROS 2 bag folder / .mcap, or ROS 1 .bag")
    ap.add_argument("--out", required=True, help="output folder for metrics.json, CSV, plots")
    ap.add_argument("--model", default=None, help="checkpoint (.pt); default: the shipped model")
    ap.add_argument("--no-plots", action="store_true")
    add_arguments(ap, BackendConfig, skip=("checkpoint",))
    add_arguments(ap, EvalNodeConfig, skip=("output_dir", "summary_period", "write_on_shutdown",
                                            "relay_camera_to", "camera"))
    add_arguments(ap, KittiTopicsConfig)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        bcfg = from_args(BackendConfig, args)
        if args.model:
            bcfg = from_dict(BackendConfig, {**bcfg.__dict__, "checkpoint": args.model})
        ecfg = from_args(EvalNodeConfig, args)
        tcfg = from_args(KittiTopicsConfig, args)
        explicit = args.image_topic is not None or args.camera_info_topic is not None
        summary = evaluate(args.bag, args.out, bcfg, ecfg, tcfg, plots=not args.no_plots,
                           progress=True, explicit_topics=explicit)
    except (BagError, ConfigError, KittiFormatError) as exc:
        print(f"evaluate_bag: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - model load errors etc.: one line, not a traceback
        name = type(exc).__name__
        if name in ("ModelLoadError", "BackendUnavailable", "FileNotFoundError"):
            print(f"evaluate_bag: error: {exc}", file=sys.stderr)
            return 2
        raise
    print(summary["camera"])
    print(summary["geometry"])
    print(f"{summary['frames']} frames scored of {summary['images']} images "
          f"({summary['unmatched_images']} without a LiDAR scan), backend {summary['backend']}")
    if summary["frames"]:
        print(format_table(summary))
    print(f"results: {Path(args.out) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
