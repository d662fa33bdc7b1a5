"""KITTI bags in each of the three layouts found in the wild, ROS 1 and ROS 2, evaluate to the
offline evaluator's AbsRel with no topic flags (issue 11).

The bags are written here with ``rosbags`` from the real frames of data/kitti_sample (drives 0001
frame 5 and 0005 frame 137 have LiDAR scans; 0001/50 has none), as each tool writes them:

- ``master``: tomas789/kitti2bag master (PyPI 1.5): ``/kitti/camera_color_left/image_raw`` bgr8,
  camera_info in ``camera_color_left`` (K_02, D_02, R_rect_02, P_rect_02), scans stamped by the
  scanner's clock with fields x y z i, /tf_static rooted at the IMU (pykitti's transforms), gray
  camera topics beside the colour ones;
- ``rect_color``: the kitti2bag branch of PR 38: ``/kitti/camera_color/left/image_rect_color``
  with image and camera_info in ``camera_gray_left`` (camera 0), P = P_rect_02, K = its 3x3;
- ``old``: this project's kitti_to_bag before issue 11: ``/kitti/camera_color_left/image`` rgb8,
  one velo_link -> camera_color_left transform, the camera's stamps on the scans.

The offline evaluator is ``metrics.score_frame`` on the scan projected with ``P_rect_02 @
R_rect_00 @ [R|T]`` from the calibration files (what training.evaluate does).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mono_depth_ros.bags.evaluate_bag import evaluate, make_backend, velo_to_camera
from mono_depth_ros.bags.reader import BagError, read_eval_frames
from mono_depth_ros.bags.topics import TopicChoiceError, choose_camera
from mono_depth_ros.config import BackendConfig, EvalConfig, KittiTopicsConfig
from mono_depth_ros.geometry import project_points
from mono_depth_ros.kitti import (find_raw_calib, read_calib_file, read_rgb, read_timestamps,
                                  read_velodyne)
from mono_depth_ros.lidar_eval import lidar_depth
from mono_depth_ros.metrics import mean_scores, score_frame

from conftest import DRIVE_0001, DRIVE_0005

FRAMES = [(DRIVE_0001, 5), (DRIVE_0001, 50), (DRIVE_0005, 137)]
SCORED = [(DRIVE_0001, 5), (DRIVE_0005, 137)]
LAYOUTS = ("master", "rect_color", "old")
# KITTI 2011_09_26 calib_imu_to_velo.txt (R, T); only a link of the IMU-rooted tf tree
R_VELO_IMU = [9.999976e-01, 7.553071e-04, -2.035826e-03, -7.854027e-04, 9.998898e-01,
              -1.482298e-02, 2.024406e-03, 1.482454e-02, 9.998881e-01]
T_VELO_IMU = [-8.086759e-01, 3.195559e-01, -7.997231e-01]


def translation(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


def pad4(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def pykitti_tree(c2c: dict, v2c: dict) -> list[tuple[str, str, np.ndarray]]:
    """kitti2bag's /tf_static edges (parent, child, child -> parent), pykitti's transforms:
    rectified cameras offset along x only by P_rect_0N[0, 3] / fx."""
    T_velo_imu = pad4(np.hstack([np.reshape(R_VELO_IMU, (3, 3)), np.reshape(T_VELO_IMU, (3, 1))]))
    velo = pad4(np.hstack([v2c["R"].reshape(3, 3), v2c["T"].reshape(3, 1)]))
    R0 = pad4(c2c["R_rect_00"].reshape(3, 3))
    P0, P2 = c2c["P_rect_00"].reshape(3, 4), c2c["P_rect_02"].reshape(3, 4)
    T_cam0_imu = translation(P0[0, 3] / P0[0, 0]) @ R0 @ velo @ T_velo_imu
    T_cam2_imu = translation(P2[0, 3] / P2[0, 0]) @ R0 @ velo @ T_velo_imu
    base = np.eye(4)
    base[:3, 3] = [-2.71 / 2.0 - 0.05, 0.32, 0.93]
    return [("base_link", "imu_link", base), ("imu_link", "velo_link", np.linalg.inv(T_velo_imu)),
            ("imu_link", "camera_gray_left", np.linalg.inv(T_cam0_imu)),
            ("imu_link", "camera_color_left", np.linalg.inv(T_cam2_imu))]


class BagWriter:
    """One bag (ROS 1 .bag or ROS 2 MCAP folder) written with rosbags' own type stores."""

    def __init__(self, path, ros1: bool):
        from rosbags.typesys import Stores, get_typestore

        self.ros1 = ros1
        self.ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_KILTED)
        if "tf2_msgs/msg/TFMessage" not in self.ts.types:  # the ROS 1 store lacks it
            from rosbags.typesys import get_types_from_msg

            self.ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms",
                                                "tf2_msgs/msg/TFMessage"))
        self.T = self.ts.types
        if ros1:
            from rosbags.rosbag1 import Writer

            self.writer = Writer(path)
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer

            self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.conns: dict[str, object] = {}

    def header(self, stamp_ns: int, frame: str):
        stamp = self.T["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        kw = {"seq": 0} if self.ros1 else {}
        return self.T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame, **kw)

    def write(self, topic: str, typ: str, msg, stamp_ns: int) -> None:
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, typ, typestore=self.ts)
        data = self.ts.serialize_ros1(msg, typ) if self.ros1 else self.ts.serialize_cdr(msg, typ)
        self.writer.write(self.conns[topic], stamp_ns, data)

    def image(self, topic, pixels: np.ndarray, encoding: str, stamp_ns: int, frame: str):
        h, w = pixels.shape[:2]
        ch = 1 if pixels.ndim == 2 else pixels.shape[2]
        msg = self.T["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame), height=h, width=w, encoding=encoding,
            is_bigendian=0, step=w * ch, data=np.ascontiguousarray(pixels).reshape(-1))
        self.write(topic, "sensor_msgs/msg/Image", msg, stamp_ns)

    def camera_info(self, topic, stamp_ns, frame, size, K, D, R, P, log_ns=None):
        roi = self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                         width=0, do_rectify=False)
        arrays = {"d": np.asarray(D, float), "k": np.asarray(K, float).reshape(-1),
                  "r": np.asarray(R, float).reshape(-1), "p": np.asarray(P, float).reshape(-1)}
        if self.ros1:
            arrays = {k.upper(): v for k, v in arrays.items()}
        msg = self.T["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame), width=size[0], height=size[1],
            distortion_model="plumb_bob", binning_x=0, binning_y=0, roi=roi, **arrays)
        self.write(topic, "sensor_msgs/msg/CameraInfo", msg, log_ns or stamp_ns)

    def cloud(self, topic, scan: np.ndarray, stamp_ns: int, intensity: str):
        PF = self.T["sensor_msgs/msg/PointField"]
        fields = [PF(name=n, offset=o, datatype=7, count=1)
                  for n, o in (("x", 0), ("y", 4), ("z", 8), (intensity, 12))]
        msg = self.T["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp_ns, "velo_link"), height=1, width=len(scan), fields=fields,
            is_bigendian=False, point_step=16, row_step=16 * len(scan),
            data=np.frombuffer(scan.astype("<f4").tobytes(), np.uint8), is_dense=True)
        self.write(topic, "sensor_msgs/msg/PointCloud2", msg, stamp_ns)

    def tf_static(self, edges, stamp_ns: int):
        from mono_depth_ros.bags.kitti_to_bag import rotation_to_quaternion

        out = []
        for parent, child, T in edges:
            x, y, z, w = rotation_to_quaternion(T[:3, :3])
            t = T[:3, 3]
            out.append(self.T["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=self.T["geometry_msgs/msg/Transform"](
                    translation=self.T["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
                    rotation=self.T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))))
        self.write("/tf_static", "tf2_msgs/msg/TFMessage",
                   self.T["tf2_msgs/msg/TFMessage"](transforms=out), stamp_ns)

    def close(self):
        self.writer.close()


