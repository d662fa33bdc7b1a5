"""The one place where camera images become network input and network output becomes
camera-size depth. Every backend calls these, so they all see identical tensors."""

from __future__ import annotations

import numpy as np


def to_network_input(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 1x3xhxw in [0, 1] at the network size (area resampling)."""
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} with shape {rgb.shape}")
    if rgb.shape[:2] != (height, width):
        interp = cv2.INTER_AREA if rgb.shape[0] > height else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (width, height), interpolation=interp)
    x = rgb.astype(np.float32) * (1.0 / 255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def to_camera_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Network depth (hxw, or 1x1xhxw) -> float32 HxW metres at the camera resolution.

    Resampling happens in log space (bilinear), which keeps depth edges from averaging near and
    far into a floating value in between as much as linear interpolation would.
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32).reshape(depth.shape[-2:])
    if d.shape == (height, width):
        return d.copy()
    logd = np.log(np.maximum(d, 1e-6))
    return np.exp(cv2.resize(logd, (width, height), interpolation=cv2.INTER_LINEAR))
