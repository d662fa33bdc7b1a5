"""KITTI file formats: calibration files, velodyne scans, 16-bit depth PNGs, split lists.

Every reader raises ``KittiFormatError`` with one line naming the file and what is wrong, so
command-line tools can print it and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class KittiFormatError(ValueError):
    """A KITTI file is missing, truncated or malformed."""


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI ``key: v1 v2 ...`` calibration file into float arrays (text keys skipped)."""
    path = Path(path)
    if not path.is_file():
        raise KittiFormatError(f"calibration file not found: {path}")
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise KittiFormatError(f"{path}:{lineno}: expected 'key: values', got {line[:40]!r}")
        key, value = line.split(":", 1)
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            continue  # e.g. calib_time: 09-Jan-2012 13:57:47
    return out


def _matrix(calib: dict[str, np.ndarray], key: str, shape: tuple[int, int], path) -> np.ndarray:
    if key not in calib:
        raise KittiFormatError(f"{path}: missing '{key}'")
    v = calib[key]
    if v.size != shape[0] * shape[1]:
        raise KittiFormatError(f"{path}: '{key}' has {v.size} values, expected "
                               f"{shape[0] * shape[1]}")
    return v.reshape(shape)


def _pad4(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


@dataclass(frozen=True)
class CameraCalib:
    """What is needed to put LiDAR into image_02: ``P_rect`` (3x4) and ``velo_to_rect`` (4x4).

    ``velo_to_rect`` already contains the rectifying rotation, so that a velodyne point X maps to
    pixel ``P_rect @ velo_to_rect @ X``.
    """

    P_rect: np.ndarray
    velo_to_rect: np.ndarray
    image_size: tuple[int, int] | None = None  # (width, height) when the calib file gives it

    @property
    def K(self) -> np.ndarray:
        return self.P_rect[:, :3].copy()

    @property
    def velo_to_image(self) -> np.ndarray:
        """3x4 matrix taking homogeneous velodyne points to homogeneous pixels."""
        return self.P_rect @ self.velo_to_rect

    @property
    def cam_to_rect_offset(self) -> np.ndarray:
        """Translation of camera 2 relative to the reference rectified camera (from P_rect)."""
        fx, fy = self.P_rect[0, 0], self.P_rect[1, 1]
        cx, cy = self.P_rect[0, 2], self.P_rect[1, 2]
        tz = self.P_rect[2, 3]
        tx = (self.P_rect[0, 3] - cx * tz) / fx
        ty = (self.P_rect[1, 3] - cy * tz) / fy
        return np.array([tx, ty, tz])

    @property
    def velo_to_cam_optical(self) -> np.ndarray:
        """4x4 transform from velodyne to camera 2's optical frame (REP 103 ``*_optical``)."""
        T = self.velo_to_rect.copy()
        T[:3, 3] += self.cam_to_rect_offset
        return T


def read_raw_calib(cam_to_cam: str | Path, velo_to_cam: str | Path, cam: int = 2) -> CameraCalib:
    """Raw-drive calibration: ``P_rect_0{cam}``, ``R_rect_00`` and velo->cam ``R|T``."""
    c2c = read_calib_file(cam_to_cam)
    v2c = read_calib_file(velo_to_cam)
    P = _matrix(c2c, f"P_rect_0{cam}", (3, 4), cam_to_cam)
    R0 = _pad4(_matrix(c2c, "R_rect_00", (3, 3), cam_to_cam))
    R = _matrix(v2c, "R", (3, 3), velo_to_cam)
    T = _matrix(v2c, "T", (3, 1), velo_to_cam)
    size = c2c.get(f"S_rect_0{cam}")
    image_size = (int(size[0]), int(size[1])) if size is not None and size.size == 2 else None
    return CameraCalib(P, R0 @ _pad4(np.hstack([R, T])), image_size)


def read_object_calib(path: str | Path) -> CameraCalib:
    """Object-benchmark calibration: ``P2``, ``R0_rect``, ``Tr_velo_to_cam``."""
    c = read_calib_file(path)
    P = _matrix(c, "P2", (3, 4), path)
    R0 = _pad4(_matrix(c, "R0_rect", (3, 3), path))
    Tr = _pad4(_matrix(c, "Tr_velo_to_cam", (3, 4), path))
    return CameraCalib(P, R0 @ Tr)


def read_stereo_baseline(cam_to_cam: str | Path,
                         keys: tuple[str, str] = ("P_rect_02", "P_rect_03")
                         ) -> tuple[float, float]:
    """(fx, baseline in metres) between image_02 and image_03, for disparity -> depth; ``keys``
    name the two projection matrices (``("P2", "P3")`` in an object-benchmark calib file)."""
    c2c = read_calib_file(cam_to_cam)
    P2 = _matrix(c2c, keys[0], (3, 4), cam_to_cam)
    P3 = _matrix(c2c, keys[1], (3, 4), cam_to_cam)
    fx = P2[0, 0]
    return fx, (P2[0, 3] - P3[0, 3]) / fx


def find_raw_calib(drive_dir: str | Path) -> CameraCalib:
    """Calibration of a raw drive directory (the date's files sit in its parent folder)."""
    drive_dir = Path(drive_dir)
    date_dir = drive_dir.parent
    return read_raw_calib(date_dir / "calib_cam_to_cam.txt", date_dir / "calib_velo_to_cam.txt")


# --------------------------------------------------------------------------------------------
# Scans and images
# --------------------------------------------------------------------------------------------

def read_velodyne(path: str | Path) -> np.ndarray:
    """Velodyne scan as float32 Nx4 (x, y, z, reflectance) in the velodyne frame."""
    path = Path(path)
    if not path.is_file():
        raise KittiFormatError(f"velodyne scan not found: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size == 0 or raw.size % 4:
        raise KittiFormatError(f"{path}: {raw.size * 4} bytes is not a whole number of "
                               "16-byte (x, y, z, reflectance) points; the scan is truncated")
    return raw.reshape(-1, 4)


def _imread(path: Path, flags: int):
    """cv2.imread without OpenCV's own log lines: callers report a failure in one line."""
    import cv2

    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        return cv2.imread(str(path), flags)
    finally:
        log.setLogLevel(level)


def read_rgb(path: str | Path) -> np.ndarray:
    """Image file as uint8 HxWx3 RGB."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise KittiFormatError(f"image not found: {path}")
    bgr = _imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise KittiFormatError(f"{path}: not a readable image (corrupt or unsupported format)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_depth_png(path: str | Path) -> np.ndarray:
    """KITTI depth-benchmark PNG (uint16, metres x 256, 0 = invalid) as float32 metres."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise KittiFormatError(f"depth PNG not found: {path}")
    raw = _imread(path, cv2.IMREAD_ANYDEPTH)
    if raw is None:
        raise KittiFormatError(f"{path}: not a readable PNG (corrupt or truncated)")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise KittiFormatError(f"{path}: depth PNGs must be single-channel 16-bit, got "
                               f"{raw.dtype} with shape {raw.shape}")
    return raw.astype(np.float32) / 256.0


def write_depth_png(path: str | Path, depth_m: np.ndarray) -> None:
    """Write metres in the KITTI uint16 PNG convention (x256, 0 = invalid, max 255.99 m)."""
    import cv2

    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    raw = np.clip(np.round(d * 256.0), 0, 65535).astype(np.uint16)
    if not cv2.imwrite(str(path), raw):
        raise OSError(f"could not write {path}")


def read_disparity_depth(path: str | Path, fx: float, baseline: float) -> np.ndarray:
    """Stereo-benchmark disparity PNG (pixels x 256, 0 = invalid) converted to metres."""
    disp = read_depth_png(path)  # same uint16 / 256 encoding
    depth = np.zeros_like(disp)
    valid = disp > 0
    depth[valid] = fx * baseline / disp[valid]
    return depth


def read_timestamps(path: str | Path) -> list[float]:
    """KITTI ``timestamps.txt`` (``YYYY-MM-DD HH:MM:SS.fffffffff``) as POSIX seconds (UTC)."""
    import datetime as dt

    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))?", line)
        if not m:
            raise KittiFormatError(f"{path}:{lineno}: not a KITTI timestamp: {line[:40]!r}")
        base = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=dt.timezone.utc)
        frac = float("0." + m.group(2)) if m.group(2) else 0.0
        out.append(base.timestamp() + frac)
    return out


