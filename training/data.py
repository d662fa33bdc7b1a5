"""KITTI frames for training and evaluation: frame lists, ground truth, the Eigen test-scene guard.

Two list formats are read:
* ``index.tsv`` as in ``shared/kitti`` (columns ``format frame_id rgb velodyne calib gt_depth_png
  velodyne_raw_png raw_drive gt_disparity_png``), which mixes raw drives, object-benchmark and
  stereo-benchmark frames;
* monodepth2 split lists (``2011_09_26/2011_09_26_drive_0001_sync 0000000005 l``) over a raw-data
  root, with ground truth projected from the velodyne scan.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from mono_depth_ros import camera, geometry, kitti, kitti_index
from mono_depth_ros.camera import Intrinsics
from mono_depth_ros.kitti import KittiFormatError
from mono_depth_ros.kitti_index import IndexFrame

log = logging.getLogger(__name__)

GT_KINDS = ("png", "lidar", "velodyne_raw", "disparity")


class TestSceneError(ValueError):
    """A frame of the 28 Eigen test scenes was offered for training."""


@dataclass(frozen=True)
class Frame(IndexFrame):
    """One RGB frame and where its ground truth comes from: an ``index.tsv`` row as the runtime
    reads it (``kitti_index.IndexFrame``) plus what training needs of its right camera."""

    gt_png_right: Path | None = None  # its ground truth (annotated or velodyne_raw, image_03)

    def right_view(self) -> "Frame | None":
        """The right camera's image as a training frame of its own, where its ground truth
        exists (same drive, so it always falls on the same side of a split as the left one)."""
        if self.rgb_right is None or self.gt_png_right is None:
            return None
        return Frame(frame_id=f"{self.frame_id}/image_03", rgb=self.rgb_right,
                     calib_format=self.calib_format, calib=self.calib, drive=self.drive,
                     gt_png=self.gt_png_right)

    def gt_kinds(self) -> list[str]:
        have = {"png": self.gt_png, "lidar": self.velodyne, "velodyne_raw": self.velodyne_raw_png,
                "disparity": self.disparity_png}
        return [k for k in GT_KINDS if have[k] is not None]


def _right_gt(*left_gt: Path | None) -> Path | None:
    """The image_03 twin of a left ground-truth PNG (KITTI's depth-benchmark layout), if present."""
    for p in left_gt:
        if p is not None and "image_02" in p.parts:
            twin = Path(*["image_03" if part == "image_02" else part for part in p.parts])
            if twin.is_file():
                return twin
    return None


def read_index(path: str | Path, root: str | Path | None = None) -> list[Frame]:
    """Frames of an ``index.tsv`` (paths relative to ``root``, default the file's folder): the
    runtime's reader (``kitti_index``), plus the right view's ground truth where it exists."""
    return [Frame(**{f.name: getattr(row, f.name) for f in fields(IndexFrame)},
                  gt_png_right=_right_gt(row.gt_png, row.velodyne_raw_png))
            for row in kitti_index.read_index(path, root)]


def read_split_frames(path: str | Path, data_root: str | Path,
                      gt_png_root: str | Path | None = None) -> list[Frame]:
    """Frames of a monodepth2 split list over a raw-data root (LiDAR, or benchmark PNGs)."""
    data_root = Path(data_root)
    frames = []
    for e in kitti.read_split(path):
        date_dir = data_root / e.folder.split("/")[0]
        cam = "image_02" if e.side == "l" else "image_03"
        gt_png = None
        if gt_png_root is not None:
            cand = (Path(gt_png_root) / Path(e.folder).name / "proj_depth" / "groundtruth" / cam
                    / f"{e.frame:010d}.png")
            gt_png = cand if cand.is_file() else None
        frames.append(Frame(
            frame_id=f"{e.folder}/{e.frame:010d}", rgb=e.image_path(data_root),
            calib_format="raw",
            calib=(date_dir / "calib_cam_to_cam.txt", date_dir / "calib_velo_to_cam.txt"),
            drive=e.drive, velodyne=e.velodyne_path(data_root), gt_png=gt_png))
    return frames


def load_frames(path: str | Path, data_root: str | Path | None = None) -> list[Frame]:
    """``.tsv`` index or monodepth2 ``.txt`` split list."""
    path = Path(path)
    if path.suffix == ".tsv":
        return read_index(path, data_root)
    if data_root is None:
        raise KittiFormatError(f"{path}: a split list needs data_root (the raw-data folder)")
    return read_split_frames(path, data_root)


def balanced_epoch(groups: list[str], cap: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffled indices of one epoch in which each group (drive) gives at most ``cap`` frames,
    drawn afresh each epoch, so two long drives do not drown the frames of many short ones.
    ``cap`` 0 = every frame once."""
    idx = np.arange(len(groups))
    if cap <= 0:
        return rng.permutation(idx)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    picked = []
    for g in sorted(by_group):
        members = np.asarray(by_group[g])
        picked.extend(rng.choice(members, size=min(cap, len(members)), replace=False).tolist())
    return rng.permutation(np.asarray(picked, dtype=np.int64))


def check_not_test_scenes(frames: list[Frame], test_scenes: set[str]) -> None:
    """Refuse to train on any frame of the Eigen test scenes (the standard, honest protocol)."""
    for f in frames:
        if f.drive in test_scenes:
            raise TestSceneError(f"refusing to train on {f.frame_id}: drive {f.drive} is one of "
                                 "the 28 Eigen test scenes; remove it from the training list")
        if "not_for_training" in f.rgb.parts:
            raise TestSceneError(f"refusing to train on {f.frame_id}: it lies under "
                                 "not_for_training/")


def frames_hash(frames: list[Frame]) -> str:
    """sha256 over the frame ids and file sizes: identifies the training data in checkpoints."""
    h = hashlib.sha256()
    for f in sorted(frames, key=lambda f: f.frame_id):
        h.update(f.frame_id.encode())
        for p in (f.rgb, f.velodyne, f.gt_png, f.disparity_png):
            if p is not None and p.is_file():
                h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:16]


def _calib(frame: Frame) -> kitti.CameraCalib:
    if frame.calib_format == "raw":
        if len(frame.calib) != 2:
            raise KittiFormatError(f"{frame.frame_id}: raw calibration needs calib_cam_to_cam.txt "
                                   "and calib_velo_to_cam.txt")
        return kitti.read_raw_calib(*frame.calib)
    if frame.calib_format in ("object", "object_misc"):
        if len(frame.calib) != 1:
            raise KittiFormatError(f"{frame.frame_id}: object calibration is one file")
        return kitti.read_object_calib(frame.calib[0])
    raise KittiFormatError(f"{frame.frame_id}: no LiDAR calibration for format "
                           f"{frame.calib_format!r}")


def load_ground_truth(frame: Frame, height: int, width: int,
                      prefer: tuple[str, ...] = GT_KINDS) -> tuple[np.ndarray, str]:
    """(depth in metres HxW with 0 = none, which kind) for ``frame``, best kind first."""
    for kind in prefer:
        if kind not in frame.gt_kinds():
            continue
        if kind == "png":
            gt = kitti.read_depth_png(frame.gt_png)
        elif kind == "velodyne_raw":
            gt = kitti.read_depth_png(frame.velodyne_raw_png)
        elif kind == "lidar":
            gt = geometry.project_points(kitti.read_velodyne(frame.velodyne),
                                         _calib(frame).velo_to_image, width, height)
        else:
            fx, baseline = kitti.read_stereo_baseline(frame.calib[0])
            gt = kitti.read_disparity_depth(frame.disparity_png, fx, baseline)
        if gt.shape != (height, width):
            raise KittiFormatError(f"{frame.frame_id}: image is {width}x{height} but its "
                                   f"{kind} ground truth is {gt.shape[1]}x{gt.shape[0]}")
        return gt, kind
    raise KittiFormatError(f"{frame.frame_id}: no ground truth of kinds {', '.join(prefer)}")


def stereo_geometry(frame: Frame) -> tuple[float, float] | None:
    """(fx in pixels, baseline in metres) from image_02 to image_03, or None where unknown."""
    if not frame.calib:
        return None
    try:
        if frame.calib_format in ("raw", "stereo"):
            return kitti.read_stereo_baseline(frame.calib[0])
        if frame.calib_format in ("object", "object_misc"):
            return kitti.read_stereo_baseline(frame.calib[0], ("P2", "P3"))
    except KittiFormatError:
        return None
    return None


def frame_intrinsics(frame: Frame, width: int, height: int) -> Intrinsics | None:
    """The frame's camera (rectified P of image_02, or image_03 for right views) from its
    calibration file; None where the calibration does not say (the canonical camera is assumed).
    """
    P = kitti_index.projection_matrix(frame)
    return None if P is None else Intrinsics.from_matrix(P, width, height)


@dataclass
class Sample:
    frame: Frame
    rgb: np.ndarray      # uint8 HxWx3, full resolution
    depth: np.ndarray    # float32 HxW metres, 0 = none
    gt_kind: str
    rgb_right: np.ndarray | None = None       # image_03 for the stereo loss, same size as rgb
    stereo: tuple[float, float] | None = None  # (fx, baseline) of that pair
    camera: Intrinsics | None = None          # the image's intrinsics (None: canonical view)


def load_sample(frame: Frame, prefer: tuple[str, ...] = GT_KINDS,
                stereo: bool = False) -> Sample:
    """RGB + ground truth; with ``stereo`` also the right image where the pair's geometry is known
    (used by the photometric loss, Godard et al. 2017)."""
    rgb = kitti.read_rgb(frame.rgb)
    depth, kind = load_ground_truth(frame, rgb.shape[0], rgb.shape[1], prefer)
    right, geom = None, None
    if stereo and frame.rgb_right is not None:
        geom = stereo_geometry(frame)
        if geom is not None and geom[1] > 0.1:
            right = kitti.read_rgb(frame.rgb_right)
            if right.shape != rgb.shape:
                raise KittiFormatError(f"{frame.frame_id}: right image is {right.shape[1]}x"
                                       f"{right.shape[0]}, left {rgb.shape[1]}x{rgb.shape[0]}")
        else:
            geom = None
    cam = frame_intrinsics(frame, rgb.shape[1], rgb.shape[0])
    return Sample(frame, rgb, depth, kind, right, geom, cam)


# --------------------------------------------------------------------------------------------
# Network-size tensors with geometry-respecting augmentation
# --------------------------------------------------------------------------------------------

@dataclass
class AugmentConfig:
    flip: bool = True
    color: bool = True
    max_zoom: float = 1.2   # crops of 1/s of the frame resized up, depth divided by s
    window_prob: float = 0.0  # share of examples seen through a smaller camera's window


def make_pair(sample: Sample, height: int, width: int, rng: np.random.Generator | None = None,
              aug: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 3xHxW in [0,1], depth float32 1xHxW) at network size.

    Augmentation keeps geometry honest (Eigen et al. 2014): a crop zoomed by ``s`` has its depth
    divided by ``s``; flips flip image and depth together; colour jitter touches only the image.
    """
    im, d, _, _ = make_example(sample, height, width, rng, aug)
    return im, d


def _camera_window(rng: np.random.Generator, canonical: Intrinsics) -> tuple[int, int, int, int]:
    """A random smaller camera's view on the canvas (x0, y0, x1, y1): 30-100 % of the width and
    45-100 % of the height, centred near the principal point as real cameras are."""
    cw, ch = canonical.width, canonical.height
    ww = int(round(cw * rng.uniform(0.3, 1.0)))
    wh = int(round(ch * rng.uniform(0.45, 1.0)))
    cx = canonical.cx + 0.5 + rng.uniform(-0.15, 0.15) * ww
    cy = canonical.cy + 0.5 + rng.uniform(-0.15, 0.15) * wh
    x0 = int(np.clip(round(cx - ww / 2), 0, cw - ww))
    y0 = int(np.clip(round(cy - wh / 2), 0, ch - wh))
    return x0, y0, x0 + ww, y0 + wh


def make_example(sample: Sample, height: int, width: int, rng: np.random.Generator | None = None,
                 aug: AugmentConfig | None = None, canonical: Intrinsics | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """``make_pair`` plus the right image under the same crop and colour change, and the factor
    k with disparity (network pixels) = k / depth; k = 0 where there is no stereo pair or the
    example is flipped (a flipped left image has no right image to its right).

    The frame goes onto the canonical camera's canvas through its own intrinsics
    (``camera.py``, the same map as at run time), so frames of different cameras train one
    model. With ``aug.window_prob``, some examples show only a smaller camera's window of the
    canvas (the rest padding, no labels there), so the network learns narrower cameras' views.
    """
    img, depth = sample.rgb, sample.depth
    h, w = depth.shape
    canonical = canonical or camera.KITTI_REFERENCE.resized(width, height)
    if (canonical.width, canonical.height) != (width, height):
        raise ValueError(f"canonical camera is {canonical.width}x{canonical.height}, "
                         f"network input {width}x{height}")
    base = camera.canvas_map(w, h, canonical, sample.camera)
    cmap, scale = base, 1.0
    if rng is not None and aug is not None and aug.max_zoom > 1.0:
        s = float(rng.uniform(1.0, aug.max_zoom))
        cmap = base.zoomed(s, rng.uniform(0, width), rng.uniform(0, height))
        scale = cmap.rw / base.rw  # the zoom actually applied

    def to_float(image: np.ndarray) -> np.ndarray:
        return camera.to_canvas(image, cmap).astype(np.float32) / 255.0

    ims = [to_float(img)] + ([to_float(sample.rgb_right)] if sample.rgb_right is not None
                             else [])
    d = camera.sparse_to_canvas(depth, cmap) / scale
    pad = np.ones((height, width), bool)
    x0, y0, x1, y1 = cmap.overlap()
    pad[y0:y1, x0:x1] = False
    windowed = False
    if rng is not None and aug is not None and aug.window_prob > 0 \
            and rng.random() < aug.window_prob:
        windowed = True
        wx0, wy0, wx1, wy1 = _camera_window(rng, canonical)
        inside = np.zeros_like(pad)
        inside[wy0:wy1, wx0:wx1] = True
        pad |= ~inside
        d = np.where(pad, np.float32(0), d)
    flipped = False
    if rng is not None and aug is not None:
        if aug.flip and rng.random() < 0.5:
            flipped = True
            ims, d, pad = [im[:, ::-1] for im in ims], d[:, ::-1], pad[:, ::-1]
        if aug.color:
            gain = rng.uniform(0.8, 1.2, size=3).astype(np.float32)  # per-channel colour
            bright = np.float32(rng.uniform(0.8, 1.2))                 # brightness
            contrast = np.float32(rng.uniform(0.8, 1.2))
            gamma = np.float32(rng.uniform(0.9, 1.1))
            out = []
            for im in ims:
                im = im * gain * bright
                mean = im.mean()
                im = (im - mean) * contrast + mean
                out.append(np.clip(im, 0.0, 1.0) ** gamma)
            ims = out
    if pad.any():  # padding looks exactly as at run time, whatever the jitter did
        pad_rgb = np.asarray(camera.PAD_RGB, np.float32) / 255.0
        ims = [np.where(pad[..., None], pad_rgb, im) for im in ims]

    def chw(im: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.clip(im, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32)

    right = chw(ims[1]) if len(ims) > 1 else None
    k = 0.0
    if right is not None and sample.stereo is not None and not flipped and not windowed:
        fx, baseline = sample.stereo
        # disparity in network pixels of the (zoomed) canvas; depth was divided by the zoom, so
        # fx at the unzoomed canvas scale times the baseline gives it from the new depth
        k = float(fx * base.rw / w * baseline)
    return chw(ims[0]), np.ascontiguousarray(d[None], dtype=np.float32), right, k


def row_median_depth(samples: list[Sample], height: int) -> list[float]:
    """Median ground-truth depth of each image row (rows in network-height bins) over samples.

    The image-blind baseline of the evaluation: it knows only that the road is near at the bottom
    and far near the horizon. Rows with no ground truth take the nearest row that has some.
    """
    buckets: list[list[np.ndarray]] = [[] for _ in range(height)]
    for s in samples:
        d = s.depth
        rows = (np.arange(d.shape[0]) * height // d.shape[0])
        for r in range(d.shape[0]):
            vals = d[r][d[r] > 0]
            if vals.size:
                buckets[rows[r]].append(vals)
    med = np.array([np.median(np.concatenate(b)) if b else np.nan for b in buckets])
    idx = np.arange(height)
    good = ~np.isnan(med)
    if not good.any():
        raise ValueError("no ground truth to build the row-median baseline from")
    med = np.interp(idx, idx[good], med[good])
    return [float(v) for v in med]


def baseline_depth(row_medians: list[float], height: int, width: int) -> np.ndarray:
    """The row-median baseline as a full HxW depth map."""
    prof = np.asarray(row_medians, dtype=np.float32)
    rows = np.arange(height) * len(prof) // height
    return np.repeat(prof[rows][:, None], width, axis=1)
