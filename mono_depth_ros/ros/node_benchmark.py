"""Benchmark depth_node through DDS against bare inference of the same backend, in one run.

``python -m mono_depth_ros.ros.node_benchmark --frames 1000 [--backend torch]``

1. Bare: the backend's ``infer`` on the KITTI sample frames in this process (frames per second).
2. Node: depth_node in its own process (as users run it); this process publishes real KITTI frames
   with camera_info at ``--rate-factor`` x the bare rate (the camera outruns the model, so the node
   is never idle) and records each depth message: end-to-end latency (publish -> depth received),
   throughput, drop rate, and the node's RSS after warm-up and at the end.
Prints a Markdown table (and ``--json``). Uses loopback-only discovery and the large-image profile.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "kitti_sample" / "2011_09_26"


def sample_frames() -> list[Path]:
    """The KITTI sample's image_02 frames."""
    from ..sample_frames import all_frames

    try:
        return [f.image for f in all_frames()]
    except FileNotFoundError as exc:
        raise SystemExit(f"node_benchmark: error: {exc}") from None


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def bare_inference(args, images: list[np.ndarray], n: int) -> dict:
    """Frames per second and latency of ``backend.infer`` alone, same frames and size."""
    from ..backends.factory import create_backend
    from ..config import BackendConfig, from_dict

    backend = create_backend(from_dict(BackendConfig, {"backend": args.backend,
                                                       "checkpoint": args.checkpoint,
                                                       "threads": args.threads}))
    for img in images[:2]:
        backend.infer(img)  # warm-up
    times = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        backend.infer(images[i % len(images)])
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    return {"backend": backend.describe(), "frames": n, "fps": n / total,
            "latency_p50_ms": 1000 * float(np.median(times)),
            "latency_p99_ms": 1000 * float(np.percentile(times, 99))}


