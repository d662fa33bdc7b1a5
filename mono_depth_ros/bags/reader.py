"""Reading KITTI bags: ROS 2 (MCAP / sqlite3, e.g. from kitti_to_bag) and ROS 1 (kitti2bag).

``rosbags.highlevel.AnyReader`` opens either kind and deserialises with the bag's own message
definitions, so ROS 1 field names (``K``, ``P``) and ROS 2 ones (``k``, ``p``) are both handled
here. Every failure to open or read a bag becomes ``BagError`` with one line of text.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..config import KittiTopicsConfig
from .kitti_to_bag import quaternion_to_rotation
from .pointcloud import PointCloudError, cloud_to_xyz


class BagError(RuntimeError):
    """A bag is missing, truncated, of an unknown format, or lacks the expected topics."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@contextlib.contextmanager
def open_bag(path: str | Path):
    """AnyReader over ``path`` (a ROS 2 bag folder, its .mcap/.db3 file, or a ROS 1 .bag)."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    paths = [path]
    if path.is_file() and path.suffix in (".mcap", ".db3") and \
            (path.parent / "metadata.yaml").is_file():
        paths = [path.parent]
    try:
        reader = AnyReader(paths)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for broken files
        raise BagError(f"cannot open bag {path}: {_short(exc)} (truncated, or not a ROS bag?)") \
            from None
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def iter_messages(reader, topics: list[str] | None = None) -> Iterator[tuple]:
    """(connection, timestamp_ns, rawdata) in log-time order; a read failure becomes BagError."""
    conns = [c for c in reader.connections if topics is None or c.topic in topics]
    it = reader.messages(connections=conns)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"bag is truncated or corrupt: {_short(exc)}") from None
        yield item


def deserialize(reader, rawdata, connection):
    try:
        return reader.deserialize(rawdata, connection.msgtype)
    except Exception as exc:  # noqa: BLE001
        raise BagError(f"cannot decode a {connection.msgtype} message on {connection.topic}: "
                       f"{_short(exc)}") from None


# --------------------------------------------------------------------------------------------
# Field access that works for ROS 1 and ROS 2 messages (rosbags or rclpy)
# --------------------------------------------------------------------------------------------

def _get(msg, name: str):
    for n in (name, name.upper(), name.lower()):
        if hasattr(msg, n):
            return getattr(msg, n)
    raise AttributeError(name)


def stamp_ns(msg) -> int:
    """header.stamp in nanoseconds (ROS 2 ``sec/nanosec``, ROS 1 ``sec/nanosec`` in rosbags)."""
    st = msg.header.stamp
    sec = getattr(st, "sec", None)
    if sec is None:
        sec = getattr(st, "secs")
    nsec = getattr(st, "nanosec", None)
    if nsec is None:
        nsec = getattr(st, "nsecs", 0)
    return int(sec) * 10**9 + int(nsec)


def camera_matrices(info) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(K 3x3 rectified intrinsics = P[:3, :3], P 3x4, width, height) of a CameraInfo."""
    P = np.asarray(_get(info, "p"), dtype=np.float64).reshape(3, 4)
    K = P[:, :3].copy()
    if not np.any(K):
        K = np.asarray(_get(info, "k"), dtype=np.float64).reshape(3, 3)
    return K, P, int(info.width), int(info.height)


def image_to_rgb(msg) -> np.ndarray:
    """uint8 HxWx3 RGB of an Image message: the depth node's own decoder (ros.conversions, which
    needs the sensor_msgs package but not rclpy), so offline and live runs see the same pixels."""
    from ..ros.conversions import ImageFormatError, image_to_rgb as _decode

    try:
        return _decode(msg)
    except ImageFormatError as exc:
        raise BagError(f"image at {stamp_ns(msg)} ns: {exc}") from None


