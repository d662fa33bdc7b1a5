"""Ground-plane metric scale on KITTI frames of many drives: fit rate and metric AbsRel per group.

``python -m mono_depth_ros.scale_eval [--checkpoint C | --onnx O] [--per-drive 8] [--frames]``
scores the shipped model (or the one given) on the frames of ``../shared/kitti/index.tsv`` (at
most ``--per-drive`` frames of each raw drive, evenly spread, so the long drives do not dominate;
left camera only) and of ``not_for_training/index.tsv`` (Eigen test drives: fine to evaluate on),
or of ``data/kitti_sample`` on a fresh clone. Each frame is fitted on its own (no smoothing: the
frames are seconds apart). Per group it prints: frames, fit rate, median-scaled AbsRel (oracle,
uses the ground truth), metric AbsRel of the raw network depth, metric AbsRel with the
ground-plane scale, and the ratio of the last to the median-scaled one; then every frame whose
plane was rejected, with the reason.

``--crossval DIR`` scores the models of a ``training.crossval --out DIR`` folder instead, each on
the left frames of the drives its fold held out: the fit rate and ratio on drives the model never
saw, the number the shipped model's own training drives cannot give.

``--input lidar-noisy`` / ``lidar-traffic`` replace the network by the ground truth at 0.6x scale
with 10 % per-pixel noise / with vehicles rendered in and 5 % noise: a check of the fit itself,
independent of any model (the scale to find is known).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import EvalConfig, ScaleConfig
from .kitti import KittiFormatError, read_rgb
from .kitti_index import ground_truth, intrinsics, read_index
from .metrics import score_frame
from .scale import GroundPlaneScaler, estimate_ground_plane

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "kitti"
SAMPLE = REPO / "data" / "kitti_sample"
GROUPS = ("training drives", "not_for_training")
INPUTS = ("network", "lidar-noisy", "lidar-traffic")
STRESS_FACTOR = 0.6  # the ground truth is shrunk by this for the lidar-* inputs
# Dense traffic as on the hidden test drive: a car 6 m ahead in our lane, a truck and a tanker
# 3-4 m away in the lanes on both sides; boxes (min corner, max corner) in the camera frame
# (x right, y down, z ahead; the road is 1.65 m below, y = +1.65).
TRAFFIC = (((-1.0, -0.2, 6.0), (1.0, 1.35, 10.5)), ((-5.0, -2.2, 3.0), (-2.4, 1.4, 15.0)),
           ((2.4, -1.8, 4.0), (5.0, 1.4, 16.0)))


@dataclass
class FrameResult:
    """One frame's scores (AbsRel per image, Garg crop, 1e-3..80 m) and its plane fit."""

    group: str
    frame: str
    drive: str
    fit_ok: bool
    reason: str            # why the plane was rejected ("" when it was accepted)
    scale: float           # ground-plane scale applied (1 when rejected)
    oracle_scale: float    # median(gt) / median(pred): the scale ground truth would give
    abs_rel_scaled: float  # median-scaled (oracle)
    abs_rel_none: float    # metric, network depth as is
    abs_rel_ground_plane: float  # metric, times the ground-plane scale
    gt_camera_height: float      # plane fitted to the ground truth itself (m; nan if none)
    fit_ms: float = math.nan     # time of the plane fit (GroundPlaneScaler.update)