def node_run(args, images: list[np.ndarray], n: int, rate: float, env: dict) -> dict:
    """Publish ``n`` frames at ``rate`` Hz to depth_node in another process; measure its output."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from . import lifecycle
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from ..kitti import find_raw_calib
    from .conversions import rgb_to_image

    script = Path(sys.executable).parent / "depth_node"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m",
                                                 "mono_depth_ros.ros.depth_node"]
    cmd += ["--ros-args", "-p", f"backend:={args.backend}", "-p", f"threads:={args.threads}"]
    if args.checkpoint:
        cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    stop = lifecycle.install().defer()  # from here a signal stops the run and the node
    node_proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    lifecycle.init([])
    client = rclpy.create_node("node_benchmark")
    pub = client.create_publisher(Image, "image", qos_profile_sensor_data)
    pub_info = client.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
    received: dict[int, float] = {}
    lock = threading.Lock()

    def on_depth(msg):
        with lock:
            received[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = time.monotonic()

    client.create_subscription(Image, "depth", on_depth,
                               QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        end = time.monotonic() + 120
        while not (pub.get_subscription_count() and client.count_publishers("depth")):
            if node_proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"node_benchmark: error: depth_node did not start: "
                                 f"{node_proc.stderr.read().strip()[-500:]}")
            if stop.wait(0.1):
                raise Interrupted()
        calib = find_raw_calib(SAMPLE / "2011_09_26_drive_0001_sync")
        info = CameraInfo(width=images[0].shape[1], height=images[0].shape[0],
                          distortion_model="plumb_bob")
        info.k = calib.K.reshape(-1)
        info.p = calib.P_rect.reshape(-1)
        msgs = [rgb_to_image(img) for img in images]
        warmup = max(5, n // 20)
        sent: dict[int, float] = {}
        rss_warm = None
        t_start = time.monotonic()
        for i in range(n + warmup):
            if stop.requested:
                raise Interrupted()
            if i == warmup:
                stop.wait(2.0)  # let warm-up frames finish before counting
                rss_warm = rss_mb(node_proc.pid)
                t_start = time.monotonic()
            msg = msgs[i % len(msgs)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1 + i, 0
            msg.header.frame_id = "camera_optical"
            info.header = msg.header
            pub_info.publish(info)
            t = time.monotonic()
            pub.publish(msg)
            if i >= warmup:
                sent[(1 + i) * 10**9] = t
            next_t = t_start + (i + 1 - warmup) / rate if i >= warmup else t + 1.0 / rate
            stop.wait(max(0.0, next_t - time.monotonic()))
        last = max(sent)
        end = time.monotonic() + 30
        while last not in received and time.monotonic() < end:
            if stop.wait(0.05):
                raise Interrupted()
        with lock:
            got = {k: received[k] for k in sent if k in received}
        duration = (max(got.values()) - min(sent.values())) if got else float("nan")
        rss_end = rss_mb(node_proc.pid)
        lat = np.array([got[k] - sent[k] for k in got]) * 1000
        return {"published": len(sent), "answered": len(got), "rate_hz": rate,
                "fps": len(got) / duration if got else 0.0,
                "drop_rate": 1 - len(got) / len(sent),
                "latency_p50_ms": float(np.median(lat)) if lat.size else float("nan"),
                "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
                "rss_warm_mb": rss_warm, "rss_end_mb": rss_end,
                "rss_drift_mb": rss_end - rss_warm}
    finally:
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        lifecycle.finish(executor, [client], timeout=1.0)


class Interrupted(Exception):
    """SIGINT/SIGTERM during the node run (the node has been stopped)."""


def table(bare: dict, node: dict) -> str:
    """Markdown table of the two runs side by side."""
    ratio = node["fps"] / bare["fps"]
    rows = [
        ("backend", bare["backend"], bare["backend"]),
        ("frames measured", bare["frames"], f"{node['answered']} answered of {node['published']} "
                                            f"published at {node['rate_hz']:.1f} Hz"),
        ("throughput (frames/s)", f"{bare['fps']:.2f}", f"{node['fps']:.2f} ({ratio:.2f} x bare)"),
        ("latency p50 (ms)", f"{bare['latency_p50_ms']:.0f}",
         f"{node['latency_p50_ms']:.0f} (publish -> depth received)"),
        ("latency p99 (ms)", f"{bare['latency_p99_ms']:.0f}", f"{node['latency_p99_ms']:.0f}"),
        ("dropped (stale) frames", "-", f"{100 * node['drop_rate']:.1f} %"),
        ("node RSS after warm-up -> end (MB)", "-",
         f"{node['rss_warm_mb']:.0f} -> {node['rss_end_mb']:.0f} "
         f"(drift {node['rss_drift_mb']:+.1f})"),
    ]
    out = ["| | bare inference | depth_node over DDS |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames through the node")
    parser.add_argument("--bare-frames", type=int, default=100, help="frames of bare inference")
    parser.add_argument("--backend", default="auto",
                        choices=("auto", "tensorrt", "onnxruntime", "torch"))
    parser.add_argument("--checkpoint", default="", help="checkpoint (default: shipped model)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    parser.add_argument("--rate-factor", type=float, default=1.5,
                        help="publish at this multiple of the bare frame rate")
    parser.add_argument("--domain-id", type=int, default=69)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)

    from . import lifecycle

    lifecycle.install()  # a signal before the node run exits 0 at once; during it, see node_run
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                          str(REPO / "config" / "fastdds_large_images.xml"))
    from ..kitti import read_rgb

    images = [read_rgb(p) for p in sample_frames()]
    # Bare inference before and after the node run, so that load from other processes on a
    # shared machine weighs on both sides alike.
    before = bare_inference(args, images, max(1, args.bare_frames // 2))
    print(f"bare {before['backend']}: {before['fps']:.2f} frames/s", flush=True)
    try:
        node = node_run(args, images, args.frames, args.rate_factor * before["fps"],
                        dict(os.environ))
    except Interrupted:
        print("node_benchmark: interrupted; depth_node stopped", flush=True)
        return 0
    after = bare_inference(args, images, max(1, args.bare_frames // 2))
    bare = dict(after, frames=before["frames"] + after["frames"],
                fps=2 / (1 / before["fps"] + 1 / after["fps"]),
                latency_p50_ms=(before["latency_p50_ms"] + after["latency_p50_ms"]) / 2,
                latency_p99_ms=max(before["latency_p99_ms"], after["latency_p99_ms"]))
    print(f"bare before / after the node run: {before['fps']:.2f} / {after['fps']:.2f} frames/s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(table(bare, node))
    if args.json:
        Path(args.json).write_text(json.dumps({"bare": bare, "bare_before": before,
                                               "bare_after": after, "node": node}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
