"""depth_node: camera image in, dense metric depth out (``ros2 run mono_depth_ros depth_node``).

A thin adapter over the ROS-free core: the backend (``backends.factory``) turns an RGB array into
depth; this file only moves messages. Read top to bottom: parameters, subscriptions, publications,
the camera_info pairing, the one worker (takes the newest image, infers and publishes).

The worker pulls the newest image when it is free (``pulled_subscription``: DDS keeps only the
newest sample, the executor never copies frames the worker will not process), and its camera_info
by stamp; older unprocessed frames are counted as dropped, so latency stays bounded when the
camera outruns the model.
See docs/depth_node.md for topics, parameters, QoS and the Fast DDS profile for large images.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
import typing
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.qos import (HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ..camera import Intrinsics, unrectified
from ..config import (BackendConfig, ConfigError, DepthNodeConfig, ScaleConfig, check_value,
                      from_dict)
from ..timing import StageTimes
from .conversions import (ImageFormatError, bgr_image, camera_matrix, check_camera_info,
                          depth_to_cdr, depth_to_image_mm, image_from_cdr, image_to_rgb,
                          points_to_cloud, scale_camera_info, stamp_ns)
from .pulled_subscription import PulledSubscription

NODE_NAME = "depth_node"
INFO_HISTORY = 16  # camera_info messages kept by stamp, to pair with images
IDLE_WAIT = 0.2  # seconds the idle worker blocks for an image before checking for stop
# (parameter prefix, dataclass, every field read-only?) — one parameter per dataclass field.
PARAMETER_GROUPS = (("", DepthNodeConfig, False), ("", BackendConfig, True),
                    ("scale.", ScaleConfig, False))


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing model, no backend); one line says why."""


def parameter_descriptor(f: dataclasses.Field, typ, read_only: bool) -> ParameterDescriptor:
    """ROS ParameterDescriptor of one config field (type, description, range, read-only)."""
    md = f.metadata
    ptype = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE}.get(typ, ParameterType.PARAMETER_STRING)
    desc = ParameterDescriptor(type=ptype, description=md.get("help", ""),
                               read_only=bool(read_only or md.get("read_only")))
    if md.get("choices"):
        desc.additional_constraints = "one of: " + ", ".join(map(str, md["choices"]))
    rng = md.get("range")
    if rng and typ is int:
        desc.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=0)]
    elif rng and typ is float:
        desc.floating_point_range = [FloatingPointRange(from_value=float(rng[0]),
                                                        to_value=float(rng[1]), step=0.0)]
    return desc


def make_backend(cfg: BackendConfig):
    """The configured inference backend (``backends.factory``)."""
    from ..backends.factory import create_backend

    return create_backend(cfg)


def make_scaler(cfg: ScaleConfig):
    """A ground-plane metric scaler for ``cfg`` (None when mode is none)."""
    if cfg.mode == "none":
        return None
    from ..scale import GroundPlaneScaler

    return GroundPlaneScaler(cfg)