def with_vehicles(depth: np.ndarray, K: np.ndarray, boxes=TRAFFIC) -> np.ndarray:
    """``depth`` with box-shaped vehicles rendered in (the nearest surface wins), dense where a
    vehicle is, as a network's depth would be: the road shows only between and under them."""
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float64)
    ray = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    out = np.full(depth.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for lo, hi in boxes:  # slab test; rays have z = 1, so the hit's t is its depth
            t1, t2 = np.array(lo) / ray, np.array(hi) / ray
            near = np.nanmax(np.minimum(t1, t2), -1)
            far = np.nanmin(np.maximum(t1, t2), -1)
            out = np.where((near <= far) & (near > 0), np.minimum(out, near), out)
    return np.where(np.isfinite(out), out, depth).astype(np.float32)


def noisy(depth: np.ndarray, factor: float, noise: float, seed: int = 0) -> np.ndarray:
    """``depth`` times ``factor`` with independent per-pixel relative noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    return (depth * factor * (1 + noise * rng.standard_normal(depth.shape))).astype(np.float32)


def stress_input(kind: str, gt: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The ground-truth-made prediction of ``--input`` ``kind`` (lidar-noisy, lidar-traffic)."""
    if kind == "lidar-noisy":
        return noisy(gt, STRESS_FACTOR, 0.10)
    if kind == "lidar-traffic":
        return noisy(with_vehicles(gt, K), STRESS_FACTOR, 0.05)
    raise ValueError(f"unknown input {kind!r}; one of {', '.join(INPUTS)}")


def group_of(frame) -> str:
    """'not_for_training' for frames under not_for_training/, else 'training drives'."""
    return GROUPS[1] if "not_for_training" in frame.rgb.parts else GROUPS[0]


def select_frames(index_files: list[Path], per_drive: int) -> list:
    """Left-camera frames of the index files, at most ``per_drive`` (evenly spread) per drive;
    frames of unknown drive are groups of their own."""
    by_drive: dict[tuple[str, str], list] = defaultdict(list)
    for path in index_files:
        root = path.parent if path.parent.name != "not_for_training" else path.parent.parent
        for f in read_index(path, root):
            if f.camera != 2:
                continue
            by_drive[(group_of(f), f.drive or f.frame_id)].append(f)
    out = []
    for frames in by_drive.values():
        idx = np.unique(np.linspace(0, len(frames) - 1, min(per_drive, len(frames))).round())
        out.extend(frames[int(i)] for i in idx)
    return out


def crossval_runs(folder: Path, frames: list) -> list[tuple[str, Path, list]]:
    """(name, model.pt, held-out frames) per fold of a ``training.crossval`` output folder: the
    fold's first finished seed, and the frames whose group (``IndexFrame.group``) that fold held
    out."""
    import json

    try:
        folds = json.loads((folder / "crossval.json").read_text())["folds"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{folder}: not a finished training.crossval folder "
                         f"(crossval.json: {exc})") from None
    runs = []
    for k, groups in enumerate(folds):
        models = sorted(folder.glob(f"fold{k}_seed*/model.pt"),
                        key=lambda p: int(p.parent.name.rsplit("seed", 1)[1]))
        if not models:
            raise ValueError(f"{folder}: fold {k} has no model.pt")
        held = set(groups)
        runs.append((f"fold {k} (held out)", models[0],
                     [f for f in frames if f.group in held]))
    return runs


def default_index_files() -> list[Path]:
    """../shared/kitti's two index files when present, else data/kitti_sample/index.tsv."""
    shared = [SHARED / "index.tsv", SHARED / "not_for_training" / "index.tsv"]
    return shared if all(p.is_file() for p in shared) else [SAMPLE / "index.tsv"]


def evaluate(backend, frames: list, scale_cfg: ScaleConfig | None = None,
             progress: bool = False, kind: str = "network") -> list[FrameResult]:
    """Score every frame with and without its own ground-plane scale (no EMA across frames);
    ``kind`` other than network: the prediction is made from the ground truth (no backend)."""
    cfg = dataclasses.replace(scale_cfg or ScaleConfig(), mode="ground_plane", smoothing=1.0)
    ecfg = EvalConfig()
    results = []
    iterator = frames
    if progress:
        from tqdm import tqdm

        iterator = tqdm(frames, desc="scale_eval", unit="frame")
    for f in iterator:
        rgb = read_rgb(f.rgb)
        gt_true, _ = ground_truth(f, *rgb.shape[:2])
        K = intrinsics(f)
        gt = gt_true
        if kind == "network":
            depth = backend.infer(rgb).fine
        else:  # scored against the scene it shows (vehicles included), noise-free and metric
            depth = stress_input(kind, gt_true, K)
            gt = with_vehicles(gt_true, K) if kind == "lidar-traffic" else gt_true
        scaler = GroundPlaneScaler(cfg)  # fresh per frame: the frames are seconds apart
        t0 = time.perf_counter()
        s = scaler.update(depth, K)
        fit_s = time.perf_counter() - t0
        gt_fit = estimate_ground_plane(gt_true, K, cfg).plane
        raw = score_frame(depth, gt, ecfg)
        scaled = score_frame(depth * np.float32(s), gt, ecfg)
        results.append(FrameResult(
            group_of(f), f.frame_id, f.drive or "-", scaler.last_fit is not None,
            scaler.last_reason, s, raw.scale, raw.scaled["abs_rel"], raw.metric["abs_rel"],
            scaled.metric["abs_rel"], gt_fit.distance if gt_fit else math.nan, 1000 * fit_s))
    return results


def summarise(results: list[FrameResult]) -> list[dict]:
    """One row per group present (and 'all'): frames, fits, the three mean AbsRels, the ratio."""
    rows = []
    groups = list(dict.fromkeys(r.group for r in results))
    for g in groups + (["all"] if len(groups) > 1 else []):
        rs = [r for r in results if g in ("all", r.group)]
        row = {"group": g, "frames": len(rs), "fits": sum(r.fit_ok for r in rs),
               "drives": len({r.drive for r in rs}),
               **{k: float(np.mean([getattr(r, k) for r in rs]))
                  for k in ("abs_rel_scaled", "abs_rel_none", "abs_rel_ground_plane")}}
        row["ratio"] = row["abs_rel_ground_plane"] / row["abs_rel_scaled"]
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    """The per-group summary as a markdown table."""
    lines = ["| group | frames (drives) | plane found | AbsRel median-scaled (oracle) "
             "| metric AbsRel, no scaling | metric AbsRel, ground plane | ratio to median-scaled |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['frames']} ({r['drives']}) "
                     f"| {r['fits']}/{r['frames']} ({100 * r['fits'] / r['frames']:.0f} %) "
                     f"| {r['abs_rel_scaled']:.3f} | {r['abs_rel_none']:.3f} "
                     f"| {r['abs_rel_ground_plane']:.3f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def frames_markdown(results: list[FrameResult]) -> str:
    """Per-frame table: scales, AbsRels, the camera height fitted to the ground truth."""
    lines = ["| group | frame | plane | scale | oracle scale | AbsRel median-scaled "
             "| metric, none | metric, ground plane | GT camera height (m) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.group} | {r.frame} | {'yes' if r.fit_ok else 'no'} | {r.scale:.3f} "
                     f"| {r.oracle_scale:.3f} | {r.abs_rel_scaled:.3f} | {r.abs_rel_none:.3f} "
                     f"| {r.abs_rel_ground_plane:.3f} | {r.gt_camera_height:.2f} |")
    return "\n".join(lines)


def failures(results: list[FrameResult]) -> str:
    """One line per frame whose plane was rejected, with the reason (empty when none)."""
    return "\n".join(f"- {r.group}: {r.frame} ({r.drive}): {r.reason}"
                     for r in results if not r.fit_ok)


def main(argv: list[str] | None = None) -> int:
    from .backends.factory import add_backend_arguments, backend_from_arguments

    ap = argparse.ArgumentParser(prog="python -m mono_depth_ros.scale_eval",
                                 description=__doc__.splitlines()[0])
    add_backend_arguments(ap)
    ap.add_argument("--list", nargs="+", default=None,
                    help="index.tsv files (default: ../shared/kitti/index.tsv and its "
                         "not_for_training/index.tsv, or data/kitti_sample/index.tsv)")
    ap.add_argument("--per-drive", type=int, default=8, help="at most this many frames per drive")
    ap.add_argument("--camera-height", type=float, default=ScaleConfig.camera_height)
    ap.add_argument("--input", default="network", choices=INPUTS,
                    help="network = the model's depth; lidar-noisy / lidar-traffic = the ground "
                         f"truth x{STRESS_FACTOR} with noise / with rendered vehicles (no model)")
    ap.add_argument("--frames", action="store_true", help="also print the per-frame table")
    ap.add_argument("--crossval", metavar="DIR", default="",
                    help="score each fold's model of this training.crossval --out folder on the "
                         "drives it held out (--list default: ../shared/kitti/index.tsv)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .backends.base import BackendUnavailable
    from .config import ConfigError
    from .model_io import ModelLoadError

    try:
        lists = [Path(p) for p in args.list] if args.list else \
            [SHARED / "index.tsv"] if args.crossval else default_index_files()
        frames = select_frames(lists, args.per_drive)
        scale_cfg = ScaleConfig(mode="ground_plane", camera_height=args.camera_height)
        if args.crossval:
            from .predict import make_backend

            results = []
            for name, model, held in crossval_runs(Path(args.crossval), frames):
                backend = make_backend("torch", str(model), args.threads, args.flip_average)
                results += [dataclasses.replace(r, group=name) for r in evaluate(
                    backend, held, scale_cfg, progress=sys.stderr.isatty())]
        else:
            backend = None if args.input != "network" else backend_from_arguments(args)
            results = evaluate(backend, frames, scale_cfg, progress=sys.stderr.isatty(),
                               kind=args.input)
    except (BackendUnavailable, ConfigError, ModelLoadError, KittiFormatError, OSError,
            ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    source = f"the fold models of {args.crossval}" if args.crossval else \
        backend.describe() if backend else f"{args.input} (ground truth x{STRESS_FACTOR})"
    print(f"input: {source}; frames: {', '.join(str(p) for p in lists)}; "
          f"at most {args.per_drive} per drive\n")
    print(to_markdown(summarise(results)))
    print(f"\nplane fit: median {np.median([r.fit_ms for r in results]):.1f} ms per frame "
          "(depth at the image's full size, this CPU)")
    fails = failures(results)
    print("\nplane rejected on:\n" + fails if fails else "\nplane found on every frame")
    if args.frames:
        print("\n" + frames_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