def write_layout(path, layout: str, ros1: bool) -> None:
    """A bag of FRAMES as the tool of ``layout`` writes it."""
    c2c = read_calib_file(DRIVE_0001.parent / "calib_cam_to_cam.txt")
    v2c = read_calib_file(DRIVE_0001.parent / "calib_velo_to_cam.txt")
    P2, P0 = c2c["P_rect_02"].reshape(3, 4), c2c["P_rect_00"].reshape(3, 4)
    size = tuple(int(v) for v in c2c["S_rect_02"])
    w = BagWriter(path, ros1)
    frames = []
    for drive, i in FRAMES:
        cam = read_timestamps(drive / "image_02" / "timestamps.txt")[i]
        velo = read_timestamps(drive / "velodyne_points" / "timestamps.txt")[i]
        frames.append((int(round(cam * 1e9)), int(round(velo * 1e9)), drive, i))
    frames.sort()
    first = frames[0][0] - 10**6
    if layout == "old":
        calib = find_raw_calib(DRIVE_0001)
        w.tf_static([("velo_link", "camera_color_left",
                      np.linalg.inv(calib.velo_to_cam_optical))], first)
    else:
        edges = pykitti_tree(c2c, v2c)
        if layout == "rect_color":  # PR 38 writes (imu_link, base_link) the other way round
            edges[0] = ("imu_link", "base_link", np.linalg.inv(edges[0][2]))
        w.tf_static(edges, first)
    for cam_ns, velo_ns, drive, i in frames:
        rgb = read_rgb(drive / "image_02" / "data" / f"{i:010d}.png")
        gray = np.ascontiguousarray(rgb.mean(axis=2).astype(np.uint8))  # stand-in for image_00
        scan_path = drive / "velodyne_points" / "data" / f"{i:010d}.bin"
        if layout == "master":
            w.image("/kitti/camera_gray_left/image_raw", gray, "mono8", cam_ns, "camera_gray_left")
            w.camera_info("/kitti/camera_gray_left/camera_info", cam_ns, "camera_gray_left", size,
                          c2c["K_00"], c2c["D_00"], c2c["R_rect_00"], P0)
            w.image("/kitti/camera_color_left/image_raw", rgb[:, :, ::-1], "bgr8", cam_ns,
                    "camera_color_left")
            w.camera_info("/kitti/camera_color_left/camera_info", cam_ns, "camera_color_left",
                          size, c2c["K_02"], c2c["D_02"], c2c["R_rect_02"], P2)
            if scan_path.is_file():
                w.cloud("/kitti/velo/pointcloud", read_velodyne(scan_path), velo_ns, "i")
        elif layout == "rect_color":
            w.image("/kitti/camera_gray/left/image_rect", gray, "mono8", cam_ns,
                    "camera_gray_left")
            w.camera_info("/kitti/camera_gray/left/camera_info", cam_ns, "camera_gray_left", size,
                          P0[:, :3], [], np.eye(3), P0)
            w.image("/kitti/camera_color/left/image_rect_color", rgb[:, :, ::-1], "bgr8",
                    cam_ns, "camera_gray_left")
            w.camera_info("/kitti/camera_color/left/camera_info", cam_ns, "camera_gray_left",
                          size, P2[:, :3], [], np.eye(3), P2)
            if scan_path.is_file():
                w.cloud("/kitti/velo/pointcloud", read_velodyne(scan_path), velo_ns, "intensity")
        else:
            w.camera_info("/kitti/camera_color_left/camera_info", cam_ns, "camera_color_left",
                          size, P2[:, :3], np.zeros(5), c2c["R_rect_00"], P2,
                          log_ns=cam_ns - 1000)  # logged just before its image
            w.image("/kitti/camera_color_left/image", rgb, "rgb8", cam_ns, "camera_color_left")
            if scan_path.is_file():
                w.cloud("/kitti/velo/pointcloud", read_velodyne(scan_path), cam_ns, "intensity")
    w.close()


