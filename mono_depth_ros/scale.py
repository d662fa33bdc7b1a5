"""Metric scale without ground truth: fit the road plane, divide the known camera height by it.

Monocular depth is only known up to scale on a new camera or car. The road in the lower middle of
the image is a plane ``camera_height`` below the camera, so: back-project the predicted depth of
that region with the intrinsics, fit a plane with RANSAC (then least squares on the inliers),
and scale = camera_height / fitted plane distance. Per-frame scales are smoothed with an EMA in
log space and frames whose scale jumps are rejected, so the published scale does not flicker.
ROS-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import ScaleConfig
from .geometry import backproject


@dataclass
class PlaneFit:
    """Fitted plane ``normal . p = distance`` (unit normal pointing down, towards the road)."""

    normal: np.ndarray
    distance: float
    inlier_ratio: float
    points: int


def region_mask(height: int, width: int, cfg: ScaleConfig) -> np.ndarray:
    """Boolean mask of the fit region: the lower-middle part of the image where the road is."""
    m = np.zeros((height, width), dtype=bool)
    m[int(cfg.region_top * height):, int(cfg.region_left * width):int(cfg.region_right * width)] \
        = True
    return m


def region_points(depth: np.ndarray, K: np.ndarray, cfg: ScaleConfig) -> np.ndarray:
    """Nx3 camera-frame points of the fit region with valid depth (0/NaN/too far are dropped)."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got shape {depth.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape[0] < 3 or K.shape[1] < 3:
        raise ValueError(f"intrinsics must be 3x3 (or 3x4), got shape {K.shape}")
    pts = backproject(np.nan_to_num(depth, nan=0.0), K)
    z = pts[..., 2]
    keep = region_mask(*depth.shape, cfg) & (z > 0) & (z < cfg.max_depth)
    return pts[keep].astype(np.float64)


def fit_plane(points: np.ndarray, cfg: ScaleConfig, seed: int = 0) -> PlaneFit | None:
    """RANSAC + least-squares plane through ``points``; None when no road-like plane is found."""
    n_all = len(points)
    if n_all < max(cfg.min_points, 3):
        return None
    rng = np.random.default_rng(seed)
    pts = points[rng.choice(n_all, cfg.max_points, replace=False)] if n_all > cfg.max_points \
        else points
    below = pts[:, 1][pts[:, 1] > 0]
    if below.size < 3:
        return None
    thr = cfg.inlier_threshold * float(np.median(below))  # scale-free: relative to point height
    cos_tilt = math.cos(math.radians(cfg.max_tilt_deg))

    idx = rng.integers(0, len(pts), size=(cfg.ransac_iters, 3))
    a, b, c = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-9
    normals[ok] /= norms[ok, None]
    normals *= np.where(normals[:, 1:2] < 0, -1.0, 1.0)  # point down (+y in the optical frame)
    ok &= normals[:, 1] >= cos_tilt
    if not ok.any():
        return None
    normals, a = normals[ok], a[ok]
    dists = np.einsum("ij,ij->i", normals, a)
    resid = np.abs(pts @ normals.T - dists[None, :])
    counts = (resid < thr).sum(axis=0)
    best = int(np.argmax(counts))
    inliers = resid[:, best] < thr
    if inliers.sum() < 3:
        return None

    # Least squares on the inliers: the normal is the smallest singular vector.
    q = pts[inliers]
    centroid = q.mean(axis=0)
    _, _, vt = np.linalg.svd(q - centroid, full_matrices=False)
    normal = vt[-1] * (1.0 if vt[-1][1] >= 0 else -1.0)
    if normal[1] < cos_tilt:
        normal = normals[best]
    distance = float(normal @ centroid)
    ratio = float(inliers.mean())
    if distance <= 0 or ratio < cfg.min_inlier_ratio:
        return None
    return PlaneFit(normal, distance, ratio, len(pts))


def fit_ground_plane(depth: np.ndarray, K: np.ndarray, cfg: ScaleConfig | None = None,
                     seed: int = 0) -> PlaneFit | None:
    """Fit the road plane to a depth image (metres, 0 = none) with intrinsics ``K``."""
    cfg = cfg or ScaleConfig(mode="ground_plane")
    return fit_plane(region_points(depth, K, cfg), cfg, seed)


class GroundPlaneScaler:
    """Per-frame ground-plane scale, smoothed (log-space EMA) with jump rejection."""

    RESYNC_AFTER = 5  # consecutive rejected frames after which the new scale is trusted instead

    def __init__(self, cfg: ScaleConfig):
        self.cfg = cfg
        self.scale: float | None = None
        self.last_fit: PlaneFit | None = None
        self.rejected = 0
        self._pending: list[float] = []

    def reset(self) -> None:
        self.scale, self.last_fit, self.rejected, self._pending = None, None, 0, []

    def update(self, depth: np.ndarray, K: np.ndarray) -> float:
        """Fold one frame's fit into the running scale; returns the scale to apply (1 at first)."""
        if self.cfg.mode == "none":
            return 1.0
        fit = fit_ground_plane(depth, K, self.cfg)
        self.last_fit = fit
        if fit is not None:
            self._fold(self.cfg.camera_height / fit.distance)
        return self.scale if self.scale is not None else 1.0

    def _fold(self, s: float) -> None:
        if self.scale is None:
            self.scale = s
            return
        if abs(s / self.scale - 1.0) > self.cfg.max_jump:
            self.rejected += 1
            self._pending.append(s)
            if self.rejected < self.RESYNC_AFTER:
                return
            s = float(np.median(self._pending))  # the old scale was the outlier: re-lock
            self.scale = s
        else:
            a = self.cfg.smoothing
            self.scale = math.exp((1 - a) * math.log(self.scale) + a * math.log(s))
        self.rejected, self._pending = 0, []

    def apply(self, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
        """``depth`` rescaled to metres by the updated running scale."""
        return depth * np.float32(self.update(depth, K))


GroundPlaneScale = GroundPlaneScaler  # name used by ros/depth_node.py (issue 5)
