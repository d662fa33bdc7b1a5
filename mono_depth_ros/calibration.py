"""INT8 calibration frames: the one selection used by the TensorRT calibrator and by ONNX
Runtime's static quantisation, so both calibrate on the same real KITTI frames.

A source is ``""`` (the KITTI sample frames shipped in data/kitti_sample: training drives 0001
and 0005), an ``index.tsv`` in the ``shared/kitti`` format, or a folder of images. Frames of the
28 Eigen test drives and anything under ``not_for_training/`` are never used; the rest is spread
evenly over drives and over each drive's frames, deterministically, up to ``limit`` frames.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("mono_depth_ros.calibration")

DEFAULT_LIMIT = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The 28 Eigen test drives (sfmlearner test_scenes.txt), so that a calibration source without
# that file next to it is filtered too.
EIGEN_TEST_DRIVES = frozenset({
    "2011_09_26_drive_0002", "2011_09_26_drive_0009", "2011_09_26_drive_0013",
    "2011_09_26_drive_0020", "2011_09_26_drive_0023", "2011_09_26_drive_0027",
    "2011_09_26_drive_0029", "2011_09_26_drive_0036", "2011_09_26_drive_0046",
    "2011_09_26_drive_0048", "2011_09_26_drive_0052", "2011_09_26_drive_0056",
    "2011_09_26_drive_0059", "2011_09_26_drive_0064", "2011_09_26_drive_0084",
    "2011_09_26_drive_0086", "2011_09_26_drive_0093", "2011_09_26_drive_0096",
    "2011_09_26_drive_0101", "2011_09_26_drive_0106", "2011_09_26_drive_0117",
    "2011_09_28_drive_0002", "2011_09_29_drive_0071", "2011_09_30_drive_0016",
    "2011_09_30_drive_0018", "2011_09_30_drive_0027", "2011_10_03_drive_0027",
    "2011_10_03_drive_0047",
})
# The Eigen test-scene list, relative to an index.tsv of the shared/kitti layout.
TEST_SCENES_REL = Path("splits") / "sfmlearner" / "test_scenes.txt"


class CalibrationError(ValueError):
    """No usable calibration frames; the message says what to fix."""


def _spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def _index_frames(index: Path, exclude_drives: set[str]) -> dict[str, list[Path]]:
    """Left-camera frames of an index.tsv grouped by drive (unknown drives by their format)."""
    from .kitti import drive_of, read_test_scenes

    scenes_file = index.parent / TEST_SCENES_REL
    test_scenes = set(EIGEN_TEST_DRIVES)
    if scenes_file.is_file():
        test_scenes |= read_test_scenes(scenes_file)
    with index.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not {"rgb", "raw_drive"} <= set(rows[0]):
        raise CalibrationError(f"{index}: not an index.tsv (needs columns rgb and raw_drive)")
    groups: dict[str, list[Path]] = {}
    for row in rows:
        rgb = row["rgb"]
        if "image_03" in rgb or "image_3/" in rgb or "not_for_training" in rgb:
            continue  # right camera (same instant as a left frame) or excluded on purpose
        drive = drive_of(row.get("raw_drive", "")) or drive_of(rgb)
        if drive in test_scenes or drive in exclude_drives:
            continue
        key = drive or f"unknown:{row.get('format', '')}"
        groups.setdefault(key, []).append(index.parent / rgb)
    return groups


def calibration_frames(source: str | Path = "", limit: int = DEFAULT_LIMIT,
                       exclude_drives: tuple[str, ...] = ()) -> list[Path]:
    """Image paths to calibrate INT8 on (see the module docstring); at least one or an error."""
    from .kitti import drive_of

    if limit < 1:
        raise CalibrationError(f"calibration limit must be >= 1, got {limit}")
    excluded = set(exclude_drives)
    if not str(source):
        from .sample_frames import all_frames

        try:
            groups = {}
            for f in all_frames():
                groups.setdefault(drive_of(str(f.image)) or "", []).append(f.image)
        except FileNotFoundError as exc:
            raise CalibrationError(f"no KITTI sample frames for INT8 calibration ({exc}); give a "
                                   "calibration source (index.tsv or image folder)") from None
    else:
        src = Path(source)
        if src.is_file() and src.suffix == ".tsv":
            groups = _index_frames(src, excluded)
        elif src.is_dir():
            groups = {}
            for p in sorted(q for q in src.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES):
                if "not_for_training" in p.parts or drive_of(str(p)) in EIGEN_TEST_DRIVES:
                    continue
                groups.setdefault(drive_of(str(p)) or "", []).append(p)
        else:
            raise CalibrationError(f"calibration source {src} is neither an index.tsv nor a "
                                   "folder of images")
    groups = {d: v for d, v in groups.items() if d not in excluded and v}
    if not groups:
        raise CalibrationError(f"calibration source {source or 'data/kitti_sample'} has no "
                               "usable frames")
    # Round-robin quotas over drives, so one long drive does not fill the set; then each drive's
    # quota evenly spaced over its frames.
    drives = sorted(groups)
    quota = dict.fromkeys(drives, 0)
    left = limit
    while left:
        grew = False
        for d in drives:
            if left and quota[d] < len(groups[d]):
                quota[d] += 1
                left -= 1
                grew = True
        if not grew:
            break
    return [p for d in drives for p in _spread(sorted(groups[d]), quota[d])]


def calibration_id(paths: list[Path]) -> str:
    """sha256 (16 hex) over the frames' names and contents: the calibration part of cache keys."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()[:16]


def calibration_images(paths: list[Path]) -> list[np.ndarray]:
    """The frames as uint8 RGB (``kitti.read_rgb``)."""
    from .kitti import read_rgb

    return [read_rgb(p) for p in paths]


def calibration_batches(images: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    """uint8 RGB frames -> network input through preprocess.to_network_input (the one path)."""
    from .preprocess import to_network_input

    out = [to_network_input(img, height, width) for img in images]
    if not out:
        raise ValueError("INT8 calibration needs at least one image")
    return out
