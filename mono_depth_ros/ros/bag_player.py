"""``kitti_bag_player BAG [--rate R] [--loop]``: publish a bag's topics over DDS with their recorded
stamps, at R x real time, with a progress bar. ``ros2 bag play`` does the same where rosbag2 is
installed (``ros2 bag play BAG --rate R [--loop]``); this player exists because rosbag2 is not on
PyPI, and it also plays ROS 1 bags from kitti2bag (converted message by message).

Every topic is played as recorded. The camera is also played under the names the graph listens on
(``--image-topic``/``--camera-info-topic``, default kitti2bag master's) when the bag has it under
another name (the ``image_rect_color`` and old ``image`` layouts): ``--camera`` names it, else it is
found (``bags/topics.py``); the chosen topics are printed.

Publishers are reliable + volatile (they reach best-effort and reliable subscribers alike);
``/tf_static`` is transient-local, as tf2 expects. Topics whose message package is not installed
(e.g. tf2_msgs on a pip-only machine) are skipped with one warning.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from ..bags.reader import BagError, deserialize, iter_messages, open_bag
from ..bags.topics import (TopicChoiceError, camera_candidates, camera_info_sibling,
                           choose_camera)
from ..config import BagPlayerConfig, ConfigError, KittiTopicsConfig, add_arguments, from_args

WAIT_FOR = ("sensor_msgs/msg/Image", "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/CameraInfo")


def message_class(msgtype: str):
    """rclpy class of ``pkg/msg/Name`` (ROS 1 ``pkg/Name`` too), or None if not installed."""
    parts = msgtype.split("/")
    pkg, name = parts[0], parts[-1]
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def to_rclpy(src, cls):
    """Copy a rosbags message (ROS 1 or 2 field names) into a new rclpy message of ``cls``."""
    import numpy as np

    dst = cls()
    for fname, ftype in dst.get_fields_and_field_types().items():
        val = None
        for cand in (fname, fname.upper(), {"sec": "secs", "nanosec": "nsecs"}.get(fname, fname)):
            if hasattr(src, cand):
                val = getattr(src, cand)
                break
        if val is None:
            continue
        cur = getattr(dst, fname)
        if hasattr(cur, "get_fields_and_field_types"):  # nested message
            setattr(dst, fname, to_rclpy(val, type(cur)))
        elif ftype.startswith("sequence<") and "/" in ftype:  # sequence of messages
            inner = ftype[len("sequence<"):-1].split(",")[0]
            icls = message_class(inner.replace("/", "/msg/", 1) if "/msg/" not in inner else inner)
            setattr(dst, fname, [to_rclpy(v, icls) for v in val])
        elif isinstance(val, np.ndarray):
            if fname == "data" and ftype.startswith("sequence<uint8"):
                setattr(dst, fname, val.tobytes())
            else:
                setattr(dst, fname, val.tolist() if ftype.startswith("sequence") else val)
        else:
            if fname == "is_bigendian" and isinstance(cur, bool):
                val = bool(val)
            setattr(dst, fname, val)
    return dst


class BagPlayer:
    """Streams one bag through rclpy publishers (the node is created by the caller)."""

    def __init__(self, node, bag: str | Path, cfg: BagPlayerConfig, stop=None,
                 topics: KittiTopicsConfig | None = None):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from .lifecycle import StopSignals

        self.node, self.bag, self.cfg = node, Path(bag), cfg
        self.topics = topics or KittiTopicsConfig()
        self.stop = stop or StopSignals()  # playing ends when it is set (lifecycle's flag)
        self.pubs: dict[str, tuple] = {}
        self.aliases: dict[str, object] = {}  # bag topic -> publisher of the graph's name
        self.published = 0
        with open_bag(self.bag) as reader:
            self.total = reader.message_count
            self.is_ros2 = bool(getattr(reader, "is2", True))
            conns = list(reader.connections)
        self.camera, self.camera_note = self._choose_camera({c.topic: c.msgtype for c in conns})

        def qos_for(topic):
            latched = topic in ("/tf_static",) or topic.endswith("/tf_static")
            return QoSProfile(depth=1 if latched else cfg.qos_depth,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                              else DurabilityPolicy.VOLATILE)

        for c in conns:
            if c.topic in self.pubs:
                continue
            cls = message_class(c.msgtype)
            if cls is None:
                node.get_logger().warning(f"skipping {c.topic}: message type {c.msgtype} is not "
                                          "installed here")
                continue
            self.pubs[c.topic] = (node.create_publisher(cls, c.topic, qos_for(c.topic)), cls,
                                  c.msgtype)
        for src, dst in zip(self.camera, (self.topics.image_topic,
                                          self.topics.camera_info_topic)):
            if src != dst and src in self.pubs:
                self.aliases[src] = node.create_publisher(self.pubs[src][1], dst, qos_for(dst))

    def _choose_camera(self, types: dict[str, str]) -> tuple[tuple[str, ...], str]:
        """((image, camera_info) bag topics of the camera, one line): ``cfg.camera`` when given,
        the graph's ``image_topic`` when the bag has it, else the camera found in the bag; played
        also under the graph's names when they differ. No camera at all: () and a note."""
        t = self.topics
        if not self.cfg.camera and not camera_candidates(types) and t.image_topic not in types:
            return (), f"camera: none in the bag (no {t.image_topic})"
        try:
            if self.cfg.camera:
                img, info, note = choose_camera(types, self.cfg.camera,
                                                camera_info_sibling(self.cfg.camera),
                                                explicit=True, where=str(self.bag))
            else:
                img, info, note = choose_camera(types, t.image_topic, t.camera_info_topic,
                                                where=str(self.bag))
        except TopicChoiceError as exc:
            raise BagError(f"{exc}".replace("--image-topic", "--camera")) from None
        if img != t.image_topic:
            note += f", played also as {t.image_topic} + {t.camera_info_topic}"
        return (img, info), note

    def wait_for_subscribers(self) -> bool:
        """Until the camera (under the graph's names) and the LiDAR topic have subscribers."""
        need = self.cfg.wait_for_subscribers
        if need <= 0:
            return True
        graph = [self.topics.image_topic, self.topics.camera_info_topic, self.topics.lidar_topic]
        watched = [p for p in self.aliases.values()] + [
            self.pubs[n][0] for n in graph if n in self.pubs and n not in self.aliases]
        deadline = time.monotonic() + self.cfg.wait_timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() >= need for p in watched):
                return True
            if self.stop.wait(0.05):
                return False
        self.node.get_logger().warning("timed out waiting for subscribers; playing anyway")
        return False

    def play_once(self, progress=None) -> int:
        n = 0
        t_bag0 = t_prev = None
        skipped = 0.0
        t_wall0 = time.monotonic()
        with open_bag(self.bag) as reader:
            topics = list(self.pubs)
            for conn, t, raw in iter_messages(reader, topics):
                if self.stop.requested:
                    break
                if t_bag0 is None:
                    t_bag0 = t
                gap = (t - t_prev) * 1e-9 if t_prev is not None else 0.0
                if self.cfg.max_gap > 0 and gap > self.cfg.max_gap:
                    skipped += gap - self.cfg.max_gap  # jump over pauses between frames
                t_prev = t
                due = t_wall0 + ((t - t_bag0) * 1e-9 - skipped) / self.cfg.rate
                delay = due - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
                pub, cls, _ = self.pubs[conn.topic]
                # ROS 2: already CDR with the recorded header
                msg = bytes(raw) if self.is_ros2 else to_rclpy(deserialize(reader, raw, conn),
                                                               cls)
                pub.publish(msg)
                if conn.topic in self.aliases:
                    self.aliases[conn.topic].publish(msg)
                n += 1
                self.published += 1
                if progress is not None:
                    progress.update(1)
        return n


