"""Camera geometry: LiDAR projection into an image, intrinsics scaling, back-projection."""

from __future__ import annotations

import numpy as np


def project_points(points: np.ndarray, velo_to_image: np.ndarray, width: int, height: int,
                   min_depth: float = 0.1) -> np.ndarray:
    """Project LiDAR points (Nx3 or Nx4) into a sparse depth image (float32 HxW, 0 = no point).

    ``velo_to_image`` is the 3x4 matrix ``P_rect @ R_rect @ [R|T]``. Points behind the camera (or
    closer than ``min_depth``) are dropped; where several points land on one pixel the nearest wins.
    Pixel centres follow the KITTI devkit: pixel (u, v) covers [u - 0.5, u + 0.5).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be Nx3 or Nx4, got shape {pts.shape}")
    homo = np.hstack([pts[:, :3], np.ones((pts.shape[0], 1))])
    proj = homo @ np.asarray(velo_to_image, dtype=np.float64).T
    z = proj[:, 2]
    keep = z > min_depth
    proj, z = proj[keep], z[keep]
    u = np.round(proj[:, 0] / z).astype(np.int64)
    v = np.round(proj[:, 1] / z).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], z[inside]
    depth = np.zeros((height, width), dtype=np.float32)
    # Write far points first so that the nearest point per pixel is the one left standing.
    order = np.argsort(-z)
    depth[v[order], u[order]] = z[order]
    return depth


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics of the same camera after resizing the image by (sx, sy) (pixel-centre aware)."""
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Depth image (HxW metres) -> HxWx3 points in the camera's optical frame (x right, y down)."""
    h, w = depth.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    u = np.arange(w, dtype=np.float32)[None, :]
    v = np.arange(h, dtype=np.float32)[:, None]
    z = depth.astype(np.float32)
    x = (u - cx) / fx * z
    y = (v - cy) / fy * z
    return np.stack([x, y, z], axis=-1)
