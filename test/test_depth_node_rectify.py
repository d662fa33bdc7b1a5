"""depth_node on an unrectified camera stream: subscribed (by remapping, as users do) to an
``image_raw`` topic whose camera_info carries KITTI's real lens distortion, it warns once that
depth assumes a rectified image and names what to do, and still answers every frame.

The node runs in its own process; ROS_DOMAIN_ID 63, loopback-only discovery, the large-image
profile.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from depth_node_harness import (FRAMES, Client, NodeProcess, kitti_image_msg,  # noqa: E402
                                kitti_info_msg, kitti_raw_distortion, ros_env)

DOMAIN_ID = 63
WARNING = "is an unrectified image name and its camera_info has lens distortion"


def test_unrectified_image_with_distortion_is_warned_once_and_answered(tmp_path):
    proc = NodeProcess(tmp_path / "depth_node.log",
                       ["-p", "backend:=onnxruntime", "-p", "threads:=1",
                        "-r", "image:=/front/image_raw", "-r", "camera_info:=/front/camera_info"],
                       ros_env(DOMAIN_ID))
    client = None
    try:
        assert proc.wait_log("backend:", 90), f"depth_node did not start:\n{proc.log()[-3000:]}"
        client = Client(DOMAIN_ID, image_topic="/front/image_raw",
                        info_topic="/front/camera_info")
        assert client.wait_matched(30), f"never matched; node log:\n{proc.log()}"
        answered = []
        for attempt in range(6):  # a best-effort frame sent as matching completes may be lost
            info = kitti_info_msg()
            info.d = kitti_raw_distortion()
            stamp = (9, attempt)
            client.publish(kitti_image_msg(FRAMES[0]), info, stamp)
            if client.wait_for("depth", stamp, 20) is not None:
                answered.append(stamp)
            if len(answered) == 2:
                break
        assert len(answered) == 2, f"depth_node answered {answered}; log:\n{proc.log()[-2000:]}"
        log = proc.log()
        assert log.count(WARNING) == 1, log[-3000:]
        line = next(ln for ln in log.splitlines() if WARNING in ln)
        assert "/front/image_raw" in line and "plumb_bob" in line and "image_rect" in line, line
    finally:
        if client is not None:
            client.close()
        proc.kill()
