"""Metric scale without ground truth: fit the road plane, divide the known camera height by it.

Monocular depth is only known up to scale on a new camera or car. The road below the horizon is a
plane ``camera_height`` below the camera, so: median-pool the predicted depth of the lower image,
back-project it with the intrinsics, keep the road-like points (drop vertical surfaces: vehicle
sides and rears, walls), find the road plane among them (RANSAC that prefers the lowest
well-supported, near-level plane at a plausible height: points under a candidate plane count
against it, so bonnets and truck beds lose to the road even when vehicles cover most of the
view), refine its height to the mode of the points' heights, and accept it by the plausibility
of its normal and height rather than by the share of points on it. scale = camera_height / plane
distance. Per-frame scales are smoothed with an EMA in log space and frames whose scale jumps are
rejected, so the published scale does not flicker. ROS-free; docs/runtime.md section 4.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from .config import ScaleConfig

log = logging.getLogger(__name__)

BELOW_PENALTY = 2.0  # a point clearly under a candidate plane costs two points on it
BELOW_MARGIN = 0.25  # "clearly under": lower than the plane by this fraction of its distance
SCORE_POINTS = 2000  # RANSAC scores hypotheses on this many points; the refinement uses all
SLOPE_SPAN_PX = 16  # road-likeness: surface slope between the pixels this far above and below
REFINE_STEPS = 10  # at most; the distance moves to the nearest mode of the point heights


@dataclass
class PlaneFit:
    """Fitted plane ``normal . p = distance`` (unit normal pointing down, towards the road)."""

    normal: np.ndarray
    distance: float
    inlier_ratio: float       # share of the region's points within inlier_threshold of the plane
    points: int               # points the fit used (after subsampling)
    below_ratio: float = 0.0  # share of the region's points clearly under the plane

    @property
    def tilt_deg(self) -> float:
        """Angle between the plane normal and the camera's down axis (+y), degrees."""
        return math.degrees(math.acos(min(1.0, max(-1.0, float(self.normal[1])))))


@dataclass
class GroundEstimate:
    """Outcome of one frame's fit: the accepted plane, or None and the reason it was rejected."""

    plane: PlaneFit | None
    reason: str = ""                  # empty when accepted
    candidate: PlaneFit | None = None  # the best plane found, also when it was rejected

    @property
    def ok(self) -> bool:
        return self.plane is not None


def region_mask(height: int, width: int, cfg: ScaleConfig) -> np.ndarray:
    """Boolean mask of the fit region: the lower part of the image, where the road is."""
    m = np.zeros((height, width), dtype=bool)
    m[int(cfg.region_top * height):, int(cfg.region_left * width):int(cfg.region_right * width)] \
        = True
    return m


