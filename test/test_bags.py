"""kitti_to_bag round trip, ROS 1 (kitti2bag) bags, broken bags (issue 6). No rclpy node."""

import subprocess
import sys

import numpy as np
import pytest

from mono_depth_ros.bags import topics
from mono_depth_ros.bags.evaluate_bag import velo_to_camera
from mono_depth_ros.bags.kitti_to_bag import convert, main as kitti_to_bag_main
from mono_depth_ros.bags.reader import BagError, read_eval_frames
from mono_depth_ros.kitti import find_raw_calib, read_rgb, read_timestamps, read_velodyne

from conftest import DRIVE_0001, DRIVE_0005


@pytest.fixture(scope="module")
def bag_0001(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "drive_0001"
    convert(DRIVE_0001, out, frames=[5, 50], progress=False)
    return out


def test_round_trip_with_rosbags_and_rclpy(bag_0001):
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    calib = find_raw_calib(DRIVE_0001)
    stamps = read_timestamps(DRIVE_0001 / "image_02" / "timestamps.txt")
    cls = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
           "sensor_msgs/msg/PointCloud2": PointCloud2}
    seen = {}
    with AnyReader([bag_0001]) as reader:
        assert {c.topic for c in reader.connections} == {
            topics.IMAGE_TOPIC, topics.CAMERA_INFO_TOPIC, topics.LIDAR_TOPIC,
            topics.TF_STATIC_TOPIC}
        for conn, t, raw in reader.messages():
            seen.setdefault(conn.topic, []).append((t, conn, raw))
            if conn.msgtype in cls:
                msg = deserialize_message(bytes(raw), cls[conn.msgtype])  # rclpy reads it
                st = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                assert abs(st - t) <= 1000
    imgs = seen[topics.IMAGE_TOPIC]
    assert len(imgs) == 2 and len(seen[topics.CAMERA_INFO_TOPIC]) == 2
    assert len(seen[topics.LIDAR_TOPIC]) == 1 and len(seen[topics.TF_STATIC_TOPIC]) == 1
    img = deserialize_message(bytes(imgs[1][2]), Image)
    # kitti2bag master's layout (issue 11): image_raw, bgr8
    assert topics.IMAGE_TOPIC == "/kitti/camera_color_left/image_raw"
    assert img.encoding == "bgr8" and img.header.frame_id == "camera_color_left"
    assert abs(img.header.stamp.sec + img.header.stamp.nanosec * 1e-9 - stamps[50]) < 1e-6
    bgr = np.frombuffer(bytes(img.data), np.uint8).reshape(img.height, img.width, 3)
    np.testing.assert_array_equal(bgr[:, :, ::-1],
                                  read_rgb(DRIVE_0001 / "image_02/data/0000000050.png"))
    info = deserialize_message(bytes(seen[topics.CAMERA_INFO_TOPIC][0][2]), CameraInfo)
    assert info.header.stamp == deserialize_message(bytes(imgs[0][2]), Image).header.stamp
    np.testing.assert_allclose(np.reshape(info.p, (3, 4)), calib.P_rect)
    assert (info.width, info.height) == (1242, 375)
    cloud = deserialize_message(bytes(seen[topics.LIDAR_TOPIC][0][2]), PointCloud2)
    assert cloud.header.frame_id == "velo_link" and [f.name for f in cloud.fields] == [
        "x", "y", "z", "intensity"]
    pts = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(pts, read_velodyne(DRIVE_0001 /
                                                     "velodyne_points/data/0000000005.bin"))


def test_reader_frames_and_tf_static(bag_0001):
    c = read_eval_frames(bag_0001)
    assert [f.points is not None for f in c.frames] == [True, False]
    assert c.unmatched_images == 1
    calib = find_raw_calib(DRIVE_0001)
    T = c.tf.lookup("camera_color_left", "velo_link")  # velo -> camera optical
    np.testing.assert_allclose(T, calib.velo_to_cam_optical, atol=1e-6)
    # camera 0 (rectified) too, as kitti2bag: camera 2 sits at P_rect_02's offset from it
    np.testing.assert_allclose(c.tf.lookup("camera_gray_left", "velo_link"), calib.velo_to_rect,
                               atol=1e-6)
    assert "is the camera itself" in velo_to_camera(c, "camera_color_left", "velo_link",
                                                    P=c.frames[0].P)[1]