# --------------------------------------------------------------------------------------------
# Split lists and the Eigen test scenes
# --------------------------------------------------------------------------------------------

_DRIVE_RE = re.compile(r"(20\d\d_\d\d_\d\d_drive_\d{4})")


def drive_of(path_or_line: str) -> str | None:
    """The raw drive name (``2011_09_26_drive_0001``) mentioned in a path or list line."""
    m = _DRIVE_RE.search(path_or_line)
    return m.group(1) if m else None


def read_test_scenes(path: str | Path) -> set[str]:
    """The 28 Eigen test scenes (``sfmlearner/test_scenes.txt``) as drive names."""
    path = Path(path)
    if not path.is_file():
        raise KittiFormatError(f"Eigen test-scene list not found: {path}")
    scenes = {drive_of(line) for line in path.read_text().splitlines() if line.strip()}
    scenes.discard(None)
    if not scenes:
        raise KittiFormatError(f"{path}: no drive names found")
    return scenes  # type: ignore[return-value]


@dataclass(frozen=True)
class SplitEntry:
    """One line of a monodepth2 split list: ``2011_09_26/2011_09_26_drive_0001_sync 5 l``."""

    folder: str
    frame: int
    side: str

    @property
    def drive(self) -> str | None:
        return drive_of(self.folder)

    def image_path(self, root: Path) -> Path:
        cam = "image_02" if self.side == "l" else "image_03"
        return root / self.folder / cam / "data" / f"{self.frame:010d}.png"

    def velodyne_path(self, root: Path) -> Path:
        return root / self.folder / "velodyne_points" / "data" / f"{self.frame:010d}.bin"


def read_split(path: str | Path) -> list[SplitEntry]:
    """Read a split list in the monodepth2 format; an empty or malformed list is an error."""
    path = Path(path)
    if not path.is_file():
        raise KittiFormatError(f"split list not found: {path}")
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2] not in ("l", "r") or not parts[1].isdigit():
            raise KittiFormatError(f"{path}:{lineno}: expected 'FOLDER FRAME l|r', got "
                                   f"{line[:60]!r}")
        entries.append(SplitEntry(parts[0], int(parts[1]), parts[2]))
    if not entries:
        raise KittiFormatError(f"{path}: the split list is empty")
    return entries
