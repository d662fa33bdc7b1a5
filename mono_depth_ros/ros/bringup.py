"""``mono_depth_bringup config/kitti_eval.yaml [--bag BAG]`` (or ``python -m
mono_depth_ros.ros.bringup``): start the graph a YAML file describes, as processes.

The launch files read the same YAML, so both start the same nodes with the same parameters and
remappings; this one needs no ``launch`` package (not on PyPI). Every child gets
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (unless already set), ``RMW_IMPLEMENTATION`` and the
Fast DDS profile for camera-size images (``FASTDDS_DEFAULT_PROFILES_FILE``, unless already set).
A node's parameters go to it as a ``--params-file`` holding only its own section.

SIGINT or SIGTERM (at any moment, also while the nodes start) is forwarded to every child; the
bring-up exits 0 when they all exit 0 (``lifecycle`` handles the signal, as in the nodes).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGE = "mono_depth_ros"


class BringupError(RuntimeError):
    pass


def share_file(name: str) -> Path | None:
    """``config/<name>`` from the repository or the installed share folder."""
    here = Path(__file__).resolve().parents[2] / "config" / name
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory(PACKAGE)) / "config" / name
        if p.is_file():
            return p
    except Exception:  # noqa: BLE001
        pass
    p = Path(sys.prefix) / "share" / PACKAGE / "config" / name
    return p if p.is_file() else None


def child_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env:
        prof = share_file("fastdds_large_images.xml")
        if prof is not None:
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(prof)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def entry_point_command(executable: str) -> list[str]:
    """The command that runs a console script of this package with this Python."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="console_scripts"):
        if ep.name == executable and ep.value.startswith(PACKAGE):
            module, func = ep.value.split(":")
            return [sys.executable, "-c",
                    f"import sys; from {module} import {func} as f; sys.exit(f())"]
    # not installed as a distribution: the known scripts of setup.py
    known = {"depth_node": "ros.depth_node", "kitti_eval_node": "ros.kitti_eval_node",
             "kitti_bag_player": "ros.bag_player"}
    if executable in known:
        return [sys.executable, "-m", f"{PACKAGE}.{known[executable]}"]
    raise BringupError(f"unknown executable {executable!r}")


@dataclass
class NodeSpec:
    name: str
    executable: str
    remappings: dict = field(default_factory=dict)
    arguments: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    needs_bag: bool = False
    exit_ends_graph: bool = False


@dataclass
class Graph:
    namespace: str
    nodes: list[NodeSpec]
    grace_period: float
    topics: dict