def test_two_drives_one_bag_in_stamp_order(tmp_path):
    s = convert([DRIVE_0005, DRIVE_0001], tmp_path / "both", progress=False)
    assert s["frames"] == [5, 50, 100, 137] and s["scans"] == 2


def test_missing_frame_and_existing_output_are_one_line(tmp_path, capsys):
    assert kitti_to_bag_main([str(DRIVE_0001), str(tmp_path / "x"), "--frames", "7"]) == 2
    err = capsys.readouterr().err
    assert "no image_02 PNG for frame(s) 7" in err and "Traceback" not in err
    (tmp_path / "y").mkdir()
    assert kitti_to_bag_main([str(DRIVE_0001), str(tmp_path / "y")]) == 2


@pytest.mark.parametrize("cut", [300, 3_000_000])
def test_truncated_bag_is_one_clear_line(bag_0001, tmp_path, cut):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.yaml").write_bytes((bag_0001 / "metadata.yaml").read_bytes())
    data = (bag_0001 / "drive_0001.mcap").read_bytes()
    (bad / "drive_0001.mcap").write_bytes(data[:cut])
    with pytest.raises(BagError, match="truncated|corrupt"):
        read_eval_frames(bad)
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros.bags.evaluate_bag", "--bag",
                        str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "evaluate_bag: error:" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "error" in ln]) == 1


def test_not_a_bag(tmp_path):
    p = tmp_path / "x.bag"
    p.write_bytes(b"definitely not a bag")
    with pytest.raises(BagError):
        read_eval_frames(p)
    with pytest.raises(BagError, match="not found"):
        read_eval_frames(tmp_path / "missing")


def test_ros1_kitti2bag_style_bag(tmp_path, bag_0001):
    """A ROS 1 bag with kitti2bag's topics, bgr8 images and ROS 1 field names (K, P)."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    T = ts.types
    rgb = read_rgb(DRIVE_0001 / "image_02/data/0000000005.png")
    scan = read_velodyne(DRIVE_0001 / "velodyne_points/data/0000000005.bin")
    calib = find_raw_calib(DRIVE_0001)
    stamp = T["builtin_interfaces/msg/Time"](sec=1317042146, nanosec=477058304)

    def header(frame):
        return T["std_msgs/msg/Header"](seq=0, stamp=stamp, frame_id=frame)

    img = T["sensor_msgs/msg/Image"](header=header("camera_color_left"), height=375, width=1242,
                                     encoding="bgr8", is_bigendian=0, step=1242 * 3,
                                     data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1))
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                do_rectify=False)
    info = T["sensor_msgs/msg/CameraInfo"](header=header("camera_color_left"), height=375,
                                           width=1242, distortion_model="plumb_bob",
                                           D=np.zeros(5), K=calib.K.reshape(-1),
                                           R=np.eye(3).reshape(-1),
                                           P=calib.P_rect.reshape(-1), binning_x=0, binning_y=0,
                                           roi=roi)
    PF = T["sensor_msgs/msg/PointField"]
    cloud = T["sensor_msgs/msg/PointCloud2"](
        header=header("velo_link"), height=1, width=len(scan),
        fields=[PF(name=n, offset=o, datatype=7, count=1) for n, o in
                (("x", 0), ("y", 4), ("z", 8), ("intensity", 12))],
        is_bigendian=False, point_step=16, row_step=16 * len(scan),
        data=np.frombuffer(scan.astype("<f4").tobytes(), np.uint8), is_dense=True)
    path = tmp_path / "kitti2bag.bag"
    t = 1317042146477058304
    with Writer(path) as w:
        for topic, msg, typ in ((topics.IMAGE_TOPIC, img, "sensor_msgs/msg/Image"),
                                (topics.CAMERA_INFO_TOPIC, info, "sensor_msgs/msg/CameraInfo"),
                                (topics.LIDAR_TOPIC, cloud, "sensor_msgs/msg/PointCloud2")):
            c = w.add_connection(topic, typ, typestore=ts)
            w.write(c, t, ts.serialize_ros1(msg, typ))
    c1 = read_eval_frames(path)
    c2 = read_eval_frames(bag_0001)
    f1, f2 = c1.frames[0], c2.frames[0]
    np.testing.assert_array_equal(f1.rgb, f2.rgb)  # bgr8 decoded to the same RGB
    np.testing.assert_allclose(f1.K, f2.K)
    np.testing.assert_allclose(f1.points, f2.points)
