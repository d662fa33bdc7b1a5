"""``kitti_eval_node``: live Eigen metrics of the depth node's output against the LiDAR.

Subscribes (relative names, remap them): ``depth`` (sensor_msgs/Image 32FC1 metres or 16UC1 mm),
``depth/camera_info``, ``lidar_points`` (sensor_msgs/PointCloud2 with x, y, z). Depth and LiDAR
are matched by stamp in a bounded buffer (``mono_depth_ros.sync``; exact stamps unless ``slop`` >
0); the camera_info of the same stamp is used, else the newest one of the same size (counted as
``info_stamp_mismatch``).
Each matched frame: the scan is projected into the depth image with ``camera_info.P[:3, :3]`` and
the LiDAR -> camera extrinsic (``calib_dir`` parameter, else ``/tf_static`` when tf2_msgs is
installed), then scored by ``metrics.score_frame`` (median-scaled and metric), the same code as
``evaluate_bag`` and ``training.evaluate``.

Publishes ``/diagnostics`` (running summary, unmatched counts) every ``summary_period`` seconds.
Service ``~/write_report`` (std_srvs/Trigger) writes ``metrics.json``, ``metrics.csv``,
``error_vs_distance.csv`` and plots into ``output_dir``; the same happens on shutdown.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import typing

from ..config import ConfigError, EvalNodeConfig, check_value, from_dict
from ..lidar_eval import (EvalRecorder, calib_velo_to_cam, format_table, frame_to_camera,
                          lidar_depth)
from ..sync import StampSynchronizer
from .conversions import stamp_ns

INPUTS = ("depth", "lidar_points")  # synchronised by stamp; camera_info is looked up
# s after the stop signal: plots not drawn by then are left out, so the node exits within 2 s
PLOTS_WITHIN = 1.0
RELAY_CHECK = 0.5  # s between looks for a camera to relay (relay_camera_to)
RELAY_PATIENCE = 5.0  # s without any camera before the node says so


def declare_config(node, cls, prefix: str = ""):
    """Declare one ROS parameter per dataclass field (descriptions from the field metadata)."""
    from rcl_interfaces.msg import ParameterDescriptor

    values = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        desc = ParameterDescriptor(description=f.metadata.get("help", ""),
                                   read_only=bool(f.metadata.get("read_only")))
        if hints[f.name] is float:
            default = float(default)
        p = node.declare_parameter(prefix + f.name, default, desc)
        values[f.name] = check_value(cls, f.name, p.value)
    return from_dict(cls, values)


class KittiEvalNode:
    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_srvs.srv import Trigger

        self.node = node
        self.log = node.get_logger()
        self.cfg = declare_config(node, EvalNodeConfig)
        self.recorder = EvalRecorder(self.cfg.eval_config(), self.cfg.distance_bin)
        self.sync = StampSynchronizer(2, self.cfg.queue_size, int(round(self.cfg.slop * 1e9)),
                                      self._on_frame)
        # camera_info by stamp (bounded), plus the newest one: a fixed camera's intrinsics do not
        # change, so a depth frame whose info has another stamp is scored with the newest info
        # of the same size and counted in ``info_stamp_mismatch``
        self.infos: dict[int, object] = {}
        self.latest_info = None
        self.info_received = 0
        self.info_mismatch = 0
        self.no_info = 0
        self.waiting: list[tuple[int, list]] = []  # matched frames whose camera_info is due
        self.lock = threading.Lock()
        self.tf = None
        self.extrinsic = None
        self.errors = 0
        self.last_report: dict = {}
        self.geometry_note = ""
        if self.cfg.calib_dir:
            self.extrinsic = calib_velo_to_cam(self.cfg.calib_dir)
            self.log.info(f"LiDAR -> camera extrinsic from {self.cfg.calib_dir}")
        else:
            self._subscribe_tf_static()
        qos = QoSProfile(depth=self.cfg.queue_size, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = [
            node.create_subscription(Image, "depth", lambda m: self._add(0, m), qos),
            node.create_subscription(CameraInfo, "depth/camera_info", self._on_info, qos),
            node.create_subscription(PointCloud2, "lidar_points", lambda m: self._add(1, m), qos),
        ]
        self.diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(self.cfg.summary_period, self._publish_diagnostics)
        self.relay = None  # (source, source info, publishers, subscriptions) of a relay
        self.relay_note = ""
        self.relay_misses = 0
        if self.cfg.relay_camera_to:
            self.relay_timer = node.create_timer(RELAY_CHECK, self._check_camera)
        self.srv = node.create_service(Trigger, "~/write_report", self._on_trigger)
        self.log.info(f"evaluating {node.resolve_topic_name('depth')} against "
                      f"{node.resolve_topic_name('lidar_points')}; report in {self.cfg.output_dir}")

    # ----------------------------------------------------------------------------------------
    def _subscribe_tf_static(self) -> None:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.log.warning("calib_dir is empty and tf2_msgs is not installed: set calib_dir to "
                             "the KITTI calibration folder, or no frame can be scored")
            return
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from ..bags.reader import TfStaticBuffer

        self.tf = TfStaticBuffer()
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.tf_sub = self.node.create_subscription(TFMessage, "/tf_static",
                                                    self.tf.add_message, qos)

    def _on_info(self, msg) -> None:
        st = stamp_ns(msg.header)
        with self.lock:
            self.info_received += 1
            self.infos[st] = msg
            while len(self.infos) > self.cfg.queue_size:
                del self.infos[min(self.infos)]
            self.latest_info = msg
            # frames waiting for this info, or whose own info can no longer come (older stamp)
            ready = [w for w in self.waiting if w[0] <= st]
            self.waiting = [w for w in self.waiting if w[0] > st]
        for stamp, msgs in ready:
            self._score(stamp, msgs)

    def flush(self) -> None:
        """Score frames still waiting for their camera_info with the newest one."""
        with self.lock:
            ready, self.waiting = self.waiting, []
        for stamp, msgs in ready:
            self._score(stamp, msgs)

    def _info_for(self, stamp: int, width: int, height: int):
        with self.lock:
            info = self.infos.get(stamp)
            if info is None:
                info = self.latest_info
                if info is None:
                    self.no_info += 1
                    return None
                self.info_mismatch += 1
        if (info.width, info.height) != (width, height):
            raise ValueError(f"camera_info is {info.width}x{info.height} but depth is "
                             f"{width}x{height}")
        return info

    def _add(self, index: int, msg) -> None:
        self.sync.add(index, stamp_ns(msg.header), msg)

    def _on_frame(self, stamp: int, msgs: list) -> None:
        # the depth node publishes depth before depth/camera_info: wait for the info briefly
        with self.lock:
            if stamp not in self.infos:
                self.waiting.append((stamp, msgs))
                while len(self.waiting) > self.cfg.queue_size:
                    old = self.waiting.pop(0)
                    ready = [old]
                else:
                    ready = []
            else:
                ready = [(stamp, msgs)]
        for st, m in ready:
            self._score(st, m)

    def _score(self, stamp: int, msgs: list) -> None:
        from ..bags.pointcloud import cloud_to_xyz
        from .conversions import camera_matrix, image_to_depth

        depth_msg, cloud = msgs
        try:
            T = self.extrinsic
            if T is None and self.tf is not None:
                T = self.tf.lookup(depth_msg.header.frame_id, cloud.header.frame_id)
            if T is None:
                with self.lock:
                    self.recorder.skip("no LiDAR -> camera transform")
                return
            depth = image_to_depth(depth_msg)
            info = self._info_for(stamp, depth.shape[1], depth.shape[0])
            if info is None:
                with self.lock:
                    self.recorder.skip("no camera_info yet")
                return
            K = camera_matrix(info)
            if self.extrinsic is None:  # from /tf_static: P's offset where the frame needs it
                T = self._frame_to_camera(info, depth_msg.header.frame_id) @ T
            gt = lidar_depth(cloud_to_xyz(cloud), K, T, depth.shape[1], depth.shape[0])
            with self.lock:
                score = self.recorder.add(stamp, depth, gt, label=f"{stamp * 1e-9:.3f}")
            if score is not None:
                self.log.info(f"frame {stamp * 1e-9:.3f}: abs_rel {score.scaled['abs_rel']:.4f} "
                              f"(metric {score.metric['abs_rel']:.4f}), "
                              f"{score.valid_pixels} LiDAR pixels")
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the evaluation
            self.errors += 1
            with self.lock:
                self.recorder.skip("bad input")
            self.log.error(f"frame {stamp * 1e-9:.3f} not scored: {exc}")

    def _check_camera(self) -> None:
        """While someone (the depth node) subscribes ``relay_camera_to`` but nobody publishes it,
        relay the camera found in the graph there (``camera`` param when set), so a bag played
        under another layout's names needs no remapping; one log line says what was chosen, or
        why nothing. The relay subscribes to the camera only once its own publishers have matched
        the subscribers, so the first frames are not lost."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        from ..bags.topics import (IMAGE_NAMES, TopicChoiceError, camera_info_sibling,
                                   choose_camera)

        node, dst = self.node, self.cfg.relay_camera_to
        if self.relay is not None:
            src, src_info, pubs, subs = self.relay
            if subs is None and pubs[0].get_subscription_count() > 0:
                self.relay = (src, src_info, pubs, (
                    node.create_subscription(Image, src, pubs[0].publish,
                                             qos_profile_sensor_data),
                    node.create_subscription(CameraInfo, src_info, pubs[1].publish,
                                             qos_profile_sensor_data)))
                self.log.info(self.relay_note)
            return
        if node.count_publishers(dst) > 0 or node.count_subscribers(dst) == 0:
            self.relay_misses = 0
            return
        # topics someone publishes (a subscription alone also lists a topic); image topics only
        # under the usual names, never e.g. the depth node's own depth/color
        types = {name: ts[0] for name, ts in node.get_topic_names_and_types()
                 if ts and name != dst and node.count_publishers(name) > 0
                 and (not ts[0].endswith("/Image") or name.rsplit("/", 1)[-1] in IMAGE_NAMES
                      or name == self.cfg.camera)}
        try:
            src, src_info, note = choose_camera(types, self.cfg.camera or dst,
                                                camera_info_sibling(self.cfg.camera or dst),
                                                explicit=bool(self.cfg.camera), where="the graph")
        except TopicChoiceError as exc:
            self.relay_misses += 1  # say it once it lasts (a player may just be starting)
            if str(exc) != self.relay_note and self.relay_misses * RELAY_CHECK >= RELAY_PATIENCE:
                self.relay_note = str(exc)
                text = f"nobody publishes {dst}; {exc}"
                self.log.warning(text.replace("--image-topic", "parameter camera"))
            return
        dst_info = camera_info_sibling(dst)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        pubs = (node.create_publisher(Image, dst, qos),
                node.create_publisher(CameraInfo, dst_info, qos))
        self.relay = (src, src_info, pubs, None)  # subscriptions once the publishers match
        self.relay_note = f"{note}; nobody publishes {dst}: relayed there + {dst_info}"

    def _frame_to_camera(self, info, frame: str):
        """``lidar_eval.frame_to_camera`` for this camera_info (logged once per frame id)."""
        import numpy as np

        C, why = frame_to_camera(np.asarray(info.p, dtype=np.float64).reshape(3, 4),
                                 frame.lstrip("/"), self.tf)
        if why != self.geometry_note:
            self.geometry_note = why
            self.log.info(f"geometry: {why}")
        return C

    # ----------------------------------------------------------------------------------------
    def counts(self) -> dict:
        unmatched = self.sync.unmatched()
        received = dict(zip(INPUTS, self.sync.received))
        received["depth/camera_info"] = self.info_received
        return {"received": received, "unmatched": dict(zip(INPUTS, unmatched)),
                "matched": self.sync.matched, "errors": self.errors,
                "info_stamp_mismatch": self.info_mismatch}

    def summary(self) -> dict:
        with self.lock:
            s = self.recorder.summary()
        s.update(self.counts())
        return s

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        s = self.summary()
        st = DiagnosticStatus()
        st.name = f"{self.node.get_name()}: depth vs LiDAR"
        st.hardware_id = "mono_depth_ros"
        st.level = DiagnosticStatus.OK if s["frames"] else DiagnosticStatus.WARN
        st.message = (f"{s['frames']} frames scored, abs_rel {s['abs_rel']:.4f}"
                      if s["frames"] else "no frame scored yet")
        vals = {"frames": s["frames"], "matched": s["matched"], "errors": s["errors"]}
        for k, v in s["received"].items():
            vals[f"received {k}"] = v
        for k, v in s["unmatched"].items():
            vals[f"unmatched {k}"] = v
        vals["camera_info stamp mismatches"] = s["info_stamp_mismatch"]
        for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "d1", "d2", "d3", "metric_abs_rel",
                  "metric_rmse", "metric_d1"):
            if k in s:
                vals[k] = f"{s[k]:.4f}"
        st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        arr.status = [st]
        self.diag_pub.publish(arr)

    def write_report(self, plots_deadline: float | None = None) -> dict:
        """metrics.json, CSVs and plots in output_dir (plots only if done by ``plots_deadline``,
        a ``time.monotonic()`` value; see ``EvalRecorder.write``)."""
        self.flush()
        with self.lock:
            counts = self.counts()
            extra = {"unmatched": counts["unmatched"], "received": counts["received"],
                     "matched": counts["matched"], "errors": counts["errors"],
                     "info_stamp_mismatch": counts["info_stamp_mismatch"],
                     "unmatched_images": counts["unmatched"]["depth"]}
            paths = self.recorder.write(self.cfg.output_dir, extra,
                                        plots_deadline=plots_deadline)
        self.last_report = {k: str(v) for k, v in paths.items()}
        return self.last_report

    def _on_trigger(self, request, response):
        try:
            paths = self.write_report()
            s = self.summary()
            response.success = True
            response.message = (f"{s['frames']} frames; abs_rel "
                                f"{s.get('abs_rel', float('nan')):.4f}; {paths['json']}")
        except Exception as exc:  # noqa: BLE001
            response.success = False
            response.message = f"could not write the report: {exc}"
        return response