def main(argv: list[str] | None = None) -> int:
    """Console script: play the bag (``--loop``: until SIGINT/SIGTERM), then exit 0; a stop signal
    at any moment exits 0 too (``lifecycle``)."""
    from . import lifecycle

    stop = lifecycle.install()
    ap = argparse.ArgumentParser(prog="kitti_bag_player", description=__doc__.splitlines()[0])
    ap.add_argument("bag", help="ROS 2 bag folder / .mcap, or ROS 1 .bag (kitti2bag)")
    add_arguments(ap, BagPlayerConfig)
    add_arguments(ap, KittiTopicsConfig, skip=("tf_static_topic", "camera_frame", "lidar_frame"))
    args, ros_args = ap.parse_known_args(argv)
    try:
        cfg = from_args(BagPlayerConfig, args)
        topics = from_args(KittiTopicsConfig, args)
    except ConfigError as exc:
        print(f"kitti_bag_player: error: {exc}", file=sys.stderr)
        return 2
    from rclpy.node import Node

    lifecycle.init(["kitti_bag_player", *ros_args])
    # in a thread: creating the DDS participant takes ~0.7 s, and a signal meanwhile must not
    # wait for it (Python runs handlers in the main thread, between bytecodes)
    node = lifecycle.build(lambda: Node("kitti_bag_player"), stop)
    rc = 0
    try:
        # opening and indexing the bag is start-up: a signal meanwhile still exits at once
        player = lifecycle.build(lambda: BagPlayer(node, args.bag, cfg, stop, topics), stop)
        stop.defer()
        print(f"kitti_bag_player: playing {args.bag} ({player.total} messages) x{cfg.rate:g}"
              f"{', looping' if cfg.loop else ''}; {player.camera_note}", flush=True)
        player.wait_for_subscribers()
        stop.wait(cfg.start_delay)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=None if cfg.loop else player.total, unit="msg",
                       desc=f"playing {Path(args.bag).name} x{cfg.rate:g}",
                       disable=not sys.stderr.isatty() and os.environ.get("TQDM_FORCE") != "1")
        while not stop.requested:
            player.play_once(bar)
            if not cfg.loop:
                break
        if bar is not None:
            bar.close()
        node.get_logger().info(f"published {player.published} messages")
        stop.wait(0.5)  # let reliable writers deliver the last samples
    except BagError as exc:
        print(f"kitti_bag_player: error: {exc}", file=sys.stderr, flush=True)
        rc = 2
    lifecycle.finish(None, [node], code=rc)
    lifecycle.exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
