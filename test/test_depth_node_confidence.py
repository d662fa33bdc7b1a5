"""depth_node's confidence over real DDS: depth/confidence only while subscribed, min_confidence
turning low-confidence depth into NaN, and a model without the head saying so once.

The node runs in its own process (as users run it) with a small checkpoint that has the head;
ROS_DOMAIN_ID 83, loopback-only discovery, the large-image profile.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from depth_node_harness import (FRAMES, Client, NodeProcess, kitti_image_msg,  # noqa: E402
                                kitti_info_msg, ros_env)

DOMAIN_ID = 83
_stamps = itertools.count(1)


def _small_checkpoint(path, confidence: bool = True):
    """A small model; with the head, the head is moved off its flat start."""
    import torch

    from mono_depth_ros.config import ModelConfig
    from mono_depth_ros.model_io import save_checkpoint
    from mono_depth_ros.networks import DepthCascade

    torch.manual_seed(0)
    model = DepthCascade(ModelConfig(height=64, width=192, confidence=confidence))
    if confidence:
        torch.nn.init.normal_(model.fine.confidence[2].weight, std=0.05)
    save_checkpoint(path, {"model_config": asdict(model.cfg), "state_dict": model.state_dict(),
                           "stage": "fine", "meta": {}})
    return path


@pytest.fixture(scope="module")
def head_checkpoint(tmp_path_factory):
    return _small_checkpoint(tmp_path_factory.mktemp("head") / "model.pt")


def _start(tmp_path_factory, args):
    proc = NodeProcess(tmp_path_factory.mktemp("node") / "depth_node.log",
                       ["-p", "backend:=torch", "-p", "error_throttle:=0.0",
                        "-p", "publish_depth_mm:=true", *args], ros_env(DOMAIN_ID))
    if not proc.wait_log("backend:", 90):
        proc.kill()
        pytest.fail(f"depth_node did not start:\n{proc.log()[-3000:]}")
    client = Client(DOMAIN_ID, extra_topics=("depth/mm",))
    if not client.wait_matched(30):
        client.close()
        proc.kill()
        pytest.fail(f"client and depth_node never matched; node log:\n{proc.log()}")
    return proc, client


@pytest.fixture(scope="module")
def head_node(tmp_path_factory, head_checkpoint):
    proc, client = _start(tmp_path_factory, ["-p", f"checkpoint:={head_checkpoint}"])
    yield proc, client
    client.close()
    proc.kill()


def send(proc, client, timeout=60.0):
    """One KITTI frame with camera_info; (stamp, depth message). Retries while DDS settles."""
    for _ in range(4):
        stamp = (2000 + next(_stamps), 0)
        client.publish(kitti_image_msg(FRAMES[0]), kitti_info_msg(), stamp)
        got = client.wait_for("depth", stamp, timeout / 4)
        if got is not None:
            return stamp, got[1]
    pytest.fail(f"no depth for 4 frames; node log tail:\n{proc.log()[-2000:]}")


def _subscribe_confidence(client):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    client.subscribe("depth/confidence", Image,
                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    end = time.monotonic() + 20
    while not client.subs["depth/confidence"].get_publisher_count():
        assert time.monotonic() < end, "depth/confidence never matched"
        time.sleep(0.05)


def _array(msg):
    from mono_depth_ros.ros.conversions import image_to_depth

    return image_to_depth(msg)


def test_confidence_follows_subscribers_and_matches_the_backend(head_node, head_checkpoint):
    from mono_depth_ros.backends.torch_backend import TorchBackend
    from mono_depth_ros.kitti import read_rgb

    proc, client = head_node
    send(proc, client)
    assert "depth/confidence" not in client.received, "published without subscribers"
    _subscribe_confidence(client)
    stamp, depth_msg = send(proc, client)
    got = client.wait_for("depth/confidence", stamp, 10)
    assert got is not None, f"no depth/confidence while subscribed:\n{proc.log()[-2000:]}"
    msg = got[1]
    assert (msg.encoding, msg.width, msg.height) == ("32FC1", 1242, 375)
    assert msg.header.frame_id == depth_msg.header.frame_id == "camera_optical"
    conf = _array(msg)
    assert 0.0 <= float(conf.min()) and float(conf.max()) <= 1.0 and float(conf.std()) > 1e-3
    ref = TorchBackend(head_checkpoint).infer(read_rgb(FRAMES[0])).confidence
    np.testing.assert_allclose(conf, ref, atol=1e-5)
    assert not np.isnan(_array(depth_msg)).any()  # min_confidence is off by default


def test_min_confidence_turns_low_confidence_depth_into_nan(head_node):
    proc, client = head_node
    stamp, _ = send(proc, client)
    conf = _array(client.wait_for("depth/confidence", stamp, 10)[1])
    threshold = float(np.median(conf))
    assert client.set_parameters("depth_node", {"min_confidence": threshold})[0].successful
    assert not client.set_parameters("depth_node", {"min_confidence": 1.5})[0].successful
    stamp, depth_msg = send(proc, client)
    conf = _array(client.wait_for("depth/confidence", stamp, 10)[1])
    depth = _array(depth_msg)
    low = conf < threshold
    assert 0.2 < low.mean() < 0.8
    np.testing.assert_array_equal(np.isnan(depth), low)
    mm = client.wait_for("depth/mm", stamp, 10)[1]
    mm = np.frombuffer(bytes(mm.data), np.uint16).reshape(375, 1242)
    assert (mm[low] == 0).all() and (mm[~low] > 0).mean() > 0.99
    assert client.set_parameters("depth_node", {"min_confidence": 0.0})[0].successful
    _, depth_msg = send(proc, client)
    assert not np.isnan(_array(depth_msg)).any()


def test_model_without_head_publishes_no_confidence_and_says_so_once(tmp_path_factory, head_node):
    """A checkpoint without the head (as every model before it): no depth/confidence, depth
    untouched by min_confidence, one warning line."""
    head_node[1].close()  # one client per domain and process at a time
    head_node[0].kill()
    old = _small_checkpoint(tmp_path_factory.mktemp("nohead") / "model.pt", confidence=False)
    proc, client = _start(tmp_path_factory, ["-p", "min_confidence:=0.5",
                                             "-p", f"checkpoint:={old}"])
    try:
        _subscribe_confidence(client)
        for _ in range(2):
            stamp, depth_msg = send(proc, client)
        assert not np.isnan(_array(depth_msg)).any()
        time.sleep(0.5)
        assert not client.messages("depth/confidence")
        assert proc.log().count("no confidence head") == 1, proc.log()
    finally:
        client.close()
        proc.kill()
