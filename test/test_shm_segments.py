"""Fast DDS shared-memory files do not pile up in /dev/shm when processes die without destroying
their participant (35 MB each with the large-image profile; a test run once filled 22 GB of RAM).

Real participants in real processes: a process that leaves through ``lifecycle.exit_now`` (start-up
stops, the teardown cut short) removes its own segment; the segment of a SIGKILLed process is
removed by the next process of this package that starts rclpy, while a live process keeps its.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from depth_node_harness import ros_env  # noqa: E402

from mono_depth_ros.ros import shm_segments  # noqa: E402

DOMAIN_ID = int(os.environ.get("ROS_DOMAIN_ID", "41")) + 44

# a process with one participant that prints the segment files it holds, then leaves as told
PARTICIPANT = """
import sys, time
from mono_depth_ros.ros import lifecycle, shm_segments
rclpy = lifecycle.init(["--ros-args", "--log-level", "mono_depth_ros:=debug"])
node = rclpy.create_node("shm_test")
print(*[str(p) for p in shm_segments.own_segments()], flush=True)
how = sys.argv[1]
if how == "exit_now":
    lifecycle.exit_now(0)
if how == "os_exit":
    import os; os._exit(0)
time.sleep(60)
"""


def start(how: str) -> tuple[subprocess.Popen, list[Path]]:
    proc = subprocess.Popen([sys.executable, "-c", PARTICIPANT, how], env=ros_env(DOMAIN_ID),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    segments = [Path(p) for p in line.split()]
    assert segments, f"no segment reported; stderr: {proc.stderr.read() if proc.poll() else ''}"
    return proc, segments


def remove(paths) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def test_a_process_leaving_through_exit_now_removes_its_segment_and_os_exit_would_not():
    proc, segments = start("os_exit")
    assert proc.wait(20) == 0
    left = [p for s in segments for p in shm_segments.segment_files(s) if p.exists()]
    assert left, "os._exit left nothing behind: this test could not tell the fix from its absence"
    remove(left)

    proc, segments = start("exit_now")
    assert proc.wait(20) == 0
    left = [p for s in segments for p in shm_segments.segment_files(s) if p.exists()]
    remove(left)
    assert not left, f"exit_now left {left}"


def test_the_next_start_removes_a_killed_process_segment_and_keeps_a_live_one():
    killed, dead_segments = start("sleep")
    alive, live_segments = start("sleep")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        dead = [p for s in dead_segments for p in shm_segments.segment_files(s)]
        assert all(p.exists() for p in dead), "SIGKILL left nothing behind"
        # age them past the window in which a participant being created may not hold its lock yet
        # (and age the live one's too: it is kept because its lock is held, not because it is young)
        old = time.time() - 2 * shm_segments.MIN_AGE_S
        for p in dead + [p for s in live_segments for p in shm_segments.segment_files(s)]:
            os.utime(p, (old, old))
        dead_bytes = sum(p.stat().st_size for p in dead)
        assert dead_bytes > 1e6, f"segments of {dead_bytes} bytes: not the large-image profile?"

        nxt, _ = start("exit_now")
        out, err = nxt.communicate(timeout=20)
        assert nxt.returncode == 0, err
        assert not [p for p in dead if p.exists()], "the next start left the dead segment"
        assert all(p.exists() for s in live_segments for p in shm_segments.segment_files(s)), \
            "the live process's segment was removed"
        assert "MB of Fast DDS shared memory left by dead processes" in err
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        remove(p for s in dead_segments + live_segments for p in shm_segments.segment_files(s))