def _pooled(depth: np.ndarray, cfg: ScaleConfig):
    """Median depth of the valid pixels of each pool x pool block of the fit region (0 where
    none), which removes checkerboard / upsampling noise and stray pixels: a rows x cols grid
    and the pixel coordinates (u, v) of the block centres."""
    h, w = depth.shape
    p = cfg.pool
    top, left, right = int(cfg.region_top * h), int(cfg.region_left * w), int(cfg.region_right * w)
    rows, cols = max((h - top) // p, 0), max((right - left) // p, 0)
    top = h - rows * p  # keep the bottom rows: the nearest road
    crop = depth[top:, left:left + cols * p].astype(np.float64)
    blocks = crop.reshape(rows, p, cols, p).transpose(0, 2, 1, 3).reshape(rows, cols, p * p)
    valid = np.isfinite(blocks) & (blocks > 0) & (blocks < cfg.max_depth)
    n = valid.sum(axis=2)
    srt = np.sort(np.where(valid, blocks, np.inf), axis=2)  # valid values first
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[..., None], axis=2)[..., 0]
    hi = np.take_along_axis(srt, np.minimum(n // 2, p * p - 1)[..., None], axis=2)[..., 0]
    z = np.where(n > 0, 0.5 * (lo + hi), 0.0)
    u = left + (np.arange(cols) + 0.5) * p - 0.5
    v = top + (np.arange(rows) + 0.5) * p - 0.5
    return z, u, v


def region_points(depth: np.ndarray, K: np.ndarray, cfg: ScaleConfig) -> np.ndarray:
    """Nx3 camera-frame points of the fit region, one per pool x pool block with valid depth
    (0/NaN/too far are dropped) whose surface is road-like: seen from the blocks
    ``SLOPE_SPAN_PX`` above and below, it rises less than ``max_slope_deg`` from the
    horizontal. That drops vehicle sides and rears, walls and poles before any plane is fitted:
    vertical surfaces would otherwise lend a band of points to any plane that cuts them."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got shape {depth.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape[0] < 3 or K.shape[1] < 3:
        raise ValueError(f"intrinsics must be 3x3 (or 3x4), got shape {K.shape}")
    z, u, v = _pooled(depth, cfg)
    rows = len(v)
    pts = np.stack([(u[None, :] - K[0, 2]) / K[0, 0] * z, (v[:, None] - K[1, 2]) / K[1, 1] * z,
                    z], axis=-1)
    valid = z > 0
    if rows < 2:
        return pts[valid]
    k = max(1, round(SLOPE_SPAN_PX / cfg.pool))
    r = np.arange(rows)
    above, below = np.clip(r - k, 0, rows - 1), np.clip(r + k, 0, rows - 1)
    t = pts[below] - pts[above]  # tangent down the image column
    ok = valid & valid[above] & valid[below]
    rise = np.degrees(np.arctan2(np.abs(t[..., 1]), np.hypot(t[..., 0], t[..., 2])))
    return pts[ok & (rise < cfg.max_slope_deg)]


def _plausible_distance(d: np.ndarray, cfg: ScaleConfig) -> np.ndarray:
    """Distances whose implied scale camera_height / d lies within [1/max_scale, max_scale]."""
    s = cfg.camera_height / np.maximum(d, 1e-12)
    return (d > 0) & (s <= cfg.max_scale) & (s >= 1.0 / cfg.max_scale)


def _hypotheses(pts: np.ndarray, cfg: ScaleConfig, rng: np.random.Generator):
    """RANSAC plane hypotheses (normals Mx3, distances M) with a plausible tilt and height."""
    idx = rng.integers(0, len(pts), size=(cfg.ransac_iters, 3))
    a, b, c = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals[ok] /= norms[ok, None]
    normals *= np.where(normals[:, 1:2] < 0, -1.0, 1.0)  # point down (+y in the optical frame)
    ok &= normals[:, 1] >= math.cos(math.radians(cfg.max_tilt_deg))
    dists = np.einsum("ij,ij->i", normals, a)
    ok &= _plausible_distance(dists, cfg)
    return normals[ok], dists[ok]


def _residuals(pts: np.ndarray, normal: np.ndarray, distance: float) -> np.ndarray:
    """Signed height of each point under the plane, relative to the plane distance (scale-free):
    0 on the plane, > 0 below it (impossible for the road), < 0 above it (cars, walls)."""
    return pts @ normal / distance - 1.0


def estimate_plane(points: np.ndarray, cfg: ScaleConfig, seed: int = 0) -> GroundEstimate:
    """The road plane through ``points`` (Nx3, camera frame), or the reason none was accepted."""
    n_all = len(points)
    if n_all < max(cfg.min_points, 3):
        return GroundEstimate(None, f"too few road-like points with valid depth in the fit "
                                    f"region ({n_all} < min_points {cfg.min_points})")
    rng = np.random.default_rng(seed)
    pts = points[rng.choice(n_all, cfg.max_points, replace=False)] if n_all > cfg.max_points \
        else points
    normals, dists = _hypotheses(pts, cfg, rng)
    if len(dists) == 0:
        return GroundEstimate(None, f"no candidate plane within {cfg.max_tilt_deg:g} deg of the "
                                    "down axis at a plausible height (see max_scale)")
    thr = cfg.inlier_threshold
    sub = pts[rng.choice(len(pts), SCORE_POINTS, replace=False)] if len(pts) > SCORE_POINTS \
        else pts
    r = sub @ normals.T / dists[None, :] - 1.0
    score = (np.abs(r) < thr).sum(axis=0) - BELOW_PENALTY * (r > BELOW_MARGIN).sum(axis=0)
    # Camera-height prior: the network's depth is roughly metric, so prefer planes near
    # camera_height (a bonnet or a truck bed at half the height must win by far to be chosen).
    sigma = max(math.log(cfg.max_scale), 1e-3) / 2
    score = score * np.exp(-0.5 * (np.log(dists / cfg.camera_height) / sigma) ** 2)
    # Level prior: the road under the car is near level in the camera frame; a plane pitched
    # through the few road points left between vehicles must earn its tilt.
    tilt = np.degrees(np.arccos(np.clip(normals[:, 1], -1.0, 1.0)))
    score = score * np.exp(-0.5 * (tilt / (cfg.max_tilt_deg / 2)) ** 2)
    best = int(np.argmax(score))
    normal, distance = normals[best], float(dists[best])

    # Refine on the inliers: least-squares normal (smallest singular vector), robust distance.
    cos_tilt = math.cos(math.radians(cfg.max_tilt_deg))
    for _ in range(REFINE_STEPS):
        q = pts[np.abs(_residuals(pts, normal, distance)) < thr]
        if len(q) < 3:
            break
        _, _, vt = np.linalg.svd(q - q.mean(axis=0), full_matrices=False)
        n_ls = vt[-1] * (1.0 if vt[-1][1] >= 0 else -1.0)
        if n_ls[1] >= cos_tilt:
            normal = n_ls
        previous, distance = distance, float(np.median(q @ normal))
        if distance <= 0 or abs(distance / previous - 1.0) < 1e-3:
            break
    if distance <= 0:
        return GroundEstimate(None, "the refined plane passes above the camera")
    r = _residuals(pts, normal, distance)
    fit = PlaneFit(normal, distance, float((np.abs(r) < thr).mean()), len(pts),
                   float((r > BELOW_MARGIN).mean()))
    return GroundEstimate(*_judge(fit, cfg), candidate=fit)


def _judge(fit: PlaneFit, cfg: ScaleConfig) -> tuple[PlaneFit | None, str]:
    """Accept a plane by plausibility: normal, height (implied scale), support, nothing under it."""
    if fit.tilt_deg > cfg.max_tilt_deg:
        return None, f"normal tilted {fit.tilt_deg:.1f} deg from the down axis " \
                     f"(max_tilt_deg {cfg.max_tilt_deg:g})"
    s = cfg.camera_height / fit.distance
    if not _plausible_distance(np.array([fit.distance]), cfg)[0]:
        return None, f"implied scale {s:.2f} outside [1/{cfg.max_scale:g}, {cfg.max_scale:g}] " \
                     "(max_scale)"
    if fit.inlier_ratio < cfg.min_inlier_ratio:
        return None, f"only {100 * fit.inlier_ratio:.1f}% of the region's points on the plane " \
                     f"(min_inlier_ratio {cfg.min_inlier_ratio:g})"
    if fit.below_ratio > cfg.max_below_ratio:
        return None, f"{100 * fit.below_ratio:.1f}% of the region's points lie under the plane " \
                     f"(max_below_ratio {cfg.max_below_ratio:g}): not the road"
    return fit, ""


def fit_plane(points: np.ndarray, cfg: ScaleConfig, seed: int = 0) -> PlaneFit | None:
    """Accepted road plane through ``points``; None when no plausible plane is found."""
    return estimate_plane(points, cfg, seed).plane


def widened(cfg: ScaleConfig) -> ScaleConfig:
    """The fallback region: the whole width of the lower half (or more) of the image."""
    return dataclasses.replace(cfg, region_top=min(cfg.region_top, 0.5), region_left=0.0,
                               region_right=1.0)


def estimate_ground_plane(depth: np.ndarray, K: np.ndarray, cfg: ScaleConfig | None = None,
                          seed: int = 0) -> GroundEstimate:
    """Road plane of a depth image (metres, 0 = none) with intrinsics ``K``, or why none.

    The configured region is tried first; when it yields no plausible plane (vehicles ahead),
    the whole width of the lower half is tried, where the road may still show beside them."""
    cfg = cfg or ScaleConfig(mode="ground_plane")
    est = estimate_plane(region_points(depth, K, cfg), cfg, seed)
    wide = widened(cfg)
    if est.ok or wide == cfg:
        return est
    est_wide = estimate_plane(region_points(depth, K, wide), wide, seed)
    if est_wide.ok:
        return est_wide
    return GroundEstimate(None, f"{est.reason}; in the widened region: {est_wide.reason}",
                          est.candidate)


def fit_ground_plane(depth: np.ndarray, K: np.ndarray, cfg: ScaleConfig | None = None,
                     seed: int = 0) -> PlaneFit | None:
    """Fit the road plane to a depth image (metres, 0 = none) with intrinsics ``K``."""
    return estimate_ground_plane(depth, K, cfg, seed).plane


class GroundPlaneScaler:
    """Per-frame ground-plane scale, smoothed (log-space EMA) with jump rejection."""

    RESYNC_AFTER = 5  # consecutive rejected frames after which the new scale is trusted instead

    def __init__(self, cfg: ScaleConfig):
        self.cfg = cfg
        self.scale: float | None = None
        self.last_fit: PlaneFit | None = None
        self.last_reason = ""  # why the last frame's plane was rejected ("" = accepted)
        self.frames = 0        # frames seen, and of them ...
        self.fits = 0          # ... those with an accepted plane: the fit rate is fits / frames
        self.rejected = 0
        self._pending: list[float] = []

    def reset(self) -> None:
        self.scale, self.last_fit, self.last_reason = None, None, ""
        self.frames = self.fits = self.rejected = 0
        self._pending = []

    @property
    def fit_rate(self) -> float:
        """Share of the frames seen so far whose plane was accepted (0 before the first)."""
        return self.fits / self.frames if self.frames else 0.0

    def update(self, depth: np.ndarray, K: np.ndarray) -> float:
        """Fold one frame's fit into the running scale; returns the scale to apply (1 at first)."""
        if self.cfg.mode == "none":
            return 1.0
        est = estimate_ground_plane(depth, K, self.cfg)
        self.frames += 1
        self.last_fit, self.last_reason = est.plane, est.reason
        if est.plane is not None:
            self.fits += 1
            self._fold(self.cfg.camera_height / est.plane.distance)
        else:
            log.debug("ground plane rejected, scale kept at %s: %s", self.scale, est.reason)
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
