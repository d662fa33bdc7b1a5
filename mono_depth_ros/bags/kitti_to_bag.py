"""``kitti_to_bag DRIVE_DIR OUT_BAG [--frames ...]``: a KITTI raw drive as a ROS 2 bag (MCAP).

Topics, frame ids and encoding are those of kitti2bag's master branch (tomas789/kitti2bag, also
its PyPI release 1.5, ``save_camera_data``), so launch files and RViz configurations work with
bags from either tool:

====================================== ========================= ==============================
topic                                  type                      frame id
====================================== ========================= ==============================
/kitti/camera_color_left/image_raw     sensor_msgs/Image bgr8    camera_color_left
/kitti/camera_color_left/camera_info   sensor_msgs/CameraInfo    camera_color_left
/kitti/velo/pointcloud                 sensor_msgs/PointCloud2   velo_link
/tf_static                             tf2_msgs/TFMessage        velo_link -> camera_gray_left,
                                                                 velo_link -> camera_color_left
====================================== ========================= ==============================

``camera_color_left`` is an optical frame (x right, y down, z forward) of the *rectified* camera 2
and ``camera_gray_left`` that of the rectified camera 0, as in kitti2bag (which roots its tree at
the IMU; only the LiDAR calibration is needed here, so the tree is rooted at ``velo_link``; the
camera poses are the same). REP 103 would call them ``*_optical``; the kitti2bag names are kept.
camera_info has ``P = P_rect_02`` as in kitti2bag (its 4th column is camera 2's offset from
camera 0, which /tf_static already applies), but ``K = P_rect_02[:3, :3]``, ``D = 0`` and
``R = R_rect_00``: kitti2bag's unrectified ``K_02``/``D_02`` do not describe the rectified image.
Image and camera_info of a frame share one stamp (image_02/timestamps.txt, or 10 Hz from the
frame index without it); the scan gets the same stamp, because the frames of a KITTI ``sync``
drive are already associated (``--velo-stamps`` keeps the scanner's own timestamps, as kitti2bag
does). Only this module writes bags; it never imports rclpy.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..kitti import find_raw_calib, read_rgb, read_timestamps, read_velodyne
from . import topics
from .pointcloud import XYZI_FIELDS, xyzi_to_cloud_fields

FALLBACK_PERIOD = 0.1  # s, KITTI's 10 Hz, used when a drive has no timestamps.txt
FALLBACK_EPOCH = 1.0   # s, keeps fallback stamps away from 0 ("unset" for many ROS tools)


class BagWriteError(RuntimeError):
    """The drive cannot be converted; the message says why in one line."""


@dataclass
class DriveFrame:
    index: int
    image: Path
    velodyne: Path | None
    stamp_ns: int
    velo_stamp_ns: int


@dataclass(frozen=True)
class CameraChange:
    """Another camera made from KITTI's: a centre crop to ``crop`` (w, h), then a resize by
    ``resize``; camera_info follows (principal point shifted by the crop, K scaled by the
    resize, P = K' [I | t] keeping P's offset t), so tools can be tried on another camera."""

    crop: tuple[int, int] | None = None
    resize: float = 1.0

    def _box(self, w: int, h: int) -> tuple[int, int, int, int]:
        if self.crop is None:
            return 0, 0, w, h
        cw, ch = self.crop
        if not (0 < cw <= w and 0 < ch <= h):
            raise BagWriteError(f"--crop {cw}x{ch} does not fit in a {w}x{h} image")
        return (w - cw) // 2, (h - ch) // 2, cw, ch

    def size(self, w: int, h: int) -> tuple[int, int]:
        _, _, cw, ch = self._box(w, h)
        return max(1, int(round(cw * self.resize))), max(1, int(round(ch * self.resize)))

    def image(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        x0, y0, cw, ch = self._box(w, h)
        out = rgb[y0:y0 + ch, x0:x0 + cw]
        if self.resize != 1.0:
            interp = cv2.INTER_AREA if self.resize < 1.0 else cv2.INTER_LINEAR
            out = cv2.resize(out, self.size(w, h), interpolation=interp)
        return np.ascontiguousarray(out)

    def projection(self, P: np.ndarray, w: int, h: int) -> np.ndarray:
        from ..geometry import scale_intrinsics

        P = np.asarray(P, dtype=np.float64).reshape(3, 4)
        t = np.linalg.solve(P[:, :3], P[:, 3])
        x0, y0, cw, ch = self._box(w, h)
        K = P[:, :3].copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        nw, nh = self.size(w, h)
        K = scale_intrinsics(K, nw / cw, nh / ch)
        return np.hstack([K, (K @ t)[:, None]])


def rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation -> (x, y, z, w), w >= 0 (Shepperd's method, stable near 180 degrees)."""
    R = np.asarray(R, dtype=np.float64)
    # re-orthonormalise: KITTI's R has ~1e-7 noise
    u, _, vt = np.linalg.svd(R)
    R = u @ vt
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, \
            (R[1, 0] - R[0, 1]) / s
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        w, x, y, z = (R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, \
            (R[0, 2] + R[2, 0]) / s
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        w, x, y, z = (R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, \
            (R[1, 2] + R[2, 1]) / s
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        w, x, y, z = (R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, \
            0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return tuple(float(v) for v in q)  # type: ignore[return-value]


def quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _stamps(path: Path) -> list[float] | None:
    if not path.is_file():
        return None
    return read_timestamps(path)


def list_frames(drive_dir: str | Path, frames: list[int] | None = None) -> list[DriveFrame]:
    """Frames of a raw drive that have an image_02 PNG (optionally only ``frames``), in order."""
    drive_dir = Path(drive_dir)
    img_dir = drive_dir / "image_02" / "data"
    if not img_dir.is_dir():
        raise BagWriteError(f"{drive_dir}: not a KITTI raw drive (no image_02/data folder)")
    available = {}
    for p in img_dir.glob("*.png"):
        if p.stem.isdigit():
            available[int(p.stem)] = p
    if frames:
        missing = sorted(set(frames) - set(available))
        if missing:
            raise BagWriteError(f"{drive_dir}: no image_02 PNG for frame(s) "
                                f"{', '.join(map(str, missing))}")
        wanted = sorted(set(frames))
    else:
        wanted = sorted(available)
    if not wanted:
        raise BagWriteError(f"{img_dir}: no frames")
    cam_ts = _stamps(drive_dir / "image_02" / "timestamps.txt")
    velo_ts = _stamps(drive_dir / "velodyne_points" / "timestamps.txt")
    out = []
    for i in wanted:
        t = cam_ts[i] if cam_ts is not None and i < len(cam_ts) else FALLBACK_EPOCH + \
            i * FALLBACK_PERIOD
        tv = velo_ts[i] if velo_ts is not None and i < len(velo_ts) else t
        velo = drive_dir / "velodyne_points" / "data" / f"{i:010d}.bin"
        out.append(DriveFrame(i, available[i], velo if velo.is_file() else None,
                              int(round(t * 1e9)), int(round(tv * 1e9))))
    return out


class _Msgs:
    """rosbags message factories: the kilted type store, or noetic's for a ROS 1 bag."""

    def __init__(self, ros1: bool = False):
        from rosbags.typesys import Stores, get_typestore

        self.ros1 = ros1
        self.ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_KILTED)
        if "tf2_msgs/msg/TFMessage" not in self.ts.types:  # the ROS 1 store lacks it
            from rosbags.typesys import get_types_from_msg

            self.ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms",
                                                "tf2_msgs/msg/TFMessage"))
        T = self.ts.types
        self.Time = T["builtin_interfaces/msg/Time"]
        self.Header = T["std_msgs/msg/Header"]
        self.Image = T["sensor_msgs/msg/Image"]
        self.CameraInfo = T["sensor_msgs/msg/CameraInfo"]
        self.Roi = T["sensor_msgs/msg/RegionOfInterest"]
        self.PointCloud2 = T["sensor_msgs/msg/PointCloud2"]
        self.PointField = T["sensor_msgs/msg/PointField"]
        self.TFMessage = T["tf2_msgs/msg/TFMessage"]
        self.TransformStamped = T["geometry_msgs/msg/TransformStamped"]
        self.Transform = T["geometry_msgs/msg/Transform"]
        self.Vector3 = T["geometry_msgs/msg/Vector3"]
        self.Quaternion = T["geometry_msgs/msg/Quaternion"]

    def header(self, stamp_ns: int, frame: str):
        kw = {"seq": 0} if self.ros1 else {}
        return self.Header(stamp=self.Time(sec=int(stamp_ns // 10**9),
                                           nanosec=int(stamp_ns % 10**9)), frame_id=frame, **kw)

    def serialize(self, msg, typ: str) -> bytes:
        return self.ts.serialize_ros1(msg, typ) if self.ros1 else self.ts.serialize_cdr(msg, typ)

    def image(self, rgb: np.ndarray, stamp_ns: int, frame: str):
        """bgr8, as kitti2bag writes colour frames (cv_bridge of an OpenCV image)."""
        h, w = rgb.shape[:2]
        return self.Image(header=self.header(stamp_ns, frame), height=h, width=w,
                          encoding="bgr8", is_bigendian=0, step=w * 3,
                          data=np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.uint8).reshape(-1))

    def camera_info(self, P: np.ndarray, R_rect: np.ndarray, width: int, height: int,
                    stamp_ns: int, frame: str):
        """K = P[:3, :3], D = 0, R = R_rect_00: the rectified image's camera (ROS 1: K D R P)."""
        arrays = {"d": np.zeros(5), "k": P[:, :3].reshape(-1).astype(np.float64),
                  "r": np.asarray(R_rect, dtype=np.float64).reshape(-1),
                  "p": P.reshape(-1).astype(np.float64)}
        if self.ros1:
            arrays = {k.upper(): v for k, v in arrays.items()}
        return self.CameraInfo(
            header=self.header(stamp_ns, frame), height=height, width=width,
            distortion_model="plumb_bob", binning_x=0, binning_y=0,
            roi=self.Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False), **arrays)

    def cloud(self, scan: np.ndarray, stamp_ns: int, frame: str):
        data, step, n = xyzi_to_cloud_fields(scan)
        fields = [self.PointField(name=name, offset=off, datatype=7, count=1)
                  for name, off in XYZI_FIELDS]
        return self.PointCloud2(header=self.header(stamp_ns, frame), height=1, width=n,
                                fields=fields, is_bigendian=False, point_step=step,
                                row_step=step * n, data=np.frombuffer(data, np.uint8),
                                is_dense=True)

    def tf_static(self, edges: list[tuple[np.ndarray, str, str]], stamp_ns: int):
        """One TFMessage of (T, parent, child) edges; T takes child points into the parent."""
        out = []
        for T, parent, child in edges:
            x, y, z, w = rotation_to_quaternion(T[:3, :3])
            t = T[:3, 3]
            out.append(self.TransformStamped(
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=self.Transform(translation=self.Vector3(x=float(t[0]), y=float(t[1]),
                                                                  z=float(t[2])),
                                         rotation=self.Quaternion(x=x, y=y, z=z, w=w))))
        return self.TFMessage(transforms=out)


