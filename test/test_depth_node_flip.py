"""depth_node with ``flip_average:=true`` over real DDS: it says so at start-up and publishes the
depth that ``mono_depth_predict --flip-average`` computes for the same KITTI frame (ONNX Runtime,
the shipped model), which differs from the plain prediction.

The node runs in its own process (as users run it); ROS_DOMAIN_ID 62, loopback-only discovery,
the large-image profile.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from depth_node_harness import (FRAMES, Client, NodeProcess, kitti_image_msg,  # noqa: E402
                                ros_env)

DOMAIN_ID = 62


def _predict(tmp_path, flip: bool) -> np.ndarray:
    out = tmp_path / ("flip" if flip else "plain")
    res = subprocess.run([sys.executable, "-m", "mono_depth_ros.predict", "--images",
                          str(FRAMES[0]), "--out", str(out), "--format", "npy", "--backend",
                          "onnxruntime", "--threads", "1"] + (["--flip-average"] if flip else []),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return np.load(out / f"{FRAMES[0].stem}.npy")


def test_node_publishes_the_flip_averaged_depth(tmp_path):
    from mono_depth_ros.ros.conversions import image_to_depth

    proc = NodeProcess(tmp_path / "depth_node.log",
                       ["-p", "backend:=onnxruntime", "-p", "threads:=1",
                        "-p", "flip_average:=true"], ros_env(DOMAIN_ID))
    client = None
    try:
        assert proc.wait_log("backend:", 90), f"depth_node did not start:\n{proc.log()[-3000:]}"
        assert "+ flip averaging" in proc.log(), proc.log()[-2000:]
        client = Client(DOMAIN_ID)
        assert client.wait_matched(30), f"never matched; node log:\n{proc.log()}"
        got = None
        for attempt in range(4):  # a best-effort frame sent as matching completes may be lost
            stamp = (7, attempt)
            client.publish(kitti_image_msg(FRAMES[0]), None, stamp)
            got = client.wait_for("depth", stamp, 20)
            if got is not None:
                break
        assert got is not None, f"no depth; node log:\n{proc.log()[-2000:]}"
        depth = image_to_depth(got[1])
    finally:
        if client is not None:
            client.close()
        proc.kill()
    flipped, plain = _predict(tmp_path, True), _predict(tmp_path, False)
    np.testing.assert_allclose(depth, flipped, rtol=1e-4, atol=1e-4)
    assert np.median(np.abs(depth / plain - 1)) > 0.005
