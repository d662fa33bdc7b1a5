"""The one place where camera images become network input and network output becomes
camera-size depth. Every backend calls these, so they all see identical tensors.

Both functions take optional work buffers (``Buffers``) so that a backend running frame after
frame of one size allocates nothing per frame but the depth it hands back to the caller.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import camera

_INV255 = np.float32(1.0 / 255.0)


class Buffers:
    """Work arrays reused from frame to frame, (re)allocated only when a size changes."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None or a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            a = self._arrays[name] = np.empty(shape, dtype=dtype)
        return a


def to_network_input(rgb: np.ndarray, height: int, width: int, out: np.ndarray | None = None,
                     buffers: Buffers | None = None,
                     cmap: "camera.CanvasMap | None" = None) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 1x3xhxw in [0, 1] at the network size (area resampling).

    ``out`` (float32 1x3xhxw, C-contiguous) receives the result when given; ``buffers`` holds
    the resized uint8 image between calls. ``cmap`` places the image on the canonical camera's
    canvas (``camera.canvas_map``); without it the image is resized to fill the input.
    """
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} with shape {rgb.shape}")
    if cmap is not None and not cmap.is_plain_resize:
        dst = buffers.get("canvas", (height, width, 3), np.uint8) if buffers else None
        rgb = camera.to_canvas(rgb, cmap, dst)
    elif rgb.shape[:2] != (height, width):
        interp = cv2.INTER_AREA if rgb.shape[0] > height else cv2.INTER_LINEAR
        dst = buffers.get("resized", (height, width, 3), np.uint8) if buffers else None
        rgb = cv2.resize(rgb, (width, height), dst=dst, interpolation=interp)
    if out is None:
        out = np.empty((1, 3, height, width), dtype=np.float32)
    elif out.shape != (1, 3, height, width) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 1x3x{height}x{width}, got {out.dtype} {out.shape}")
    # uint8 HWC -> float32 CHW in one pass (same values as astype(float32) * (1/255))
    np.multiply(rgb.transpose(2, 0, 1), _INV255, out=out[0], dtype=np.float32)
    return out


def to_camera_depth(depth: np.ndarray, height: int, width: int,
                    buffers: Buffers | None = None, key: str = "depth",
                    cmap: "camera.CanvasMap | None" = None) -> np.ndarray:
    """Network depth (hxw, or 1x1xhxw) -> float32 HxW metres at the camera resolution.

    Resampling happens in log space (bilinear), which keeps depth edges from averaging near and
    far into a floating value in between as much as linear interpolation would. The result is a
    new array (callers keep it); only the network-size log buffer comes from ``buffers``.
    ``cmap`` (the input's canvas map) takes the canonical canvas back to the camera's pixels.
    """
    import cv2

    if cmap is not None and not cmap.is_plain_resize:
        return camera.from_canvas(depth, replace(cmap, width=width, height=height))
    d = np.asarray(depth, dtype=np.float32).reshape(depth.shape[-2:])
    if d.shape == (height, width):
        return d.copy()
    logd = buffers.get(key, d.shape, np.float32) if buffers else np.empty(d.shape, np.float32)
    np.maximum(d, np.float32(1e-6), out=logd)
    np.log(logd, out=logd)
    out = cv2.resize(logd, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.exp(out, out=out)


def to_camera_confidence(conf: np.ndarray, height: int, width: int,
                         buffers: Buffers | None = None, key: str = "confidence",
                         cmap=None) -> np.ndarray:
    """Network confidence (hxw or 1x1xhxw, 0..1) -> float32 HxW at the camera resolution.

    The arguments of ``to_camera_depth``; resampled linearly (a probability, not a depth) and a
    new array. With a canvas map, image pixels the network did not see get confidence 0."""
    import cv2

    if cmap is not None and not cmap.is_plain_resize:
        return camera.from_canvas(conf, replace(cmap, width=width, height=height), log=False,
                                  fill=0.0)
    c = np.asarray(conf, dtype=np.float32).reshape(conf.shape[-2:])
    if c.shape == (height, width):
        return c.copy()
    return cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR)
