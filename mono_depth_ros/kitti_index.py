"""Frames of a ``shared/kitti``-style ``index.tsv`` for runtime checks: image, ground truth, K.

The one reader of index rows: the runtime's evaluation tools (``scale_eval``, ``camera_eval``,
``int8_eval``) use it directly, and ``training.data.Frame`` extends its rows with what training
needs (right-view ground truth, drive groups; augmentation and the Eigen test-scene guard live
there). It gives the rows' image, their ground truth in metres (depth PNG, projected velodyne
scan, KITTI ``velodyne_raw`` PNG or stereo disparity, the best one present) and the intrinsics
of the camera that took the image.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geometry import project_points
from .kitti import (KittiFormatError, drive_of, read_calib_file, read_depth_png,
                    read_disparity_depth, read_object_calib, read_raw_calib, read_stereo_baseline,
                    read_velodyne)

NEEDED = ("format", "frame_id", "rgb", "velodyne", "calib", "gt_depth_png", "raw_drive")


@dataclass(frozen=True)
class IndexFrame:
    """One row of an index.tsv with absolute paths (None where the row has '-')."""

    frame_id: str
    rgb: Path
    calib_format: str        # raw | object | stereo
    calib: tuple[Path, ...]
    drive: str | None        # raw drive name, None where unknown
    velodyne: Path | None = None
    gt_png: Path | None = None
    velodyne_raw_png: Path | None = None
    disparity_png: Path | None = None
    rgb_right: Path | None = None    # image_03 of the same instant, where the list has it

    @property
    def camera(self) -> int:
        """2 for the left colour camera, 3 for the right one (image_03 / image_3 rows)."""
        right = "image_03" in self.frame_id or {"image_03", "image_3"} & set(self.rgb.parts)
        return 3 if right else 2

    @property
    def group(self) -> str:
        """Cross-validation group: the raw drive, or the frame itself where the drive is unknown
        (frames of one drive are near-duplicates and must never sit on both sides of a split)."""
        return self.drive or f"frame:{self.frame_id}"


def read_index(path: str | Path, root: str | Path | None = None) -> list[IndexFrame]:
    """Rows of ``path`` (paths relative to ``root``, default: the file's folder)."""
    path = Path(path)
    root = Path(root) if root else path.parent
    if not path.is_file():
        raise KittiFormatError(f"frame list not found: {path}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise KittiFormatError(f"{path}: the frame list is empty")
    missing = [c for c in NEEDED if c not in rows[0]]
    if missing:
        raise KittiFormatError(f"{path}: not an index.tsv, missing columns {missing}")

    def opt(value: str | None) -> Path | None:
        return None if value in (None, "", "-") else root / value

    return [IndexFrame(
        frame_id=r["frame_id"], rgb=root / r["rgb"], calib_format=r["format"],
        calib=tuple(root / c for c in r["calib"].split(";") if c and c != "-"),
        drive=drive_of(r.get("raw_drive") or ""), velodyne=opt(r.get("velodyne")),
        gt_png=opt(r.get("gt_depth_png")), velodyne_raw_png=opt(r.get("velodyne_raw_png")),
        disparity_png=opt(r.get("gt_disparity_png")), rgb_right=opt(r.get("rgb_right")))
        for r in rows]


def projection_matrix(frame: IndexFrame) -> np.ndarray | None:
    """3x4 rectified P of the frame's camera (``P_rect_0N`` of raw and stereo calibration,
    ``PN`` of object calibration) from its first calibration file; None where it has none."""
    if not frame.calib:
        return None
    calib = read_calib_file(frame.calib[0])
    cam = frame.camera
    for key in (f"P_rect_0{cam}", f"P{cam}"):
        if key in calib and calib[key].size == 12:
            return calib[key].reshape(3, 4).astype(np.float64)
    return None


def intrinsics(frame: IndexFrame) -> np.ndarray:
    """3x3 K of the frame's camera from its first calibration file (raw, object or stereo)."""
    if not frame.calib:
        raise KittiFormatError(f"{frame.frame_id}: no calibration file")
    P = projection_matrix(frame)
    if P is None:
        cam = frame.camera
        raise KittiFormatError(f"{frame.calib[0]}: no P_rect_0{cam} / P{cam} projection matrix")
    return P[:, :3].copy()


def ground_truth(frame: IndexFrame, height: int, width: int) -> tuple[np.ndarray, str]:
    """(depth in metres, HxW, 0 = none; its kind): the depth PNG, else the projected scan,
    else KITTI's velodyne_raw PNG, else depth from the stereo disparity."""
    if frame.gt_png is not None:
        gt, kind = read_depth_png(frame.gt_png), "png"
    elif frame.velodyne is not None:
        if frame.calib_format == "raw" and len(frame.calib) == 2:
            calib = read_raw_calib(*frame.calib, cam=frame.camera)
        elif frame.calib_format in ("object", "object_misc") and len(frame.calib) == 1:
            calib = read_object_calib(frame.calib[0])
        else:
            raise KittiFormatError(f"{frame.frame_id}: cannot project its scan with "
                                   f"{frame.calib_format!r} calibration {frame.calib}")
        gt, kind = project_points(read_velodyne(frame.velodyne), calib.velo_to_image, width,
                                  height), "lidar"
    elif frame.velodyne_raw_png is not None:
        gt, kind = read_depth_png(frame.velodyne_raw_png), "velodyne_raw"
    elif frame.disparity_png is not None:
        fx, baseline = read_stereo_baseline(frame.calib[0])
        gt, kind = read_disparity_depth(frame.disparity_png, fx, baseline), "disparity"
    else:
        raise KittiFormatError(f"{frame.frame_id}: no ground truth in its row")
    if gt.shape != (height, width):
        raise KittiFormatError(f"{frame.frame_id}: image is {width}x{height} but its {kind} "
                               f"ground truth is {gt.shape[1]}x{gt.shape[0]}")
    return gt, kind