def transform_to_matrix(tr) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 (maps child-frame points into the parent frame)."""
    q, t = tr.rotation, tr.translation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(q.x, q.y, q.z, q.w)
    T[:3, 3] = [t.x, t.y, t.z]
    return T


class TfStaticBuffer:
    """Static transforms by (parent, child); ``lookup(target, source)`` chains them.

    ``lookup(target, source)`` returns the 4x4 taking points in ``source`` to ``target`` (the
    tf2 convention of ``lookupTransform(target, source)``).
    """

    def __init__(self):
        self.edges: dict[tuple[str, str], np.ndarray] = {}

    def add_message(self, tf_msg) -> None:
        for t in tf_msg.transforms:
            parent = t.header.frame_id.lstrip("/")
            child = t.child_frame_id.lstrip("/")
            self.edges[(parent, child)] = transform_to_matrix(t.transform)

    def frames(self) -> set[str]:
        return {f for edge in self.edges for f in edge}

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        graph: dict[str, list[tuple[str, np.ndarray]]] = {}
        for (p, c), T in self.edges.items():
            # T maps child points into parent
            graph.setdefault(c, []).append((p, T))
            graph.setdefault(p, []).append((c, np.linalg.inv(T)))
        # breadth-first from source, accumulating source->node
        seen = {source: np.eye(4)}
        queue = [source]
        while queue:
            node = queue.pop(0)
            for nxt, T in graph.get(node, []):
                if nxt not in seen:
                    seen[nxt] = T @ seen[node]
                    if nxt == target:
                        return seen[nxt]
                    queue.append(nxt)
        return None


# --------------------------------------------------------------------------------------------
# Evaluation frames
# --------------------------------------------------------------------------------------------

@dataclass
class EvalFrame:
    """One camera frame of a bag with what is needed to score a prediction on it."""

    stamp_ns: int
    rgb: np.ndarray
    K: np.ndarray
    width: int
    height: int
    camera_frame: str                       # header frame of the image and camera_info
    points: np.ndarray | None = None        # Nx3 LiDAR points in the LiDAR frame
    lidar_frame: str | None = None
    extra: dict = field(default_factory=dict)
    P: np.ndarray | None = None             # camera_info.P (3x4)


@dataclass
class BagContents:
    frames: list[EvalFrame]
    tf: TfStaticBuffer
    unmatched_images: int
    unmatched_scans: int
    topics: dict[str, int]
    camera_note: str = ""                   # which camera topics were used, and why


def read_eval_frames(path: str | Path, topics: KittiTopicsConfig | None = None,
                     slop: float = 0.0, explicit: bool = False) -> BagContents:
    """Images + camera_info + LiDAR of a KITTI bag matched by stamp (exact, or within ``slop``).

    Every image with a camera_info of the same stamp becomes a frame; the LiDAR scan whose stamp
    matches (exactly, or nearest within ``slop`` seconds) is attached to it. Without the
    configured camera topics (and unless ``explicit``), the bag's camera is found by
    ``topics.choose_camera``; ``camera_note`` says which.
    """
    from .. import sync
    from .topics import TopicChoiceError, choose_camera

    topics = topics or KittiTopicsConfig()
    images: dict[int, object] = {}
    infos: dict[int, object] = {}
    scans: dict[int, object] = {}
    tf = TfStaticBuffer()
    with open_bag(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        try:
            image_topic, info_topic, note = choose_camera(
                types, topics.image_topic, topics.camera_info_topic, explicit, where=str(path))
        except TopicChoiceError as exc:
            raise BagError(str(exc)) from None
        wanted = [image_topic, info_topic, topics.lidar_topic, topics.tf_static_topic]
        counts = {t: 0 for t in wanted if t in types}
        for conn, _t, raw in iter_messages(reader, wanted):
            msg = deserialize(reader, raw, conn)
            counts[conn.topic] += 1
            if conn.topic == topics.tf_static_topic:
                tf.add_message(msg)
            elif conn.topic == image_topic:
                images[stamp_ns(msg)] = msg
            elif conn.topic == info_topic:
                infos[stamp_ns(msg)] = msg
            else:
                scans[stamp_ns(msg)] = msg
    frames = []
    used_scans = set()
    scan_stamps = sorted(scans)
    for st in sorted(images):
        info = infos.get(st)
        if info is None:
            continue
        img = images[st]
        K, P, w, h = camera_matrices(info)
        frame = EvalFrame(st, image_to_rgb(img), K, w, h, info.header.frame_id.lstrip("/")
                          or img.header.frame_id.lstrip("/"), P=P)
        match = sync.nearest_stamp(scan_stamps, st, int(round(slop * 1e9)))
        if match is not None and match not in used_scans:
            used_scans.add(match)
            try:
                frame.points = cloud_to_xyz(scans[match])
            except PointCloudError as exc:
                raise BagError(f"{path}: LiDAR scan at {match} ns: {exc}") from None
            frame.lidar_frame = scans[match].header.frame_id.lstrip("/")
        frames.append(frame)
    if not frames:
        raise BagError(f"{path}: no image with a camera_info of the same stamp on "
                       f"{image_topic} / {info_topic}")
    return BagContents(frames, tf, sum(f.points is None for f in frames),
                       len(scans) - len(used_scans), counts, note)
