"""depth_node end to end: the node in its own process (as users run it), real KITTI frames over DDS.

One node process serves the whole module (module-scoped fixture); tests run in file order and the
last one stops it with SIGINT. ROS_DOMAIN_ID 60, loopback-only discovery, the large-image profile.
"""

import itertools
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from depth_node_harness import (FRAMES, Client, NodeProcess, kitti_image_msg,  # noqa: E402
                                kitti_info_msg, ros_env)

DOMAIN_ID = 60
NODE_ARGS = ["-p", "backend:=torch", "-p", "error_throttle:=0.0", "-p", "publish_depth_mm:=true"]
_stamps = itertools.count(1)


def next_stamp():
    return (1000 + next(_stamps), 500)


@pytest.fixture(scope="module")
def env():
    return ros_env(DOMAIN_ID)


@pytest.fixture(scope="module")
def node(env, tmp_path_factory):
    proc = NodeProcess(tmp_path_factory.mktemp("node") / "depth_node.log", NODE_ARGS, env)
    if not proc.wait_log("backend:", 90):
        proc.kill()
        pytest.fail(f"depth_node did not start:\n{proc.log()[-3000:]}")
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def client(node):
    c = Client(DOMAIN_ID, extra_topics=("depth/mm",))
    assert c.wait_matched(30), f"client and depth_node never matched; node log:\n{node.log()}"
    # Matching is seen by the publisher first; a best-effort frame sent in that instant can be
    # lost by DDS, not by the node. So: send frames (no camera_info) until one is answered.
    for attempt in range(4):
        stamp = (1, attempt)
        c.publish(kitti_image_msg(FRAMES[0]), None, stamp)
        if c.wait_for("depth", stamp, 20) is not None:
            break
    else:
        pytest.fail(f"depth_node answered none of 4 frames; node log:\n{node.log()}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """Depth of FRAMES from the predict CLI (same backend, same default model)."""
    out = tmp_path_factory.mktemp("predict")
    res = subprocess.run([sys.executable, "-m", "mono_depth_ros.predict", "--images",
                          *map(str, FRAMES), "--out", str(out), "--format", "npy",
                          "--backend", "torch"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return {f: np.load(out / f"{f.stem}.npy") for f in FRAMES}


def send_good(client, node, path=FRAMES[0], info=True, timeout=60.0):
    """Publish one KITTI frame and return (stamp, depth message, latency seconds)."""
    stamp = next_stamp()
    t_pub = client.publish(kitti_image_msg(path), kitti_info_msg() if info else None, stamp)
    got = client.wait_for("depth", stamp, timeout)
    assert got is not None, f"no depth for frame {stamp}; node log tail:\n{node.log()[-2000:]}"
    return stamp, got[1], got[0] - t_pub


def depth_array(msg):
    from mono_depth_ros.ros.conversions import image_to_depth

    return image_to_depth(msg)


def test_without_camera_info_depth_is_published_and_warned_once(node, client):
    stamp, msg, _ = send_good(client, node, info=False)
    assert (msg.encoding, msg.width, msg.height) == ("32FC1", 1242, 375)
    assert client.wait_for("depth/camera_info", stamp, 1.0) is None
    send_good(client, node, info=False)
    assert node.log().count("no camera_info") == 1, node.log()


def test_idle_node_does_not_spin(node, client):
    """With no images the worker blocks in DDS's wait set (it once polled without waiting and
    took both cores from inference while idle): under 15 % of one core over 3 s."""
    import os

    def cpu_s():
        fields = open(f"/proc/{node.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    time.sleep(0.5)  # the client fixture's last frame is answered
    before = cpu_s()
    time.sleep(3.0)
    used = cpu_s() - before
    assert used < 0.45, f"idle depth_node used {used:.2f} s of CPU in 3 s"


def test_depth_matches_predict_cli(node, client, predicted):
    for path in FRAMES:
        stamp, msg, _ = send_good(client, node, path)
        assert (msg.encoding, msg.width, msg.height, msg.step) == ("32FC1", 1242, 375, 1242 * 4)
        assert msg.header.frame_id == "camera_optical"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == stamp
        depth = depth_array(msg)
        ref = predicted[path]
        assert ref.shape == depth.shape
        np.testing.assert_allclose(depth, ref, rtol=1e-4, atol=1e-4)
        info = client.wait_for("depth/camera_info", stamp, 5.0)
        assert info is not None, "depth/camera_info missing for a frame with camera_info"
        info = info[1]
        assert (info.width, info.height, info.header.frame_id) == (1242, 375, "camera_optical")
        np.testing.assert_allclose(np.asarray(info.p), kitti_info_msg().p)
        mm = client.wait_for("depth/mm", stamp, 5.0)
        assert mm is not None and mm[1].encoding == "16UC1"
        mm_m = np.frombuffer(bytes(mm[1].data), np.uint16).reshape(375, 1242) / 1000.0
        ok = np.isfinite(depth) & (depth < 65)
        np.testing.assert_allclose(mm_m[ok], depth[ok], atol=6e-4)


def test_another_camera_is_brought_to_the_model_camera_by_its_camera_info(node, client,
                                                                          tmp_path):
    """A centre crop (a longer lens on the same sensor) with its own camera_info: the node
    gives the depth predict gives for the crop with the same intrinsics (--fx/--cx/--cy), not
    the stretched-crop depth of a plain resize."""
    from depth_node_harness import DRIVE1

    from mono_depth_ros.colorize import write_rgb
    from mono_depth_ros.kitti import find_raw_calib, read_rgb
    from mono_depth_ros.ros.conversions import rgb_to_image

    rgb = read_rgb(FRAMES[0])
    x0, y0, cw, ch = 310, 93, 621, 187
    crop = np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw])
    P = find_raw_calib(DRIVE1).P_rect.copy()
    P[0, 2] -= x0
    P[1, 2] -= y0
    info = kitti_info_msg(cw, ch)
    info.p = P.reshape(-1).astype(np.float64)
    info.k = P[:, :3].reshape(-1).astype(np.float64)
    stamp = next_stamp()
    client.publish(rgb_to_image(crop), info, stamp)
    got = client.wait_for("depth", stamp, 60)
    assert got is not None, f"no depth for the cropped camera; node log:\n{node.log()[-2000:]}"
    depth = depth_array(got[1])
    assert depth.shape == (ch, cw)
    write_rgb(tmp_path / "crop.png", crop)
    out = tmp_path / "out"
    common = [sys.executable, "-m", "mono_depth_ros.predict", "--images", str(tmp_path /
              "crop.png"), "--out", str(out), "--backend", "torch"]
    res = subprocess.run(common + ["--fx", str(P[0, 0]), "--fy", str(P[1, 1]), "--cx",
                                   str(P[0, 2]), "--cy", str(P[1, 2])],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(depth, np.load(out / "crop.npy"), rtol=1e-4, atol=1e-4)
    res = subprocess.run(common, capture_output=True, text=True, timeout=300)  # no intrinsics
    plain = np.load(out / "crop.npy")
    assert np.median(plain / depth) < 0.8  # stretched: everything looks nearer


def test_camera_info_arriving_after_its_image_is_paired_by_stamp(node, client):
    """The worker takes an image as soon as it is free, possibly before the executor has read
    the camera_info sent with it: after frames with paired stamps, the node waits briefly for
    the image's own camera_info instead of using the previous camera's."""
    from mono_depth_ros.kitti import read_rgb
    from mono_depth_ros.ros.conversions import rgb_to_image

    x0, y0, cw, ch = 200, 60, 700, 250
    crop = np.ascontiguousarray(read_rgb(FRAMES[0])[y0:y0 + ch, x0:x0 + cw])
    info = kitti_info_msg(cw, ch)
    P = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
    P[0, 2] -= x0
    P[1, 2] -= y0
    info.p = P.reshape(-1)
    info.k = P[:, :3].reshape(-1)
    stamp = next_stamp()
    client.publish(rgb_to_image(crop), info, stamp)  # the pair, camera_info first
    paired = client.wait_for("depth", stamp, 60)
    assert paired is not None, f"no depth; node log:\n{node.log()[-2000:]}"
    send_good(client, node)  # then the full KITTI camera: the newest camera_info
    stamp = next_stamp()
    image = rgb_to_image(crop)
    client.publish(image, None, stamp)
    time.sleep(0.02)
    info.header = image.header  # its own camera_info, 20 ms after the image
    client.pub_info.publish(info)
    late = client.wait_for("depth", stamp, 60)
    assert late is not None, f"no depth; node log:\n{node.log()[-2000:]}"
    np.testing.assert_allclose(depth_array(late[1]), depth_array(paired[1]), rtol=1e-5)
    got = client.wait_for("depth/camera_info", stamp, 5)
    assert got is not None and got[1].p[2] == pytest.approx(P[0, 2])


def test_impossible_intrinsics_are_logged_and_the_frame_still_answered(node, client):
    """A camera_info whose principal point puts the image off the model's canvas: one error
    line, and the frame is answered as without intrinsics instead of failing."""
    info = kitti_info_msg()
    P = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
    P[0, 2] = 50000.0
    info.p = P.reshape(-1)
    start = len(node.log())
    stamp = next_stamp()
    client.publish(kitti_image_msg(FRAMES[0]), info, stamp)
    got = client.wait_for("depth", stamp, 60)
    assert got is not None, f"frame dropped; node log:\n{node.log()[-2000:]}"
    assert node.wait_log("ignoring camera_info intrinsics", 5, start), node.log()[-2000:]
    assert np.isfinite(depth_array(got[1])).mean() > 0.5


def test_depth_camera_info_takes_the_image_header(node, client):
    info = kitti_info_msg()
    info.header.stamp.sec, info.header.frame_id = 7, "calibration_time_frame"
    client.pub_info.publish(info)  # an earlier camera_info with another stamp and frame
    time.sleep(0.3)
    stamp = next_stamp()
    client.publish(kitti_image_msg(FRAMES[0]), None, stamp)
    got = client.wait_for("depth/camera_info", stamp, 30)
    assert got is not None, "depth/camera_info must carry the depth image's stamp"
    assert got[1].header.frame_id == "camera_optical"


def test_distorted_camera_info_on_an_unrectified_topic_is_warned_once(node, client):
    """A camera_info with lens distortion (KITTI's own D_02) while the node reads ``image``,
    not an image_rect topic: one warning naming the fix; frames are still answered."""
    assert "distortion coefficients" not in node.log()  # every earlier camera_info had D = 0
    info = kitti_info_msg()
    info.d = [-0.369, 0.197, 0.00135, 0.000568, -0.0688]
    start = len(node.log())
    for _ in range(2):
        stamp = next_stamp()
        client.publish(kitti_image_msg(FRAMES[0]), info, stamp)
        assert client.wait_for("depth", stamp, 60) is not None, node.log()[-2000:]
    assert node.wait_log("distortion coefficients", 5, start), node.log()[-2000:]
    tail = node.log()[start:]
    assert tail.count("distortion coefficients") == 1, tail
    assert "image_rect" in tail and "/image" in tail


def test_extra_outputs_follow_subscribers(node, client):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    from mono_depth_ros.ros.conversions import cloud_to_array

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    stamp, _, _ = send_good(client, node)
    assert not client.received.get("depth/coarse"), "coarse published without subscribers"
    client.subscribe("depth/coarse", Image, qos)
    client.subscribe("depth/color", Image, qos)
    client.subscribe("depth/points", PointCloud2, qos)
    assert client.wait_matched(20)
    stamp, msg, _ = send_good(client, node)
    depth = depth_array(msg)
    coarse = client.wait_for("depth/coarse", stamp, 10)
    color = client.wait_for("depth/color", stamp, 10)
    cloud = client.wait_for("depth/points", stamp, 10)
    assert coarse and color and cloud, "extra outputs missing while subscribed"
    assert (coarse[1].encoding, coarse[1].width, coarse[1].height) == ("32FC1", 1242, 375)
    assert (color[1].encoding, color[1].width, color[1].height) == ("bgr8", 1242, 375)
    pts = cloud_to_array(cloud[1])
    assert pts.shape == (375, 1242) and cloud[1].header.frame_id == "camera_optical"
    np.testing.assert_allclose(pts["z"], depth, rtol=1e-6)
    K = np.asarray(kitti_info_msg().p).reshape(3, 4)[:, :3]
    v, u = 300, 100
    assert pts["x"][v, u] == pytest.approx((u - K[0, 2]) / K[0, 0] * depth[v, u], rel=1e-4)
    assert pts["y"][v, u] == pytest.approx((v - K[1, 2]) / K[1, 1] * depth[v, u], rel=1e-4)
    for topic in ("depth/coarse", "depth/color", "depth/points"):
        client.node.destroy_subscription(client.subs.pop(topic))


def bad_images():
    """(name, Image, words the error line must contain) for every kind of bad input."""
    good = kitti_image_msg(FRAMES[0])

    def variant(**changes):
        m = kitti_image_msg(FRAMES[0]) if "data" not in changes else type(good)()
        for k in ("height", "width", "encoding", "step", "is_bigendian"):
            setattr(m, k, getattr(good, k))
        for k, v in changes.items():
            setattr(m, k, v)
        return m

    small = bytes(64 * 48 * 3)
    return [
        ("unsupported encoding", variant(encoding="jpeg"), "unsupported encoding 'jpeg'"),
        ("depth encoding", variant(encoding="32FC1"), "unsupported encoding '32FC1'"),
        ("empty encoding", variant(encoding=""), "unsupported encoding ''"),
        ("zero size", variant(height=0, width=0, step=0, data=b""), "zero size"),
        ("step shorter than row", variant(step=1000), "shorter than one row"),
        ("truncated data", variant(data=bytes(len(good.data) - 3726)), "expected step x height"),
        ("too much data", variant(data=bytes(len(good.data) + 1)), "expected step x height"),
        ("absurd size", variant(height=100000, width=100000, step=300000, data=small),
         "exceeds the limit"),
        ("bad is_bigendian", variant(is_bigendian=9), "is_bigendian"),
    ]


def test_every_bad_input_is_rejected_and_the_next_good_frame_answered(node, client):
    for name, msg, words in bad_images():
        start = len(node.log())
        client.publish(msg, kitti_info_msg(), next_stamp())
        assert node.wait_log(words, 15, start), f"{name}: no error line with {words!r}"
        lines = [ln for ln in node.log()[start:].splitlines() if "dropped image" in ln]
        assert len(lines) == 1 and "ERROR" in lines[0], f"{name}: {lines}"
        send_good(client, node)
        assert node.proc.poll() is None, f"node exited after {name}"


def test_bad_input_errors_are_throttled(node, client):
    def send_bad():
        msg = kitti_image_msg(FRAMES[0])
        msg.encoding = "jpeg"
        client.publish(msg, None, next_stamp())
        time.sleep(0.5)  # let the worker look at it before the next frame replaces it

    assert all(r.successful for r in client.set_parameters("depth_node",
                                                           {"error_throttle": 60.0}))
    start = len(node.log())
    for _ in range(3):
        send_bad()
    send_good(client, node)
    assert node.log()[start:].count("dropped image") == 0, node.log()[start:]
    assert all(r.successful for r in client.set_parameters("depth_node",
                                                           {"error_throttle": 0.0}))
    send_bad()
    assert node.wait_log("(+3 similar suppressed)", 10, start), node.log()[start:]


def test_overload_answers_newest_frames_with_bounded_latency(node, client):
    _, _, single = send_good(client, node)  # one frame's end-to-end latency when idle
    msg, info = kitti_image_msg(FRAMES[1]), kitti_info_msg()
    sent = []
    rate = max(15.0, 3.0 / single)  # well above what the node can answer, however fast it is
    n = max(12, int(4 * single * rate))  # about four inference times of frames
    for _ in range(n):
        stamp = next_stamp()
        sent.append((stamp, client.publish(msg, info, stamp)))
        time.sleep(1.0 / rate)
    last = client.wait_for("depth", sent[-1][0], 30 + 3 * single)
    assert last is not None, "the newest frame was not answered"
    time.sleep(0.5)
    keys = {s for s, _ in sent}
    answered = [(t, m) for t, m in client.messages("depth")
                if (m.header.stamp.sec, m.header.stamp.nanosec) in keys]
    order = [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in answered]
    assert order == sorted(order), "answers out of order"
    assert len(answered) < n, "the node answered every frame although the camera outran it"
    published_at = dict(sent)
    latencies = [t - published_at[(m.header.stamp.sec, m.header.stamp.nanosec)]
                 for t, m in answered]
    # An answered frame waited at most one inference in DDS plus its own inference. One frame
    # takes `single` when idle, or the longest gap between two answers when the machine is
    # loaded (a queue would answer every frame, with latencies growing to ~n inferences).
    times = sorted(t for t, _ in answered)
    unit = max([single] + [b - a for a, b in zip(times, times[1:])])
    bound = 2.5 * unit + 1.0
    assert max(latencies) < bound, f"latency grew: {latencies} (one frame: {unit:.2f} s)"
    diag = latest_diagnostics(client)
    assert int(diag["dropped_frames"]) > 0


def latest_diagnostics(client, timeout=5.0):
    end = time.monotonic() + timeout
    start = len(client.messages("/diagnostics"))
    while time.monotonic() < end:
        msgs = client.messages("/diagnostics")
        if len(msgs) > start:
            status = msgs[-1][1].status[0]
            return {kv.key: kv.value for kv in status.values} | {"_name": status.name}
        time.sleep(0.05)
    pytest.fail("no /diagnostics message within 5 s")


def test_diagnostics_report_backend_rates_latency_and_counts(node, client):
    diag = latest_diagnostics(client)
    assert diag["backend"].startswith("torch")
    for key in ("input_rate_hz", "output_rate_hz", "latency_p50_ms", "latency_p99_ms"):
        float(diag[key])
    assert float(diag["latency_p99_ms"]) >= float(diag["latency_p50_ms"]) > 0
    assert int(diag["rejected_frames"]) >= len(bad_images())
    assert int(diag["frames_out"]) > 0 and "depth_node" in diag["_name"]
    # per-stage times of the worker (node_benchmark reads the running totals)
    stages = ("wait", "decode", "preprocess", "inference", "postprocess", "publish")
    for stage in stages:
        assert float(diag[f"stage_{stage}_p50_ms"]) >= 0
        assert float(diag[f"stage_{stage}_total_ms"]) >= float(diag[f"stage_{stage}_p50_ms"])
    assert float(diag["stage_inference_p50_ms"]) > float(diag["stage_decode_p50_ms"])


@pytest.mark.parametrize("values,reason", [
    ({"max_depth": -1.0}, "out of range"),
    ({"min_depth": 2000.0}, "min_depth"),
    ({"scale.mode": "sky"}, "not one of"),
    ({"backend": "onnxruntime"}, "read-only"),
    ({"qos_depth": 10}, "read-only"),
    ({"output_width": 320}, "both"),
    ({"points_stride": 0}, "out of range"),
])
def test_invalid_parameters_are_rejected_with_reason(node, client, values, reason):
    results = client.set_parameters("depth_node", values)
    assert len(results) == 1 and not results[0].successful
    assert reason in results[0].reason, results[0].reason


def test_output_size_changes_at_run_time(node, client):
    res = client.set_parameters("depth_node", {"output_width": 621, "output_height": 188},
                                atomically=True)
    assert res[0].successful, res[0].reason
    try:
        stamp, msg, _ = send_good(client, node)
        assert (msg.width, msg.height) == (621, 188)
        info = client.wait_for("depth/camera_info", stamp, 5)[1]
        assert (info.width, info.height) == (621, 188)
        K = np.asarray(info.k).reshape(3, 3)
        assert K[0, 0] == pytest.approx(kitti_info_msg().k[0] * 621 / 1242)
    finally:
        client.set_parameters("depth_node", {"output_width": 0, "output_height": 0},
                              atomically=True)


def test_valid_run_time_change_is_applied(node, client):
    res = client.set_parameters("depth_node", {"max_depth": 20.0})
    assert res[0].successful, res[0].reason
    _, msg, _ = send_good(client, node)
    d = depth_array(msg)
    assert np.nanmax(d) <= 20.0
    client.set_parameters("depth_node", {"max_depth": 1000.0})


def test_ground_plane_scale_multiplies_depth_by_the_reported_scale(node, client):
    _, msg, _ = send_good(client, node, FRAMES[0])
    plain = depth_array(msg)
    res = client.set_parameters("depth_node", {"scale.mode": "ground_plane",
                                               "scale.camera_height": 1.65})
    assert all(r.successful for r in res), [r.reason for r in res]
    try:
        _, msg, _ = send_good(client, node, FRAMES[0])
        scaled = depth_array(msg)
        diag = latest_diagnostics(client)
        assert diag["scale_mode"] == "ground_plane"
        ratio = scaled / plain
        np.testing.assert_allclose(ratio, float(diag["scale"]), rtol=1e-3)
        # share of frames with an accepted plane since the scaler was made (a scale other than
        # 1 needs one); scale_rejection says why the last one was rejected, if it was
        fit_rate = float(diag["scale_fit_rate"])
        assert 0.0 <= fit_rate <= 1.0 and "scale_rejection" in diag
        assert fit_rate > 0.0 or float(diag["scale"]) == 1.0
    finally:
        client.set_parameters("depth_node", {"scale.mode": "none"})


def test_parameter_descriptors_come_from_the_config_metadata(node, client):
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import DescribeParameters

    names = ["max_depth", "points_stride", "backend", "publish_depth_mm", "scale.mode"]
    resp = client.call(DescribeParameters, "/depth_node/describe_parameters",
                       DescribeParameters.Request(names=names))
    assert resp is not None
    d = {x.name: x for x in resp.descriptors}
    assert d["max_depth"].type == ParameterType.PARAMETER_DOUBLE
    assert d["max_depth"].floating_point_range[0].from_value == 0.01
    assert "NaN" in d["max_depth"].description
    assert d["points_stride"].integer_range[0].to_value == 32
    assert d["backend"].read_only and d["publish_depth_mm"].read_only
    assert not d["max_depth"].read_only
    assert "ground_plane" in d["scale.mode"].additional_constraints


def test_sigint_during_inference_exits_cleanly_within_2s(node, client):
    client.publish(kitti_image_msg(FRAMES[0]), kitti_info_msg(), next_stamp())
    time.sleep(0.3)
    rc, took = node.sigint(timeout=10)
    assert rc == 0, f"exit code {rc}; log tail:\n{node.log()[-2000:]}"
    assert took < 2.0, f"took {took:.2f} s to exit"
    assert "Traceback" not in node.log()
