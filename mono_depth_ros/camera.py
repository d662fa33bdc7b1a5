"""The network's camera: the one place where metres meet pixels.

A network learns metres for the camera it was trained with. Here that camera is fixed: the
*canonical camera* (focal length and principal point at the network input, stored in the
checkpoint and the ONNX metadata). Any other camera's image is resized so that its focal length
becomes the canonical one and shifted so that its principal point lands on the canonical one
(the canonical camera space of Metric3D, Yin et al. 2023); canvas beyond the image is padding.
An object Z metres away then covers as many network pixels as it would in the canonical camera,
so depth needs no rescaling: the network's metres are the camera's metres. The output goes back
through the inverse map to the image's own pixels.

Pixel coordinates are continuous with pixel centres at i + 0.5, so a resize by ``s`` maps
``x`` to ``s * x`` exactly (the convention of OpenCV's resize).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ImageNet mean colour: the network's normalisation turns padding into zeros.
PAD_RGB = (124, 116, 104)


class CameraError(ValueError):
    """Intrinsics that cannot describe the image (non-positive focal length, no overlap)."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of an image of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_matrix(cls, K, width: int, height: int) -> "Intrinsics":
        """From a 3x3 K (or the left 3x3 of a 3x4 P), as in camera_info and KITTI calib files."""
        K = np.asarray(K, dtype=np.float64).reshape(3, -1)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   int(width), int(height)).validate()

    def validate(self) -> "Intrinsics":
        if not (np.isfinite([self.fx, self.fy, self.cx, self.cy]).all()
                and self.fx > 0 and self.fy > 0):
            raise CameraError(f"bad intrinsics fx={self.fx} fy={self.fy} cx={self.cx} "
                              f"cy={self.cy}: focal lengths must be positive and finite")
        if self.width <= 0 or self.height <= 0:
            raise CameraError(f"bad image size {self.width}x{self.height} for intrinsics")
        return self

    def resized(self, width: int, height: int) -> "Intrinsics":
        """The same camera after resizing its images to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, int(width), int(height))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Intrinsics":
        """The same camera after cropping its images to the box at (x0, y0)."""
        return Intrinsics(self.fx, self.fy, self.cx - x0, self.cy - y0, int(width), int(height))

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]])


# KITTI's left colour camera (image_02, 2011_09_26 rectified P_rect_02): the camera the shipped
# model and every model before the canonical camera was trained for.
KITTI_REFERENCE = Intrinsics(721.5377, 721.5377, 609.5593, 172.854, 1242, 375)


def unrectified(distortion, image_topic: str) -> bool:
    """True when a camera's distortion coefficients are not all zero and its image topic is not
    a rectified one (no ``rect`` in the name): the pinhole model would meet a distorted image."""
    return "rect" not in image_topic and any(float(c) != 0.0 for c in distortion)


def canonical_camera(model_config) -> Intrinsics:
    """The camera a model expects at its input size (``camera_*`` of its ModelConfig; zeros mean
    KITTI's camera resized to the input, which is what older models were trained with)."""
    c = model_config
    if getattr(c, "camera_fx", 0.0) > 0:
        return Intrinsics(c.camera_fx, c.camera_fy, c.camera_cx, c.camera_cy,
                          c.width, c.height).validate()
    return KITTI_REFERENCE.resized(c.width, c.height)


@dataclass(frozen=True)
class CanvasMap:
    """An image of ``width`` x ``height`` resized to ``rw`` x ``rh`` and placed at (``ox``, ``oy``)
    on the network canvas of ``cw`` x ``ch``; parts beyond the canvas are not seen and canvas
    pixels beyond the image are padding. ``zoom`` > 1: augmentation enlarged the image (depth
    labels divided by it)."""

    width: int
    height: int
    rw: int
    rh: int
    ox: int
    oy: int
    cw: int
    ch: int
    horizon: float | None = None  # canvas row (continuous) of the canonical principal point

    @property
    def is_plain_resize(self) -> bool:
        """The whole image fills the whole canvas: a plain resize, nothing padded or cut."""
        return (self.rw, self.rh, self.ox, self.oy) == (self.cw, self.ch, 0, 0)

    def overlap(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the canvas pixels that show the image."""
        return (max(self.ox, 0), max(self.oy, 0), min(self.ox + self.rw, self.cw),
                min(self.oy + self.rh, self.ch))

    def coverage(self) -> float:
        """Share of the image's pixels that the network sees."""
        x0, y0, x1, y1 = self.overlap()
        return max(0, x1 - x0) * max(0, y1 - y0) / float(self.rw * self.rh)

    def zoomed(self, s: float, px: float, py: float) -> "CanvasMap":
        """The image enlarged ``s`` times about canvas point (px, py) (augmentation)."""
        rw, rh = max(1, round(self.rw * s)), max(1, round(self.rh * s))
        return CanvasMap(self.width, self.height, rw, rh, round(px - (px - self.ox) * rw / self.rw),
                         round(py - (py - self.oy) * rh / self.rh), self.cw, self.ch,
                         self.horizon)


def canvas_map(width: int, height: int, canonical: Intrinsics,
               camera: Intrinsics | None = None) -> CanvasMap:
    """How an image of ``width`` x ``height`` from ``camera`` goes onto the canonical canvas.

    Without intrinsics the image is taken to show the canonical camera's view: a plain resize.
    """
    cw, ch = canonical.width, canonical.height
    if camera is None:
        return CanvasMap(width, height, cw, ch, 0, 0, cw, ch)
    cam = camera.validate()
    if (cam.width, cam.height) != (width, height):
        cam = cam.resized(width, height)  # e.g. camera_info of the full sensor, binned images
    rw = round(width * canonical.fx / cam.fx)
    rh = round(height * canonical.fy / cam.fy)
    if rw < 8 or rh < 8 or rw > 16 * cw or rh > 16 * ch:
        raise CameraError(f"focal length fx={cam.fx:.1f} px for a {width}x{height} image maps it "
                          f"to {rw}x{rh} network pixels; check the intrinsics (canonical "
                          f"fx={canonical.fx:.1f} at {cw}x{ch})")
    # principal points (continuous coordinates) onto each other
    ox = round((canonical.cx + 0.5) - (cam.cx + 0.5) * rw / width)
    oy = round((canonical.cy + 0.5) - (cam.cy + 0.5) * rh / height)
    cmap = CanvasMap(width, height, rw, rh, ox, oy, cw, ch, canonical.cy + 0.5)
    if cmap.coverage() <= 0:
        raise CameraError(f"principal point ({cam.cx:.1f}, {cam.cy:.1f}) puts the whole "
                          f"{width}x{height} image off the network's canvas; check the intrinsics")
    return cmap


def _resize(image: np.ndarray, w: int, h: int, dst: np.ndarray | None = None) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if image.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), dst=dst, interpolation=interp)