def _writer(out_bag: Path, ros1: bool):
    if ros1:
        from rosbags.rosbag1 import Writer as Writer1

        return Writer1(out_bag)
    from rosbags.rosbag2 import StoragePlugin, Writer

    return Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP)


def convert(drive_dir: str | Path | list, out_bag: str | Path, frames: list[int] | None = None,
            velo_stamps: bool = False, progress: bool = True,
            camera: CameraChange | None = None, ros1: bool = False) -> dict:
    """Write the bag; returns a summary (frames, scans, first/last stamp, path).

    ``drive_dir`` may be a list of drives (of one date): their frames go into one bag in stamp
    order, e.g. the in-repo sample's drives 0001 and 0005 for the demo. ``camera`` turns KITTI's
    camera into another one (crop / resize); ``ros1`` writes a ROS 1 ``.bag`` file instead of a
    ROS 2 MCAP folder (same topics and frames).
    """
    camera = camera or CameraChange()

    from ..kitti import read_calib_file

    drives = [Path(d) for d in (drive_dir if isinstance(drive_dir, (list, tuple)) else
                                [drive_dir])]
    out_bag = Path(out_bag)
    if out_bag.exists():
        raise BagWriteError(f"{out_bag} already exists; remove it or pick another name")
    jobs = []  # (frame, calib, R_rect)
    for d in drives:
        calib = find_raw_calib(d)
        c2c = read_calib_file(d.parent / "calib_cam_to_cam.txt")
        R_rect = c2c.get("R_rect_00", np.eye(3).reshape(-1)).reshape(3, 3)
        jobs += [(f, calib, R_rect) for f in list_frames(d, frames)]
    jobs.sort(key=lambda j: j[0].stamp_ns)
    m = _Msgs(ros1)
    out_bag.parent.mkdir(parents=True, exist_ok=True)
    n_scans = 0
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc=f"kitti_to_bag {out_bag.name}", unit="frame")
    with _writer(out_bag, ros1) as writer:
        def conn(topic, typ):
            return writer.add_connection(topic, typ, typestore=m.ts)

        c_img = conn(topics.IMAGE_TOPIC, "sensor_msgs/msg/Image")
        c_info = conn(topics.CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo")
        c_velo = conn(topics.LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2")
        c_tf = conn(topics.TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage")

        def write(c, msg, typ, stamp_ns):
            writer.write(c, stamp_ns, m.serialize(msg, typ))

        first = min(min(f.stamp_ns, f.velo_stamp_ns if velo_stamps else f.stamp_ns)
                    for f, _, _ in jobs) - 2000
        # tf convention: the transform of (parent velo_link, child camera) takes camera points
        # into velo_link, i.e. the inverse of velo -> camera (as kitti2bag does)
        calib0 = jobs[0][1]
        write(c_tf, m.tf_static([
            (np.linalg.inv(calib0.velo_to_rect), topics.LIDAR_FRAME, topics.GRAY_FRAME),
            (np.linalg.inv(calib0.velo_to_cam_optical), topics.LIDAR_FRAME,
             topics.CAMERA_FRAME)], first), "tf2_msgs/msg/TFMessage", first)
        for f, calib, R_rect in iterator:
            rgb = read_rgb(f.image)
            h, w = rgb.shape[:2]
            if calib.image_size and calib.image_size != (w, h):
                raise BagWriteError(f"{f.image}: image is {w}x{h} but the calibration says "
                                    f"{calib.image_size[0]}x{calib.image_size[1]}")
            # camera_info is logged 1 us before its image (same header stamp), so a player
            # delivers it first and a depth node has the matching info when the image arrives
            P = camera.projection(calib.P_rect, w, h)
            rgb = camera.image(rgb)
            h, w = rgb.shape[:2]
            write(c_info, m.camera_info(P, R_rect, w, h, f.stamp_ns, topics.CAMERA_FRAME),
                  "sensor_msgs/msg/CameraInfo", f.stamp_ns - 1000)
            write(c_img, m.image(rgb, f.stamp_ns, topics.CAMERA_FRAME), "sensor_msgs/msg/Image",
                  f.stamp_ns)
            if f.velodyne is not None:
                t = f.velo_stamp_ns if velo_stamps else f.stamp_ns
                write(c_velo, m.cloud(read_velodyne(f.velodyne), t, topics.LIDAR_FRAME),
                      "sensor_msgs/msg/PointCloud2", t)
                n_scans += 1
    return {"bag": str(out_bag), "frames": [f.index for f, _, _ in jobs], "scans": n_scans,
            "first_stamp_ns": jobs[0][0].stamp_ns, "last_stamp_ns": jobs[-1][0].stamp_ns}


def _parse_frames(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    out: list[int] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kitti_to_bag", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("drive_dir", nargs="+", help="raw drive folder(s), e.g. "
                    "2011_09_26/2011_09_26_drive_0001_sync (the date folder above it holds "
                    "calib_*.txt); several drives go into one bag in stamp order")
    ap.add_argument("out_bag", help="output bag folder (ROS 2, MCAP); must not exist")
    ap.add_argument("--frames", nargs="+", help="frame indices: 5 50 100, or 0-20,40")
    ap.add_argument("--velo-stamps", action="store_true",
                    help="stamp scans with velodyne_points/timestamps.txt instead of the camera's")
    ap.add_argument("--crop", metavar="WxH", help="another camera: centre crop of W x H pixels "
                    "(camera_info's principal point shifted to match)")
    ap.add_argument("--resize", type=float, default=1.0, metavar="F",
                    help="another camera: resize by F after any crop (camera_info K scaled)")
    ap.add_argument("--ros1", action="store_true",
                    help="write a ROS 1 .bag file (OUT_BAG is the file) instead of a ROS 2 bag")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        crop = None
        if args.crop:
            try:
                cw, ch = (int(v) for v in args.crop.lower().split("x"))
            except ValueError:
                raise BagWriteError(f"--crop {args.crop}: expected WxH, e.g. 620x188") from None
            crop = (cw, ch)
        if not 0.05 <= args.resize <= 4.0:
            raise BagWriteError(f"--resize {args.resize}: expected a factor in [0.05, 4]")
        summary = convert(args.drive_dir, args.out_bag, _parse_frames(args.frames),
                          velo_stamps=args.velo_stamps, progress=not args.no_progress,
                          camera=CameraChange(crop, args.resize), ros1=args.ros1)
    except ValueError as exc:  # includes KittiFormatError and bad --frames
        print(f"kitti_to_bag: error: {exc}", file=sys.stderr)
        return 2
    except (BagWriteError, OSError) as exc:
        print(f"kitti_to_bag: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {summary['bag']}: {len(summary['frames'])} frames, "
          f"{summary['scans']} LiDAR scans")
    return 0


if __name__ == "__main__":
    sys.exit(main())