def load_graph(path: str | Path) -> Graph:
    """Parse the bring-up YAML (the format of config/kitti_eval.yaml)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise BringupError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise BringupError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    b = data.get("bringup")
    if not isinstance(b, dict) or not b.get("nodes"):
        raise BringupError(f"{path}: no 'bringup: nodes:' section")
    nodes = []
    for n in b["nodes"]:
        name = n.get("name") or n.get("executable")
        params = (data.get(name) or {}).get("ros__parameters", {}) or {}
        nodes.append(NodeSpec(name, n["executable"], dict(n.get("remappings") or {}),
                              [str(a) for a in n.get("arguments") or []], params,
                              bool(n.get("needs_bag")), bool(n.get("exit_ends_graph"))))
    return Graph(str(b.get("namespace") or ""), nodes, float(b.get("grace_period", 5.0)),
                 dict(b.get("topics") or {}))


def node_command(spec: NodeSpec, namespace: str, params_dir: Path, bag: str | None = None,
                 overrides: dict | None = None) -> list[str]:
    cmd = entry_point_command(spec.executable)
    if spec.needs_bag:
        cmd += [str(bag)]
    cmd += spec.arguments
    params = dict(spec.parameters)
    params.update((overrides or {}).get(spec.name, {}))
    cmd += ["--ros-args", "-r", f"__node:={spec.name}"]
    if namespace:
        cmd += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for src, dst in spec.remappings.items():
        cmd += ["-r", f"{src}:={dst}"]
    if params:
        pf = params_dir / f"{spec.name}.yaml"
        pf.write_text(yaml.safe_dump({spec.name: {"ros__parameters": params}}))
        cmd += ["--params-file", str(pf)]
    return cmd


class Bringup:
    def __init__(self, graph: Graph, bag: str | None = None, overrides: dict | None = None,
                 env: dict | None = None, log_dir: str | Path | None = None, stop=None):
        from .lifecycle import StopSignals

        self.graph, self.bag, self.overrides = graph, bag, overrides or {}
        self.stop_signals = stop or StopSignals()  # set by SIGINT/SIGTERM (lifecycle)
        self.env = child_env(env)
        self.tmp = tempfile.TemporaryDirectory(prefix="mono_depth_bringup_")
        self.log_dir = Path(log_dir) if log_dir else None
        self.procs: list[tuple[NodeSpec, subprocess.Popen]] = []

    def start(self) -> None:
        from .lifecycle import spawn

        for spec in self.graph.nodes:
            if spec.needs_bag and not self.bag:
                continue
            if self.stop_signals.requested:
                return
            cmd = node_command(spec, self.graph.namespace, Path(self.tmp.name), self.bag,
                               self.overrides)
            out = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"{spec.name}.log", "w")
            print(f"[bringup] starting {spec.name}: {spec.executable}", flush=True)
            # stop signals blocked until the child's handlers are in (lifecycle.spawn)
            p = spawn(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                      start_new_session=True)
            self.procs.append((spec, p))

    def wait(self, timeout: float | None = None) -> int:
        """Until a node with ``exit_ends_graph`` exits (then the grace period), a node fails,
        SIGINT/SIGTERM, or ``timeout``; then stop everyone. Returns the worst exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        rc = 0
        while not self.stop_signals.requested:
            if deadline is not None and time.monotonic() > deadline:
                print("[bringup] timeout", flush=True)
                break
            done = [(s, p) for s, p in self.procs if p.poll() is not None]
            ender = [(s, p) for s, p in done if s.exit_ends_graph]
            failed = [(s, p) for s, p in done if p.returncode not in (0, None)]
            if failed:
                for s, p in failed:
                    print(f"[bringup] {s.name} exited with {p.returncode}", flush=True)
                rc = max(abs(p.returncode) for _, p in failed) or 1
                break
            if ender:
                print(f"[bringup] {ender[0][0].name} finished; stopping the graph in "
                      f"{self.graph.grace_period:g} s", flush=True)
                self.stop_signals.wait(self.graph.grace_period)
                break
            if len(done) == len(self.procs):
                break
            self.stop_signals.wait(0.1)
        if self.stop_signals.requested:
            print(f"[bringup] {self.stop_signals.signal_name}: stopping the graph", flush=True)
        return max(rc, self.stop())

    def stop(self, timeout: float = 15.0) -> int:
        """Send every running child the stop signal (the one this process got, else SIGINT) and
        wait; returns 0 if every child exited 0, else the worst status (1 for a signal death)."""
        rc = 0
        sig = self.stop_signals.signum or signal.SIGINT
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)
        end = time.monotonic() + timeout
        for s, p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"[bringup] {s.name} did not stop; killing it", flush=True)
                p.kill()
                p.wait()
            # (started by lifecycle.spawn: a stop signal waits for the child's own handlers, so
            # no child dies by it)
            if p.returncode not in (0, None):
                print(f"[bringup] {s.name} exited with {p.returncode}", flush=True)
                rc = max(rc, 1 if p.returncode < 0 else p.returncode)
        self.tmp.cleanup()
        return rc


def main(argv: list[str] | None = None) -> int:
    from . import lifecycle

    stop = lifecycle.install().defer()  # children may be running: forward the signal to them
    ap = argparse.ArgumentParser(prog="mono_depth_bringup", description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=None,
                    help="bring-up YAML (default: the package's config/kitti_eval.yaml)")
    ap.add_argument("--bag", help="play this bag with kitti_bag_player (else wait for live data)")
    ap.add_argument("--rate", type=float, help="player rate (x real time)")
    ap.add_argument("--output-dir", help="kitti_eval_node output_dir")
    ap.add_argument("--calib-dir", help="kitti_eval_node calib_dir (KITTI calibration folder)")
    ap.add_argument("--model", help="depth_node checkpoint")
    ap.add_argument("--backend", help="depth_node backend")
    ap.add_argument("--timeout", type=float, help="stop everything after this many seconds")
    ap.add_argument("--log-dir", help="write each node's output to LOG_DIR/<node>.log")
    args = ap.parse_args(argv)
    cfg = args.config or share_file("kitti_eval.yaml")
    if cfg is None:
        print("mono_depth_bringup: error: no config given and config/kitti_eval.yaml not found",
              file=sys.stderr)
        return 2
    try:
        graph = load_graph(cfg)
        over: dict = {"kitti_eval_node": {}, "depth_node": {}}
        if args.output_dir:
            over["kitti_eval_node"]["output_dir"] = str(Path(args.output_dir).resolve())
        if args.calib_dir:
            over["kitti_eval_node"]["calib_dir"] = str(Path(args.calib_dir).resolve())
        if args.model:
            over["depth_node"]["checkpoint"] = str(Path(args.model).resolve())
        if args.backend:
            over["depth_node"]["backend"] = args.backend
        if args.rate:
            for n in graph.nodes:
                if n.executable == "kitti_bag_player":
                    n.arguments += ["--rate", str(args.rate)]
        if args.bag and not Path(args.bag).exists():
            raise BringupError(f"bag not found: {args.bag}")
        b = Bringup(graph, args.bag, over, log_dir=args.log_dir, stop=stop)
        b.start()
    except BringupError as exc:
        print(f"mono_depth_bringup: error: {exc}", file=sys.stderr)
        return 2
    return b.wait(args.timeout)


if __name__ == "__main__":
    sys.exit(main())
