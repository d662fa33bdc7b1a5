"""PointCloud2 <-> numpy without ROS. Works on rosbags messages and rclpy messages alike (both
have ``fields``, ``point_step``, ``width``, ``height``, ``is_bigendian`` and ``data``)."""

from __future__ import annotations

import numpy as np

# sensor_msgs/PointField datatypes
_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
FLOAT32 = 7

XYZI_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("intensity", 12))


class PointCloudError(ValueError):
    """A PointCloud2 message lacks x/y/z or its data does not match its layout."""


def cloud_to_xyz(msg, with_intensity: bool = False) -> np.ndarray:
    """Nx3 (or Nx4 with intensity, 0 where absent) float64 array; NaN points are dropped."""
    fields = {f.name: f for f in msg.fields}
    for name in ("x", "y", "z"):
        if name not in fields:
            raise PointCloudError(f"PointCloud2 has no '{name}' field (fields: "
                                  f"{', '.join(fields) or 'none'})")
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data,
                        dtype=np.uint8)
    if n == 0:
        return np.zeros((0, 4 if with_intensity else 3))
    if buf.size < n * step:
        raise PointCloudError(f"PointCloud2 data has {buf.size} bytes, expected {n * step} "
                              f"({n} points x {step})")
    order = ">" if msg.is_bigendian else "<"
    names = ["x", "y", "z"] + (["intensity"] if with_intensity and "intensity" in fields else [])
    dt = np.dtype({"names": names,
                   "formats": [order + _DTYPES[fields[k].datatype] for k in names],
                   "offsets": [fields[k].offset for k in names], "itemsize": step})
    rec = buf[: n * step].view(dt)
    cols = [rec[k].astype(np.float64) for k in names]
    if with_intensity and "intensity" not in fields:
        cols.append(np.zeros(n))
    out = np.stack(cols, axis=1)
    return out[np.all(np.isfinite(out[:, :3]), axis=1)]


def xyzi_to_cloud_fields(scan: np.ndarray) -> tuple[bytes, int, int]:
    """(data, point_step, width) of a float32 x y z intensity cloud, little-endian."""
    arr = np.ascontiguousarray(np.asarray(scan, dtype="<f4")[:, :4])
    return arr.tobytes(), 16, arr.shape[0]