def to_canvas(rgb: np.ndarray, cmap: CanvasMap, dst: np.ndarray | None = None) -> np.ndarray:
    """The image on the network canvas (ch x cw x C, the image's dtype), padding in PAD_RGB."""
    if cmap.is_plain_resize:
        if rgb.shape[:2] == (cmap.ch, cmap.cw):
            return rgb
        return _resize(rgb, cmap.cw, cmap.ch, dst)
    out = dst if dst is not None else np.empty((cmap.ch, cmap.cw) + rgb.shape[2:], rgb.dtype)
    out[...] = np.asarray(PAD_RGB, dtype=rgb.dtype)[: rgb.shape[2]] if rgb.ndim == 3 else 0
    x0, y0, x1, y1 = cmap.overlap()
    resized = _resize(rgb, cmap.rw, cmap.rh)
    out[y0:y1, x0:x1] = resized[y0 - cmap.oy:y1 - cmap.oy, x0 - cmap.ox:x1 - cmap.ox]
    return out


def from_canvas(values: np.ndarray, cmap: CanvasMap, log: bool = True,
                fill: float | None = None) -> np.ndarray:
    """Network-size values (ch x cw) -> float32 image-size values (height x width).

    ``log``: resample in log space (depth). Image pixels the network did not see take the
    nearest seen value (``fill`` None) or ``fill`` (e.g. 0 confidence). Depth (``log``, no
    ``fill``) below the canvas follows a flat road from the last seen row instead: depth falls
    as 1 / (row - horizon), so a camera taller than the canvas gets near-road depth at its
    bottom rather than the last row's copied.
    """
    import cv2

    v = np.asarray(values, dtype=np.float32).reshape(values.shape[-2:])
    if log:
        v = np.log(np.maximum(v, np.float32(1e-6)))
    if not cmap.is_plain_resize:
        x0, y0, x1, y1 = cmap.overlap()
        crop = v[y0:y1, x0:x1]
        border = (y0 - cmap.oy, cmap.oy + cmap.rh - y1, x0 - cmap.ox, cmap.ox + cmap.rw - x1)
        if any(border):
            if fill is None:
                crop = cv2.copyMakeBorder(crop, *border, cv2.BORDER_REPLICATE)
                if log and border[1] > 0 and cmap.horizon is not None:
                    _road_below(crop, border[0] + (y1 - y0) - 1, y1 - 1, cmap.horizon)
            else:
                fv = float(np.log(max(fill, 1e-6))) if log else float(fill)
                crop = cv2.copyMakeBorder(crop, *border, cv2.BORDER_CONSTANT, value=fv)
        v = crop
    if v.shape != (cmap.height, cmap.width):
        v = cv2.resize(v, (cmap.width, cmap.height), interpolation=cv2.INTER_LINEAR)
    elif not log:
        v = v.copy()
    return np.exp(v, out=v) if log else v