class DepthNode(Node):
    """Subscribes image + camera_info, publishes depth, depth/camera_info and optional extras."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        # --- parameters ------------------------------------------------------------------
        self._fields: dict[str, tuple[str, type, str]] = {}  # ROS name -> (group, class, field)
        for prefix, cls, read_only in PARAMETER_GROUPS:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                name = prefix + f.name
                self._fields[name] = (prefix, cls, f.name)
                try:
                    self.declare_parameter(name, f.default,
                                           parameter_descriptor(f, hints[f.name], read_only))
                except Exception as exc:  # noqa: BLE001 - rclpy raises several types here
                    raise StartupError(f"parameter {name}: {exc}".splitlines()[0]) from None
        try:
            self.cfg = self._config(DepthNodeConfig, "")
            self.backend_cfg = self._config(BackendConfig, "")
            self.scale_cfg = self._config(ScaleConfig, "scale.")
            self.scaler = make_scaler(self.scale_cfg)
        except ConfigError as exc:
            raise StartupError(f"bad parameter: {exc}") from None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.backend = make_backend(self.backend_cfg)  # ModelLoadError / BackendUnavailable
        self.get_logger().info(f"backend: {self.backend.describe()}")

        # --- subscriptions (sensor-data QoS: best effort, shallow, like camera drivers) ------
        self.camera_info: CameraInfo | None = None  # the newest the worker has taken
        self._infos: dict[int, CameraInfo] = {}  # recent ones by stamp (ns), oldest first
        self._info_by_stamp = False  # images have found camera_info with their own stamp
        self._camera_cache: tuple[tuple, Intrinsics | None] | None = None
        # both pulled by the worker when it is free (not served by the executor): the newest
        # image, raw (image_from_cdr reads it in place), so a frame that a newer one replaces
        # before then is never copied out of DDS; and the camera_info messages since the last
        # frame, kept by stamp to pair with it
        self.images = PulledSubscription(self, Image, "image", qos_profile_sensor_data,
                                         depth=1, raw=True)
        self.infos = PulledSubscription(self, CameraInfo, "camera_info",
                                        qos_profile_sensor_data, depth=INFO_HISTORY)

        # --- publications (reliable, so recorders and RViz get every depth image) ------------
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.cfg.qos_depth,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.pub_depth = self.create_publisher(Image, "depth", qos)
        self.pub_info = self.create_publisher(CameraInfo, "depth/camera_info", qos)
        self.pub_coarse = self.create_publisher(Image, "depth/coarse", qos)
        self.pub_conf = self.create_publisher(Image, "depth/confidence", qos)
        self.pub_color = self.create_publisher(Image, "depth/color", qos)
        self.pub_points = self.create_publisher(PointCloud2, "depth/points", qos)
        self.pub_mm = (self.create_publisher(Image, "depth/mm", qos)
                       if self.cfg.publish_depth_mm else None)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.cfg.diagnostics_period, self._publish_diagnostics)

        # --- statistics and the worker -----------------------------------------------------
        self.stats_lock = threading.Lock()
        self.frames_out = self.rejected = self.failed = 0
        self.latencies: deque[float] = deque(maxlen=1000)
        self.stages = StageTimes()  # per-stage seconds of recent frames (diagnostics)
        self.stage_totals: dict[str, float] = {}  # cumulative seconds per stage (benchmarks)
        self._last_diag = (time.monotonic(), 0, 0)
        self._last_error = -math.inf
        self._suppressed = 0
        self._warned_no_info = self._warned_no_frame = self._warned_no_conf = False
        self._warned_distortion = False
        self._image_topic = self.resolve_topic_name("image")  # after remapping
        self._stopping = threading.Event()
        self.worker = threading.Thread(target=self._work, name="depth_worker", daemon=True)
        self.worker.start()

    def _config(self, cls, prefix: str, overrides: dict | None = None):
        """Build one config dataclass from the current parameter values (+ pending changes)."""
        values = {f.name: self.get_parameter(prefix + f.name).value
                  for f in dataclasses.fields(cls)}
        values.update(overrides or {})
        return from_dict(cls, values)

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Reject invalid values with the reason; apply valid run-time changes atomically."""
        pending: dict[str, dict] = {}
        try:
            for p in params:
                if p.name not in self._fields:
                    raise ConfigError(f"unknown parameter {p.name}")
                prefix, cls, name = self._fields[p.name]
                pending.setdefault(prefix + cls.__name__, {})[name] = check_value(cls, name,
                                                                                  p.value)
            cfg = self._config(DepthNodeConfig, "", pending.get(DepthNodeConfig.__name__))
            scale_cfg = self._config(ScaleConfig, "scale.",
                                     pending.get("scale." + ScaleConfig.__name__))
            scaler = make_scaler(scale_cfg) if scale_cfg != self.scale_cfg else self.scaler
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.cfg, self.scale_cfg, self.scaler = cfg, scale_cfg, scaler
        return SetParametersResult(successful=True)

    def _take_infos(self, timeout: float = 0.0) -> None:
        """Take the camera_info messages DDS holds (waiting up to ``timeout`` s for the
        first), newest last."""
        got = self.infos.take(timeout)
        while got is not None:
            msg = got[0]
            self.camera_info = msg
            self._infos[stamp_ns(msg.header)] = msg
            while len(self._infos) > INFO_HISTORY:
                del self._infos[next(iter(self._infos))]
            got = self.infos.take()

    def _info_for(self, header) -> CameraInfo | None:
        """The camera_info with the image's stamp, as a camera driver publishes them in pairs
        (image_transport's CameraSubscriber pairs them the same way); it may arrive just after
        the image, so while pairs have been found, wait up to ``camera_info_wait`` s for it.
        Otherwise (a driver with other stamps, or none yet) the newest."""
        key = stamp_ns(header)
        self._take_infos()
        info = self._infos.get(key)
        if info is None and self._info_by_stamp:  # (camera_info_wait 0: no wait)
            end = time.monotonic() + self.cfg.camera_info_wait
            while info is None and not self._stopping.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._take_infos(left)
                info = self._infos.get(key)
        self._info_by_stamp = info is not None
        return info if info is not None else self.camera_info

    # --- the one worker: newest frame -> depth -> publish -----------------------------------
    def _work(self) -> None:
        while not self._stopping.is_set():
            item = self.images.take(IDLE_WAIT)  # (blocks: the GIL is free meanwhile)
            if item is None:
                continue
            data, t_recv = item  # DDS's reception time, ns (system clock)
            # waited in DDS behind the previous frame
            times = {"wait": max(0.0, (time.time_ns() - t_recv) * 1e-9)}
            msg = None
            try:
                t0 = time.perf_counter()
                msg = image_from_cdr(data)  # header and fields; the pixels stay in `data`
                times["decode"] = time.perf_counter() - t0
                self._process(msg, times)
            except ImageFormatError as exc:
                with self.stats_lock:
                    self.rejected += 1
                frame_id = msg.header.frame_id if msg is not None else "?"
                self._throttled_error(f"dropped image (frame_id '{frame_id}'): {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - keep serving; the line names the failure
                if self._stopping.is_set():
                    return
                with self.stats_lock:
                    self.failed += 1
                self._throttled_error(f"depth failed: {type(exc).__name__}: {exc}"
                                      .splitlines()[0])
                continue
            with self.stats_lock:
                self.frames_out += 1
                self.latencies.append(max(0.0, (time.time_ns() - t_recv) * 1e-9))
                self.stages.update(times)
                for k, v in times.items():
                    self.stage_totals[k] = self.stage_totals.get(k, 0.0) + v

    def _process(self, msg, times: dict[str, float]) -> None:
        """Infer one frame and publish every output someone needs; stage seconds go to
        ``times`` (decode, preprocess, inference, postprocess, publish)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        rgb = image_to_rgb(msg, cfg.max_pixels)
        t1 = time.perf_counter()
        if not msg.header.frame_id and not self._warned_no_frame:
            self._warned_no_frame = True
            self.get_logger().warning("images have an empty header.frame_id; depth keeps it "
                                      "empty (set the optical frame in the camera driver)")
        size = (cfg.output_height, cfg.output_width) if cfg.output_width else rgb.shape[:2]
        t_info = time.perf_counter()
        camera_info = self._info_for(msg.header)
        times["wait"] += time.perf_counter() - t_info  # (for its camera_info, if it was late)
        self._check_rectified(camera_info)
        result = self.backend.infer(rgb, size, self._image_camera(camera_info))
        t2 = time.perf_counter()
        info = self._matching_info(camera_info, size, msg.header)
        K = camera_matrix(info) if info is not None else None
        scale, scaler = 1.0, self.scaler  # one read: a parameter change may replace it
        if scaler is not None and K is not None:
            scale = float(scaler.update(result.fine, K))
        fine = self._mask(result.fine, cfg, scale)  # in place: infer's result is ours
        conf = self._confidence(result, fine, cfg)  # and NaN where below min_confidence
        t3 = time.perf_counter()
        if self._stopping.is_set():
            return
        self.pub_depth.publish(depth_to_cdr(fine, msg.header))  # bytes: one copy, no msg
        if info is not None:
            self.pub_info.publish(info)
        if self.pub_mm is not None:
            self.pub_mm.publish(depth_to_image_mm(fine, msg.header))
        if conf is not None and self.pub_conf.get_subscription_count():
            from .conversions import depth_to_image

            self.pub_conf.publish(depth_to_image(conf, msg.header))  # 32FC1, 0..1
        if self.pub_coarse.get_subscription_count():  # coarse is resized only when read
            self.pub_coarse.publish(depth_to_cdr(self._mask(result.coarse, cfg, scale),
                                                 msg.header))
        if self.pub_color.get_subscription_count():
            from ..colorize import colorize

            self.pub_color.publish(bgr_image(colorize(fine, cfg.color_min_depth,
                                                      cfg.color_max_depth), msg.header))
        if K is not None and self.pub_points.get_subscription_count():
            from ..geometry import backproject

            s = cfg.points_stride
            pts = backproject(fine, K)[::s, ::s]
            pts[~np.isfinite(fine[::s, ::s])] = np.nan
            self.pub_points.publish(points_to_cloud(pts, msg.header, rgb_at(rgb, size)[::s, ::s]))
        t4 = time.perf_counter()
        bt = self.backend.last_timing
        times.update(decode=times.get("decode", 0.0) + t1 - t0,
                     preprocess=bt.get("preprocess", 0.0),
                     inference=bt.get("inference", 0.0),
                     postprocess=bt.get("postprocess", 0.0) + (t3 - t2), publish=t4 - t3)

    def _confidence(self, result, fine: np.ndarray, cfg: DepthNodeConfig) -> np.ndarray | None:
        """The fine depth's confidence (0..1) when someone needs it: a depth/confidence
        subscriber or min_confidence > 0; pixels of ``fine`` below min_confidence become NaN
        (in place). None, said once, when the model has no confidence head."""
        if cfg.min_confidence <= 0 and not self.pub_conf.get_subscription_count():
            return None  # not even resized: DepthResult.confidence is lazy
        conf = result.confidence
        if conf is None:
            if not self._warned_no_conf:
                self._warned_no_conf = True
                self.get_logger().warning(
                    "this model has no confidence head: depth/confidence is not published and "
                    "min_confidence has no effect (train with model confidence: true)")
            return None
        if cfg.min_confidence > 0:
            fine[conf < cfg.min_confidence] = np.nan
        return conf

    @staticmethod
    def _mask(depth: np.ndarray, cfg: DepthNodeConfig, scale: float = 1.0) -> np.ndarray:
        """``depth`` x ``scale`` as float32, NaN outside [min_depth, max_depth] and where not
        finite (REP 118). Works in place on a float32 array; skips the per-pixel mask when the
        whole image is inside the range (min/max are NaN-aware: a NaN fails the check)."""
        d = np.asarray(depth, dtype=np.float32)
        if scale != 1.0:
            np.multiply(d, np.float32(scale), out=d)
        if d.size and cfg.min_depth <= d.min() and d.max() <= cfg.max_depth:
            return d
        d[~((d >= cfg.min_depth) & (d <= cfg.max_depth))] = np.nan
        return d

    def _check_rectified(self, info: CameraInfo | None) -> None:
        """Warn once when camera_info has lens distortion and the image topic is not a
        rectified one: the network and depth/points take the image as a pinhole view."""
        if not self._warned_distortion and info is not None and \
                unrectified(info.d, self._image_topic):
            self._warned_distortion = True
            self.get_logger().warning(
                f"camera_info has distortion coefficients ({info.distortion_model or 'no model'}"
                f") and the images on {self._image_topic} are taken as rectified: if they are "
                "not, remap image to the rectified topic (image_rect_color, from image_proc), "
                "else depth and depth/points bend towards the image edges (kitti2bag bags are "
                "rectified already; their camera_info keeps the raw camera's D)")

    def _image_camera(self, info: CameraInfo | None) -> Intrinsics | None:
        """The image's intrinsics from its camera_info, so the model sees them as its own
        camera would (metres on any camera); None without camera_info (the images are then
        taken to show the model's camera's view) or with ``camera_intrinsics`` off."""
        if info is None or not self.cfg.camera_intrinsics:
            return None
        key = (info.width, info.height, tuple(info.k), tuple(info.p))
        cached = self._camera_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        try:  # checked here, once per camera_info, so a bad one never fails a frame
            cam = Intrinsics.from_matrix(camera_matrix(info), info.width, info.height)
            self.backend.canvas_map(info.width, info.height, cam)
        except ValueError as exc:  # CameraError is a ValueError
            self._throttled_error(f"ignoring camera_info intrinsics: {exc}")
            cam = None
        self._camera_cache = (key, cam)
        return cam

    def _matching_info(self, info: CameraInfo | None, size: tuple[int, int],
                       header) -> CameraInfo | None:
        """The image's camera_info scaled to the output size, with the image's header; None
        (warned once) when there is none or it is unusable."""
        if info is None:
            if not self._warned_no_info:
                self._warned_no_info = True
                self.get_logger().warning(
                    "no camera_info received yet: publishing depth without depth/camera_info, "
                    "depth/points and ground-plane scale, and taking the images to show the "
                    "model's own camera's view (its metres assume KITTI's focal length)")
            return None
        try:
            check_camera_info(info)
        except ValueError as exc:
            self._throttled_error(f"ignoring camera_info: {exc}")
            return None
        return scale_camera_info(info, size[1], size[0], header)

    def _throttled_error(self, text: str) -> None:
        """Log at most one error line per ``error_throttle`` seconds, counting the rest."""
        now = time.monotonic()
        if now - self._last_error < self.cfg.error_throttle:
            self._suppressed += 1
            return
        extra = f" (+{self._suppressed} similar suppressed)" if self._suppressed else ""
        self._last_error, self._suppressed = now, 0
        self.get_logger().error(text + extra)

    def _publish_diagnostics(self) -> None:
        """One DiagnosticStatus: backend, rates, latency percentiles, dropped / rejected frames."""
        now = time.monotonic()
        dropped = self.images.skipped
        n_in = self.images.taken + dropped
        with self.stats_lock:
            n_out, rejected, failed = self.frames_out, self.rejected, self.failed
            lat = np.array(self.latencies, dtype=np.float64)
            stages = self.stages.summary()
            totals = dict(self.stage_totals)
        t0, in0, out0 = self._last_diag
        self._last_diag = (now, n_in, n_out)
        dt = max(now - t0, 1e-6)
        p50, p99 = (np.percentile(lat, [50, 99]) * 1000) if lat.size else (math.nan, math.nan)
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: depth estimation",
                                  hardware_id=self.backend.describe())
        status.level, status.message = DiagnosticStatus.OK, "running"
        if n_in == in0:
            status.level, status.message = DiagnosticStatus.WARN, "no input images"
        if failed:
            status.level, status.message = DiagnosticStatus.ERROR, "inference failures"
        values = {"backend": self.backend.describe(), "input_rate_hz": (n_in - in0) / dt,
                  "output_rate_hz": (n_out - out0) / dt, "latency_p50_ms": p50,
                  "latency_p99_ms": p99, "frames_in": n_in, "frames_out": n_out,
                  "dropped_frames": dropped, "rejected_frames": rejected,
                  "failed_frames": failed, "camera_info": self.camera_info is not None,
                  "scale_mode": self.scale_cfg.mode,
                  "scale": getattr(self.scaler, "scale", None) or 1.0,
                  "scale_fit_rate": getattr(self.scaler, "fit_rate", 0.0),
                  "scale_rejection": getattr(self.scaler, "last_reason", "")}
        # per stage: p50 over the recent frames, and the running total (difference two
        # snapshots to get a run's mean, as node_benchmark does)
        for name, st in stages.items():
            values[f"stage_{name}_p50_ms"] = st["p50_ms"]
        for name, total in totals.items():
            values[f"stage_{name}_total_ms"] = 1000.0 * total
        status.values = [KeyValue(key=k, value=f"{v:.6g}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the worker; True when it finished within ``timeout`` seconds."""
        self._stopping.set()
        self.images.close()  # wakes a worker waiting for an image; one inside an inference
        self.infos.close()  # then takes nothing more
        self.worker.join(timeout)
        return not self.worker.is_alive()


def rgb_at(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The input colours at the output size (for coloured points)."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    import cv2

    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def main(args: list[str] | None = None) -> None:
    """Console script: run the node until SIGINT/SIGTERM, then exit 0 (within 2 s, also when the
    signal comes during start-up); exit 2 with one line if it cannot start.

    Start and stop go through ``lifecycle`` (rclpy without its own signal handlers, which shut the
    context down under a node still being built: ros2/rclpy#398). The node is built in a thread
    so that a signal during model loading ends the process at once."""
    from ..backends.base import BackendUnavailable
    from ..model_io import ModelLoadError
    from . import lifecycle

    stop = lifecycle.install()
    lifecycle.init(args)
    try:
        node = lifecycle.build(DepthNode, stop)
    except (StartupError, ModelLoadError, BackendUnavailable, ConfigError) as exc:
        print(f"{NODE_NAME}: error: {exc}".splitlines()[0], file=sys.stderr, flush=True)
        lifecycle.finish()
        lifecycle.exit(2)
    stop.defer()
    # rclpy's C++ events executor: half the CPU per received frame of SingleThreadedExecutor's
    # Python wait-set loop, taken from the cores inference needs (docs/depth_node.md, speed)
    executor = EventsExecutor()
    executor.add_node(node)
    lifecycle.spin(executor, stop)
    node.stop(timeout=1.0)  # the worker may be inside one inference; do not wait for it
    lifecycle.finish(executor, [node])
    # skips the interpreter's module teardown (torch, DDS: about 1 s) and a worker still inside
    # an inference
    lifecycle.exit(0)


if __name__ == "__main__":
    main()
