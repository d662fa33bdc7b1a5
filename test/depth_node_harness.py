"""Test harness: depth_node in its own process, and a client node that talks to it over real DDS.

Every process here uses loopback-only discovery, a test-specific ROS_DOMAIN_ID and the repository's
Fast DDS profile for large images (the same environment the Makefile exports).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_large_images.xml"
DRIVE1 = REPO / "data/kitti_sample/2011_09_26/2011_09_26_drive_0001_sync"
DRIVE5 = REPO / "data/kitti_sample/2011_09_26/2011_09_26_drive_0005_sync"
FRAMES = [DRIVE1 / "image_02/data/0000000005.png", DRIVE1 / "image_02/data/0000000050.png",
          DRIVE5 / "image_02/data/0000000137.png"]


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment for a node subprocess of a test; also makes this process loopback-only.

    Discovery range, RMW and profile go into os.environ (the same values the Makefile exports,
    needed before this process's first rclpy.init); the domain id only into the returned copy,
    since the in-process client passes it to rclpy.init explicitly and other modules use others.
    """
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    return env


def node_command() -> list[str]:
    """The console script users run (falls back to ``python -m`` when not installed)."""
    script = Path(sys.executable).parent / "depth_node"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mono_depth_ros.ros.depth_node"]


class NodeProcess:
    """depth_node in a subprocess; its combined stdout/stderr goes to a log file."""

    def __init__(self, log_path: Path, args: list[str], env: dict[str, str]):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(node_command() + ["--ros-args"] + args, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float, start: int = 0) -> bool:
        """True once ``text`` appears in the log after character ``start``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log()[start:]:
                return True
            if self.proc.poll() is not None:
                return text in self.log()[start:]
            time.sleep(0.05)
        return False

    def sigint(self, timeout: float = 5.0) -> tuple[int | None, float]:
        """Send SIGINT; (return code or None, seconds it took to exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def stamp_key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class Client:
    """A test node: publishes image + camera_info, records what depth_node publishes."""

    def __init__(self, domain_id: int, extra_topics: tuple[str, ...] = ()):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("depth_node_test_client", context=self.context)
        self.pub_image = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera_info",
                                                   qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.received: dict[str, list] = {}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {"depth": Image, "depth/camera_info": CameraInfo, "depth/coarse": Image,
                 "depth/color": Image, "depth/points": PointCloud2, "depth/mm": Image,
                 "/diagnostics": DiagnosticArray}
        self.subs = {}
        for topic in ("depth", "depth/camera_info", "/diagnostics") + extra_topics:
            self.subscribe(topic, types[topic], reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def subscribe(self, topic, msg_type, qos):
        self.received[topic] = []
        self.subs[topic] = self.node.create_subscription(
            msg_type, topic, lambda m, t=topic: self._store(t, m), qos)

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown while spinning
            pass

    def _store(self, topic, msg):
        with self.lock:
            self.received[topic].append((time.monotonic(), msg))

    def wait_matched(self, timeout: float = 30.0) -> bool:
        """True once depth_node subscribes to our image/camera_info and publishes depth."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (self.pub_image.get_subscription_count() and self.pub_info.get_subscription_count()
                    and all(s.get_publisher_count() for s in self.subs.values()
                            if s.topic_name != "/diagnostics")):
                return True
            time.sleep(0.05)
        return False

    def publish(self, image, info=None, stamp: tuple[int, int] = (0, 0), frame_id="camera_optical"):
        """Publish one image (and its camera_info) with this stamp; returns publish time."""
        image.header.stamp.sec, image.header.stamp.nanosec = stamp
        image.header.frame_id = frame_id
        if info is not None:
            info.header = image.header
            self.pub_info.publish(info)
        t = time.monotonic()
        self.pub_image.publish(image)
        return t

    def wait_for(self, topic: str, stamp: tuple[int, int], timeout: float = 30.0):
        """(receive time, message) on ``topic`` with this header stamp, or None on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                for t, m in self.received[topic]:
                    if stamp_key(m.header) == stamp:
                        return t, m
            time.sleep(0.02)
        return None

    def messages(self, topic: str) -> list:
        with self.lock:
            return list(self.received[topic])

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        """Call a service of depth_node and return the response (None on timeout)."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            future = client.call_async(request)
            end = time.monotonic() + timeout
            while not future.done() and time.monotonic() < end:
                time.sleep(0.02)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_name: str, values: dict, atomically: bool = False):
        """SetParameters / SetParametersAtomically results for ``values`` ({name: value})."""
        from rcl_interfaces.srv import SetParameters, SetParametersAtomically
        from rclpy.parameter import Parameter

        params = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        srv = SetParametersAtomically if atomically else SetParameters
        suffix = "set_parameters_atomically" if atomically else "set_parameters"
        resp = self.call(srv, f"/{node_name}/{suffix}", srv.Request(parameters=params))
        assert resp is not None, f"{suffix} service of {node_name} did not answer"
        return [resp.result] if atomically else list(resp.results)

    def close(self):
        close_spinning(self.executor, self.thread, self.node, self.rclpy, self.context)


def close_spinning(executor, thread, node, rclpy, context) -> None:
    """End an in-test client spun by ``thread``: stop that thread first, then destroy. Destroying
    the node and shutting the context down while the thread is still inside a wait deadlocked
    rclpy once under load (the thread in EventHandler.__exit__, the main one in
    Context._logging_fini)."""
    executor.shutdown(timeout_sec=10.0)
    thread.join(10.0)
    if thread.is_alive():
        return  # still inside a wait: leave the context to this process's exit, not hang
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def kitti_info_msg(width: int = 1242, height: int = 375):
    """CameraInfo of KITTI image_02 (rectified, from the sample's calib file)."""
    from sensor_msgs.msg import CameraInfo

    from mono_depth_ros.kitti import find_raw_calib

    calib = find_raw_calib(DRIVE1)
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = calib.K.reshape(-1).astype(np.float64)
    info.p = calib.P_rect.reshape(-1).astype(np.float64)
    info.r = np.eye(3).reshape(-1)
    info.d = [0.0] * 5
    return info


def kitti_image_msg(path: Path):
    from mono_depth_ros.kitti import read_rgb
    from mono_depth_ros.ros.conversions import rgb_to_image

    return rgb_to_image(read_rgb(path))