def preload_plotting() -> None:
    """Import matplotlib (about 1 s on a busy machine) in the background now, so that the report
    written on the way out does not pay for it after the stop signal."""
    def run():
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except Exception:  # noqa: BLE001 - the report then imports it itself (or says why not)
            pass

    threading.Thread(target=run, name="preload_plotting", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Console script: evaluate until SIGINT/SIGTERM, then write the report and exit 0.

    Start and stop go through ``lifecycle`` (rclpy without its own signal handlers); a signal that
    comes once the node exists, even during its construction or a report, still leads to the
    report on the way out; a repeated signal does not cut it short."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from . import lifecycle

    stop = lifecycle.install()
    lifecycle.init(argv if argv is not None else sys.argv)
    # in a thread: creating the DDS participant takes ~0.7 s, and a signal meanwhile must not
    # wait for it (Python runs handlers in the main thread, between bytecodes)
    node = lifecycle.build(lambda: Node("kitti_eval_node"), stop)
    stop.defer()  # from here on a stop signal leads to the report
    rc = 0
    ev = None
    executor = SingleThreadedExecutor()
    try:
        ev = KittiEvalNode(node)
    except (ConfigError, ValueError) as exc:
        print(f"kitti_eval_node: error: {exc}".splitlines()[0], file=sys.stderr, flush=True)
        rc = 2
    if ev is not None:
        if ev.cfg.write_on_shutdown:
            preload_plotting()
        executor.add_node(node)
        lifecycle.spin(executor, stop)
        if ev.cfg.write_on_shutdown:
            rc = write_final_report(ev, stop.deadline(PLOTS_WITHIN))
    lifecycle.finish(executor, [node], code=rc)
    lifecycle.exit(rc)
    return rc


def write_final_report(ev: KittiEvalNode, plots_deadline: float | None = None) -> int:
    """The report on the way out, with a summary on stdout; 1 (one line) if it cannot be written.
    Plots not drawn by ``plots_deadline`` are left out (said on stdout), so the node still stops
    within 2 s on a busy machine; metrics.json and the CSV files are always complete."""
    try:
        paths = ev.write_report(plots_deadline)
    except Exception as exc:  # noqa: BLE001 - e.g. an unwritable output_dir
        print(f"kitti_eval_node: error: could not write the report to {ev.cfg.output_dir}: "
              f"{exc}".splitlines()[0], file=sys.stderr, flush=True)
        return 1
    s = ev.summary()
    print(f"kitti_eval_node: {s['frames']} frames scored, unmatched "
          f"{s['unmatched']}; report {paths['json']}", flush=True)
    if s["frames"]:
        print(format_table(s), flush=True)
    if s["frames"] and "per_frame_plot" not in paths:
        print("kitti_eval_node: plots left out to stop within 2 s (the ~/write_report service "
              "draws them while the node runs)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