@pytest.fixture(scope="module")
def predict():
    """The shipped model, each distinct image inferred once."""
    backend = make_backend(BackendConfig())
    cache: dict[str, np.ndarray] = {}

    def run(rgb: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()
        if key not in cache:
            cache[key] = backend.infer(rgb).fine
        return cache[key]

    return run


@pytest.fixture(scope="module")
def offline(predict):
    """The offline evaluator's mean scores on the scored frames."""
    scores = []
    for drive, i in SCORED:
        calib = find_raw_calib(drive)
        rgb = read_rgb(drive / "image_02" / "data" / f"{i:010d}.png")
        pts = read_velodyne(drive / "velodyne_points" / "data" / f"{i:010d}.bin")
        gt = project_points(pts, calib.velo_to_image, rgb.shape[1], rgb.shape[0])
        scores.append(score_frame(predict(rgb), gt, EvalConfig()))
    return mean_scores(scores)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for layout in LAYOUTS:
        for ros1 in (True, False):
            path = root / (f"{layout}.bag" if ros1 else f"{layout}_ros2")
            write_layout(path, layout, ros1)
            out[(layout, "ros1" if ros1 else "ros2")] = path
    return out


@pytest.mark.parametrize("ros", ["ros1", "ros2"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_evaluates_to_the_offline_abs_rel_with_no_flags(bags, offline, predict, layout,
                                                               ros, tmp_path, capsys):
    s = evaluate(bags[(layout, ros)], tmp_path, predict=predict, plots=False)
    print(f"{layout} {ros}: abs_rel {s['abs_rel']:.4f} (offline {offline['abs_rel']:.4f}); "
          f"{s['camera']}; {s['geometry']}")
    assert s["frames"] == 2 and s["images"] == 3
    assert s["abs_rel"] == pytest.approx(offline["abs_rel"], abs=0.002)
    assert s["metric_abs_rel"] == pytest.approx(offline["metric_abs_rel"], abs=0.002)
    image = {"master": "/kitti/camera_color_left/image_raw",
             "rect_color": "/kitti/camera_color/left/image_rect_color",
             "old": "/kitti/camera_color_left/image"}[layout]
    assert s["camera"].startswith(f"camera: {image} + ")
    assert ("offset" in s["geometry"] and "applied" in s["geometry"])
    assert ("not applied" in s["geometry"]) == (layout != "rect_color"), s["geometry"]


def gt_agreement(frames, T) -> float:
    """Share of the offline evaluator's LiDAR pixels that the bag's geometry ``T`` (LiDAR ->
    camera optical frame) also hits: 1.0 when both project alike."""
    ref_calib = find_raw_calib(DRIVE_0001)
    hits = total = 0
    for f in frames:
        gt = lidar_depth(f.points, f.K, T, f.width, f.height)
        ref = project_points(f.points, ref_calib.velo_to_image, f.width, f.height) > 0
        hits += int(((gt > 0) & ref).sum())
        total += int(ref.sum())
    return hits / total


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_geometry_projects_the_lidar_where_the_offline_evaluator_does(bags, layout):
    """Median-scaled AbsRel hardly moves with a 6 cm shift; the projected pixels do. Before issue
    11 the readers always dropped P's 4th column: right for master and old, not for rect_color."""
    c = read_eval_frames(bags[(layout, "ros2")], slop=0.05)
    scored = [f for f in c.frames if f.points is not None]
    right, _ = velo_to_camera(c, scored[0].camera_frame, "velo_link", P=scored[0].P)
    dropped = c.tf.lookup(scored[0].camera_frame, "velo_link")  # P's 4th column ignored
    got, old = gt_agreement(scored, right), gt_agreement(scored, dropped)
    print(f"{layout}: {100 * got:.0f} % of the offline LiDAR pixels hit, {100 * old:.0f} % when "
          "P's offset is always dropped")
    # master's pykitti tf offsets camera 2 by P[0, 3] / fx only (2-3 mm from P's full offset)
    assert got > 0.7
    if layout == "rect_color":
        assert old < 0.5


def test_explicit_topic_wins_and_ties_are_named():
    types = {"/a/image_raw": "sensor_msgs/msg/Image",
             "/a/camera_info": "sensor_msgs/msg/CameraInfo",
             "/kitti/camera_color_left/image_raw": "sensor_msgs/msg/Image",
             "/kitti/camera_color_left/camera_info": "sensor_msgs/msg/CameraInfo"}
    assert choose_camera(types)[0] == "/kitti/camera_color_left/image_raw"
    assert choose_camera(types, "/a/image_raw", "/a/camera_info", explicit=True)[0] == \
        "/a/image_raw"
    with pytest.raises(TopicChoiceError, match="camera topics found"):
        choose_camera(types, "/missing/image", "/missing/camera_info", explicit=True)
    tie = {"/kitti/camera_color_left/image_raw": "sensor_msgs/msg/Image",
           "/kitti/camera_color_left/image": "sensor_msgs/msg/Image",
           "/kitti/camera_color_left/camera_info": "sensor_msgs/msg/CameraInfo"}
    with pytest.raises(TopicChoiceError, match="several equally good camera topics: "
                       "/kitti/camera_color_left/image, /kitti/camera_color_left/image_raw;"):
        choose_camera(tie, "/cam/image_raw", "/cam/camera_info")


def test_evaluate_bag_cli_names_the_chosen_topics_and_an_explicit_flag_wins(bags, tmp_path):
    import subprocess
    import sys

    bag = bags[("rect_color", "ros1")]
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros.bags.evaluate_bag", "--bag",
                        str(bag), "--out", str(tmp_path / "a"), "--no-plots"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "camera: /kitti/camera_color/left/image_rect_color + /kitti/camera_color/left/" \
           "camera_info (found" in r.stdout
    assert "P's offset" in r.stdout and "applied (its camera is camera_color_left)" in r.stdout
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros.bags.evaluate_bag", "--bag",
                        str(bag), "--out", str(tmp_path / "b"), "--image-topic",
                        "/kitti/camera_color_left/image_raw"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "has no /kitti/camera_color_left/image_raw topic" in r.stderr
    assert "/kitti/camera_color/left/image_rect_color" in r.stderr  # the camera topics it has
    with pytest.raises(BagError, match="has no /x/image_raw"):
        read_eval_frames(bag, KittiTopicsConfig(image_topic="/x/image_raw"), explicit=True)


def test_player_plays_another_layout_under_the_graph_names(bags):
    """kitti_bag_player finds the image_rect_color camera and publishes it also as image_raw."""
    import threading
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from mono_depth_ros.config import BagPlayerConfig
    from mono_depth_ros.ros.bag_player import BagPlayer

    from depth_node_harness import ros_env

    ros_env(75)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=75, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("layout_player_test", context=ctx)
    got: dict[str, list] = {"image": [], "info": []}
    node.create_subscription(Image, "/kitti/camera_color_left/image_raw",
                             lambda m: got["image"].append(m), qos_profile_sensor_data)
    node.create_subscription(CameraInfo, "/kitti/camera_color_left/camera_info",
                             lambda m: got["info"].append(m), qos_profile_sensor_data)
    node.create_subscription(PointCloud2, "/kitti/velo/pointcloud", lambda m: None,
                             qos_profile_sensor_data)  # the player waits for every graph input
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        player = BagPlayer(node, bags[("rect_color", "ros1")],
                           BagPlayerConfig(rate=50.0, max_gap=0.05, wait_for_subscribers=1,
                                           progress=False))
        assert player.camera == ("/kitti/camera_color/left/image_rect_color",
                                 "/kitti/camera_color/left/camera_info")
        assert "played also as /kitti/camera_color_left/image_raw" in player.camera_note
        assert player.wait_for_subscribers()
        player.play_once()
        end = time.monotonic() + 10
        while (len(got["image"]) < 3 or len(got["info"]) < 3) and time.monotonic() < end:
            time.sleep(0.05)
        assert len(got["image"]) == 3 and len(got["info"]) == 3
        assert got["image"][0].encoding == "bgr8"
        assert got["info"][0].header.frame_id == "camera_gray_left"
    finally:
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_live_eval_relays_a_camera_it_finds(bags, offline, tmp_path):
    """The bag plays under its own (image_rect_color) names, as `ros2 bag play` would; nobody
    publishes the depth node's image_raw, so kitti_eval_node finds the camera and relays it. The
    live AbsRel equals the offline evaluator's."""
    import json
    import subprocess
    import sys

    import yaml

    from conftest import REPO
    from depth_node_harness import ros_env

    cfg = yaml.safe_load((REPO / "config" / "kitti_eval.yaml").read_text())
    player = next(n for n in cfg["bringup"]["nodes"] if n["name"] == "kitti_bag_player")
    player["arguments"] += ["--image-topic", "/kitti/camera_color/left/image_rect_color",
                            "--camera-info-topic", "/kitti/camera_color/left/camera_info"]
    cfg["bringup"]["grace_period"] = 6.0
    graph = tmp_path / "graph.yaml"
    graph.write_text(yaml.safe_dump(cfg))
    out, logs = tmp_path / "live", tmp_path / "logs"
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros.ros.bringup", str(graph), "--bag",
                        str(bags[("rect_color", "ros2")]), "--rate", "2", "--output-dir",
                        str(out), "--calib-dir", str(DRIVE_0001.parent), "--log-dir", str(logs),
                        "--timeout", "150"],
                       env=ros_env(76), capture_output=True, text=True, timeout=200, cwd=tmp_path)
    text = "\n".join(p.read_text() for p in logs.glob("*.log"))
    assert r.returncode == 0, r.stdout + r.stderr + text
    assert "camera: /kitti/camera_color/left/image_rect_color + /kitti/camera_color/left/" \
           "camera_info (found" in text and "relayed there" in text, text
    live = json.loads((out / "metrics.json").read_text())
    print(f"live (relayed image_rect_color): abs_rel {live['abs_rel']:.4f}, offline "
          f"{offline['abs_rel']:.4f}")
    assert live["frames"] == 2, text
    assert live["abs_rel"] == pytest.approx(offline["abs_rel"], abs=0.002)
    assert "Traceback" not in text
