"""Benchmark depth_node through DDS against bare inference of the same backend, in one run.

``python -m mono_depth_ros.ros.node_benchmark [--frames 1000] [--rate-factors 1,2]``

One depth_node runs in its own process (as users run it). For each rate factor, this process
publishes ``--frames`` real KITTI frames with camera_info in ``--segments`` parts; before the
first part and after each it runs the backend's bare ``infer`` on the same frames in this
process (the node idles meanwhile), and publishes the next part at that multiple of the bare
rate just measured (the camera keeps pace with the model at 1x and outruns it at 2x). Load
from other processes that comes and goes on a shared machine so weighs on the node and on its
bare reference alike: the ratio node / bare of one run is the figure to compare, not absolute
rates across runs. This process shares the node's cores, so it publishes images serialized once
(as bytes) and receives depth raw.

Per rate it reports throughput, the ratio, drops, end-to-end latency p50 / p99 (publish ->
depth received), the node's RSS after warm-up and at the end, the CPU time of the node and of
this process (publisher and subscriber share the node's cores), and the node's own per-stage
times (wait: received -> taken by the worker, decode, pre-process, inference, post-process,
publish) from the running totals in its /diagnostics, next to the bare stages. Prints Markdown
tables (and ``--json``). Uses loopback-only discovery and the large-image profile.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "kitti_sample" / "2011_09_26"
# issue 12: the node keeps pace when all of these hold at every input rate
MIN_RATIO, MAX_P99_OVER_P50, MAX_RSS_DRIFT_MB = 0.85, 2.0, 10.0
NODE_STAGES = ("wait", "decode", "preprocess", "inference", "postprocess", "publish")


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (Linux /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_config(args) -> dict:
    """The BackendConfig values given on the command line (the rest: the node's defaults)."""
    cfg = {"backend": args.backend, "checkpoint": args.checkpoint, "threads": args.threads,
           "precision": args.precision}
    return {k: v for k, v in cfg.items() if v != ""}


def make_backend(args):
    from ..backends.factory import create_backend
    from ..config import BackendConfig, from_dict

    return create_backend(from_dict(BackendConfig, backend_config(args)))


def bare_inference(backend, images: list[np.ndarray], n: int) -> dict:
    """Seconds per frame and stage times of ``backend.infer`` alone on the same frames (raw;
    ``merge_bare`` turns several such runs into rates and percentiles)."""
    for img in images[:2]:
        backend.infer(img)  # warm-up (a first run after an idle spell is slower)
    times, stages = [], []
    for i in range(n):
        t = time.perf_counter()
        backend.infer(images[i % len(images)])
        times.append(time.perf_counter() - t)
        stages.append(dict(getattr(backend, "last_timing", {})))  # (older backends: none)
    return {"backend": backend.describe(), "times": times, "stages": stages}


def merge_bare(parts: list[dict]) -> dict:
    """Bare runs interleaved with one rate's node segments as one reference."""
    from ..timing import StageTimes

    times = np.concatenate([p["times"] for p in parts])
    stages = StageTimes(maxlen=len(times))
    for p in parts:
        for st in p["stages"]:
            stages.update(st)
    return {"backend": parts[0]["backend"], "frames": int(times.size),
            "fps": float(times.size / times.sum()),
            "latency_p50_ms": 1000 * float(np.median(times)),
            "latency_p99_ms": 1000 * float(np.percentile(times, 99)),
            "runs_fps": [len(p["times"]) / float(np.sum(p["times"])) for p in parts],
            "stages": stages.summary()}


class Interrupted(Exception):
    """SIGINT/SIGTERM during the node runs (the node has been stopped)."""


class NodeSession:
    """depth_node in another process plus this process's publisher, depth and diagnostics
    subscribers; ``run`` sends one batch of frames at one rate."""

    def __init__(self, args, images: list[np.ndarray], env: dict, stop):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.experimental import EventsExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import CameraInfo, Image

        from ..kitti import find_raw_calib
        from . import lifecycle
        from .conversions import rgb_to_image

        self.stop = stop
        script = Path(sys.executable).parent / "depth_node"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m",
                                                     "mono_depth_ros.ros.depth_node"]
        cmd += ["--ros-args"]
        for k, v in backend_config(args).items():
            cmd += ["-p", f"{k}:={v}"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        lifecycle.init([])
        self.client = rclpy.create_node("node_benchmark")
        self.pub = self.client.create_publisher(Image, "image", qos_profile_sensor_data)
        self.pub_info = self.client.create_publisher(CameraInfo, "camera_info",
                                                     qos_profile_sensor_data)
        self.received: dict[int, float] = {}
        self.diag: tuple[float, dict[str, str]] = (0.0, {})
        self.lock = threading.Lock()

        def on_depth(data: bytes):
            # raw: only the stamp is read (CDR: 4-byte encapsulation, then header.stamp)
            t = time.monotonic()
            sec, nanosec = struct.unpack_from("<iI", data, 4)
            with self.lock:
                self.received[sec * 10**9 + nanosec] = t

        def on_diag(msg):
            for st in msg.status:
                if st.name.endswith("depth estimation"):
                    with self.lock:
                        self.diag = (time.monotonic(), {kv.key: kv.value for kv in st.values})

        self.client.create_subscription(Image, "depth", on_depth,
                                        QoSProfile(depth=10,
                                                   reliability=ReliabilityPolicy.RELIABLE),
                                        raw=True)
        self.client.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        self.executor = EventsExecutor()  # as depth_node: less CPU per message
        self.executor.add_node(self.client)
        self._spinning = True
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        calib = find_raw_calib(SAMPLE / "2011_09_26_drive_0001_sync")
        self.info = CameraInfo(width=images[0].shape[1], height=images[0].shape[0],
                               distortion_model="plumb_bob")
        self.info.k = calib.K.reshape(-1)
        self.info.p = calib.P_rect.reshape(-1)
        # the harness shares the node's cores, so it costs as little as it can: frames are
        # serialized once (only the stamp is patched) and published as bytes, and depth is
        # received raw
        self.frames = []
        for img in images:
            msg = rgb_to_image(img)
            msg.header.frame_id = "camera_optical"
            self.frames.append(bytearray(serialize_message(msg)))
        self.stamp = 0  # stamps stay unique over all runs

    def _spin(self) -> None:
        """Callbacks until ``close``; spin_once so that close can join this thread before rclpy
        shuts down (a thread left inside the executor at exit aborts the process)."""
        while self._spinning:
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001 - context shut down under the wait: stop
                return

    def wait_ready(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while not (self.pub.get_subscription_count() and self.client.count_publishers("depth")):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"node_benchmark: error: depth_node did not start: "
                                 f"{self.proc.stderr.read().strip()[-500:]}")
            if self.stop.wait(0.1):
                raise Interrupted()

    def _fresh_diagnostics(self, after: float, timeout: float = 5.0) -> dict[str, str]:
        """The node's first /diagnostics values received after ``after`` (monotonic)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                t, values = self.diag
            if t > after:
                return values
            if self.stop.wait(0.05):
                raise Interrupted()
        return {}

    def _publish(self, i: int) -> float:
        frame = self.frames[i % len(self.frames)]
        self.stamp += 1
        struct.pack_into("<iI", frame, 4, self.stamp, 0)  # header.stamp, after the encapsulation
        self.info.header.stamp.sec, self.info.header.stamp.nanosec = self.stamp, 0
        self.info.header.frame_id = "camera_optical"
        self.pub_info.publish(self.info)
        data = bytes(frame)
        t = time.monotonic()
        self.pub.publish(data)
        return t

    def run(self, n: int, rate: float, warmup: bool) -> dict:
        """Publish ``n`` frames at ``rate`` Hz (after a warm-up if ``warmup``); raw measurements
        of this segment (``merge_node`` combines segments)."""
        if warmup:
            for i in range(max(5, n // 20)):
                t = self._publish(i)
                if self.stop.wait(max(0.0, t + 1.0 / rate - time.monotonic())):
                    raise Interrupted()
            self.stop.wait(2.0)  # let warm-up frames finish before counting
        diag0 = self._fresh_diagnostics(time.monotonic())
        rss0 = rss_mb(self.proc.pid)
        cpu_node0, cpu_self0 = cpu_seconds(self.proc.pid), sum(os.times()[:2])
        sent: dict[int, float] = {}
        t_start = time.monotonic()
        for i in range(n):
            if self.stop.requested:
                raise Interrupted()
            t = self._publish(i)  # (not in one statement: the key must be read after this)
            sent[self.stamp * 10**9] = t
            self.stop.wait(max(0.0, t_start + (i + 1) / rate - time.monotonic()))
        last = max(sent)
        end = time.monotonic() + 30
        while last not in self.received and time.monotonic() < end:
            if self.stop.wait(0.05):
                raise Interrupted()
        t_end = time.monotonic()
        cpu_node = cpu_seconds(self.proc.pid) - cpu_node0
        cpu_self = sum(os.times()[:2]) - cpu_self0
        rss1 = rss_mb(self.proc.pid)
        diag1 = self._fresh_diagnostics(time.monotonic())
        with self.lock:
            got = {k: self.received[k] for k in sent if k in self.received}
        return {"published": len(sent), "answered": len(got),
                "duration": (max(got.values()) - min(sent.values())) if got else float("nan"),
                "latencies": [got[k] - sent[k] for k in got], "rss": (rss0, rss1),
                "cpu_node": cpu_node, "cpu_self": cpu_self, "wall": t_end - t_start,
                "diag": (diag0, diag1)}

    def close(self) -> None:
        from . import lifecycle

        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._spinning = False
        self._spinner.join(5.0)
        lifecycle.finish(self.executor, [self.client], timeout=1.0)


def _num(d: dict[str, str], k: str) -> float:
    try:
        return float(d.get(k, "nan"))
    except ValueError:
        return float("nan")


def merge_node(parts: list[dict], rate: float) -> dict:
    """One rate's node segments as one result: throughput over the segments' own durations,
    latency percentiles over every answered frame, RSS from the first segment's start (after
    warm-up) to the last one's end, and mean ms per stage from the node's running totals."""
    answered = sum(p["answered"] for p in parts)
    published = sum(p["published"] for p in parts)
    duration = sum(p["duration"] for p in parts if p["answered"])
    lat = np.array([x for p in parts for x in p["latencies"]]) * 1000
    wall = sum(p["wall"] for p in parts)
    frames, totals, p50 = 0.0, dict.fromkeys(NODE_STAGES, 0.0), {}
    for p in parts:
        before, after = p["diag"]
        frames += _num(after, "frames_out") - _num(before, "frames_out")
        for s in NODE_STAGES:
            totals[s] += _num(after, f"stage_{s}_total_ms") - _num(before, f"stage_{s}_total_ms")
            p50[s] = _num(after, f"stage_{s}_p50_ms")
    stages = {s: {"mean_ms": totals[s] / frames, "p50_ms": p50[s]} for s in NODE_STAGES
              if frames > 0 and np.isfinite(totals[s])}
    rss_warm, rss_end = parts[0]["rss"][0], parts[-1]["rss"][1]
    return {"published": published, "answered": answered, "rate_hz": rate,
            "segments": len(parts), "fps": answered / duration if duration else 0.0,
            "drop_rate": 1 - answered / published,
            "latency_p50_ms": float(np.median(lat)) if lat.size else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "rss_warm_mb": rss_warm, "rss_end_mb": rss_end, "rss_drift_mb": rss_end - rss_warm,
            "node_cpu_percent": 100 * sum(p["cpu_node"] for p in parts) / wall,
            "benchmark_cpu_percent": 100 * sum(p["cpu_self"] for p in parts) / wall,
            "stages": stages}


def measure_rate(session: NodeSession, backend, images: list[np.ndarray], n: int, factor: float,
                 segments: int, bare_frames: int, first: bool) -> tuple[dict, dict]:
    """``n`` frames through the node in ``segments`` parts, with a bare-inference run of
    ``bare_frames`` before the first part and after each; each part is published at ``factor``
    x the bare rate just measured. Load from other processes that comes and goes so weighs on
    the node, its input rate and its bare reference alike."""
    sizes = [n // segments + (k < n % segments) for k in range(segments)]
    bare = [bare_inference(backend, images, bare_frames)]
    parts, rates = [], []
    for k, m in enumerate(sizes):
        last = bare[-1]
        rates.append(factor * len(last["times"]) / float(np.sum(last["times"])))
        parts.append(session.run(m, rates[-1], warmup=first and k == 0))
        bare.append(bare_inference(backend, images, bare_frames))
    return merge_node(parts, float(np.mean(rates))), merge_bare(bare)


def verdict(node: dict, bare: dict) -> tuple[bool, str]:
    ratio = node["fps"] / bare["fps"]
    tail = node["latency_p99_ms"] / node["latency_p50_ms"]
    ok = ratio >= MIN_RATIO and tail <= MAX_P99_OVER_P50 and abs(node["rss_drift_mb"]) < \
        MAX_RSS_DRIFT_MB
    return ok, (f"ratio {ratio:.2f} (>= {MIN_RATIO}), p99/p50 {tail:.2f} (<= {MAX_P99_OVER_P50}),"
                f" RSS drift {node['rss_drift_mb']:+.1f} MB (< {MAX_RSS_DRIFT_MB})")


def table(runs: list[tuple[float, dict, dict]]) -> str:
    """Markdown table: one column per input rate (node and its bare reference)."""
    head = "| | " + " | ".join(f"{f:g}x bare rate" for f, _, _ in runs) + " |"
    rows = {
        "input rate (Hz, mean of the parts)": lambda n, b: f"{n['rate_hz']:.1f}",
        "bare inference (frames/s)": lambda n, b: f"{b['fps']:.2f}",
        "depth_node over DDS (frames/s)": lambda n, b: f"{n['fps']:.2f}",
        "ratio node / bare": lambda n, b: f"**{n['fps'] / b['fps']:.2f}**",
        "frames answered / published": lambda n, b: f"{n['answered']} / {n['published']}",
        "dropped (stale) frames": lambda n, b: f"{100 * n['drop_rate']:.1f} %",
        "latency p50 / p99 ms (publish -> depth received)":
            lambda n, b: f"{n['latency_p50_ms']:.0f} / {n['latency_p99_ms']:.0f} "
                         f"({n['latency_p99_ms'] / n['latency_p50_ms']:.2f}x)",
        "bare latency p50 / p99 ms": lambda n, b: f"{b['latency_p50_ms']:.0f} / "
                                                  f"{b['latency_p99_ms']:.0f}",
        "node RSS warm -> end MB (drift)":
            lambda n, b: f"{n['rss_warm_mb']:.0f} -> {n['rss_end_mb']:.0f} "
                         f"({n['rss_drift_mb']:+.1f})",
        "CPU: node / benchmark process (% of one core)":
            lambda n, b: f"{n['node_cpu_percent']:.0f} / {n['benchmark_cpu_percent']:.0f}",
        "keeps pace (issue 12)":
            lambda n, b: ("yes: " if verdict(n, b)[0] else "no: ") + verdict(n, b)[1],
    }
    out = [head, "|---" * (len(runs) + 1) + "|"]
    for label, fn in rows.items():
        out.append(f"| {label} | " + " | ".join(fn(n, b) for _, n, b in runs) + " |")
    return "\n".join(out)


def stage_table(runs: list[tuple[float, dict, dict]]) -> str:
    """Per-stage breakdown: bare inference and the node at each rate."""
    from ..timing import breakdown_markdown

    summaries = {}
    for f, node, bare in runs:
        summaries[f"bare (around {f:g}x)"] = bare["stages"]
        summaries[f"depth_node at {f:g}x"] = node["stages"]
    return breakdown_markdown(summaries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames through the node, "
                        "per input rate")
    parser.add_argument("--bare-frames", type=int, default=100,
                        help="frames of bare inference per input rate, spread over the segments")
    parser.add_argument("--segments", type=int, default=5,
                        help="node frames of each rate go in this many parts, with bare "
                        "inference before the first and after each")
    parser.add_argument("--backend", default="auto",
                        choices=("auto", "tensorrt", "onnxruntime", "torch"))
    parser.add_argument("--checkpoint", default="", help="checkpoint (default: shipped model)")
    parser.add_argument("--precision", default="", choices=("", "fp32", "fp16", "int8"),
                        help="backend precision (default: the node's default)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    parser.add_argument("--rate-factors", default="1,2",
                        help="publish at these multiples of the first bare frame rate, in turn")
    parser.add_argument("--domain-id", type=int, default=69)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        factors = [float(f) for f in args.rate_factors.split(",") if f.strip()]
        if not factors or min(factors) <= 0:
            raise ValueError
    except ValueError:
        print(f"node_benchmark: error: --rate-factors {args.rate_factors!r} is not a list of "
              "positive numbers", file=sys.stderr)
        return 2

    from . import lifecycle
    from .heap import reuse_large_buffers

    stop = lifecycle.install()  # a signal before the node starts exits 0 at once
    reuse_large_buffers()  # as depth_node does: the harness's frames reuse heap buffers
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                          str(REPO / "config" / "fastdds_large_images.xml"))
    from ..kitti import read_rgb

    images = [read_rgb(p) for p in sample_frames()]
    backend = make_backend(args)
    first = merge_bare([bare_inference(backend, images, 10)])  # warm-up, and a first look
    print(f"bare {first['backend']}: {first['fps']:.2f} frames/s", flush=True)
    stop.defer()  # from here a signal stops the runs and the node
    session = NodeSession(args, images, dict(os.environ), stop)
    runs = []
    try:
        session.wait_ready()
        for k, f in enumerate(factors):
            node, bare = measure_rate(session, backend, images, args.frames, f, args.segments,
                                      max(2, args.bare_frames // args.segments), first=k == 0)
            print(f"node at {f:g}x: {node['fps']:.2f} frames/s, bare {bare['fps']:.2f}",
                  flush=True)
            runs.append((f, node, bare))
    except Interrupted:
        print("node_benchmark: interrupted; depth_node stopped", flush=True)
        return 0
    finally:
        session.close()
    load = os.getloadavg()
    print(f"\nbackend {first['backend']}; bare runs between the node's segments: "
          + "; ".join(" / ".join(f"{x:.1f}" for x in b["runs_fps"]) for _, _, b in runs)
          + f" frames/s; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on "
          f"{os.cpu_count()} CPUs (absolute figures move with other load; compare within the "
          "run). Harness: camera_info as messages, images serialized once and published as "
          "bytes (stamp patched), depth received raw (stamp read), so this process costs the "
          "node's cores little.\n")
    print(table(runs))
    print("\nPer stage (ms, p50 / mean, share of the sum of means; wait = received by DDS -> "
          "taken by the node's worker, behind the frame being processed):\n")
    print(stage_table(runs))
    if args.json:
        Path(args.json).write_text(json.dumps({"bare_first": first, "runs": [
            {"rate_factor": f, "node": n, "bare": b} for f, n, b in runs]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