def _road_below(logd: np.ndarray, last: int, last_row: int, horizon: float) -> None:
    """In place: rows of ``logd`` after index ``last`` (canvas row ``last_row``, the last one the
    network saw) get that row's log depth scaled as a flat road, depth ∝ 1 / (row - horizon),
    with pixel centres in canvas rows and ``horizon`` the principal point's row."""
    edge = last_row + 0.5 - horizon
    if edge <= 0:  # the canvas ends above the horizon: no road to follow
        return
    rows = last_row + 0.5 + np.arange(1, logd.shape[0] - last, dtype=np.float32)
    logd[last + 1:] = logd[last][None, :] + np.log(edge / (rows - horizon))[:, None]


def seen_mask(cmap: CanvasMap) -> np.ndarray:
    """bool height x width: the image pixels that reach the network's canvas."""
    m = np.zeros((cmap.ch, cmap.cw), np.float32)
    x0, y0, x1, y1 = cmap.overlap()
    m[y0:y1, x0:x1] = 1.0
    return from_canvas(m, cmap, log=False, fill=0.0) > 0.5


def sparse_to_canvas(depth: np.ndarray, cmap: CanvasMap) -> np.ndarray:
    """Sparse depth (height x width, 0 = none) onto the canvas without inventing values: each
    point lands on one canvas pixel, the nearest point wins. Depth values are unchanged."""
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    tu = np.floor((u + 0.5) * (cmap.rw / cmap.width)).astype(np.int64) + cmap.ox
    tv = np.floor((v + 0.5) * (cmap.rh / cmap.height)).astype(np.int64) + cmap.oy
    ok = (tu >= 0) & (tu < cmap.cw) & (tv >= 0) & (tv < cmap.ch)
    tu, tv, z = tu[ok], tv[ok], z[ok]
    out = np.zeros((cmap.ch, cmap.cw), np.float32)
    order = np.argsort(-z)
    out[tv[order], tu[order]] = z[order]
    return out
