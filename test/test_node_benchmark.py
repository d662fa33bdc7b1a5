"""node_benchmark's bookkeeping (no timing here: the benchmark itself is a script that prints
tables): merging segments, per-stage means from the node's running totals, the pass criteria."""

from __future__ import annotations

import pytest

nb = pytest.importorskip("mono_depth_ros.ros.node_benchmark",
                         reason="rclpy / sensor_msgs are not installed")


def _segment(published, answered, duration, lat_s, rss, frames_out, totals_ms):
    diag0 = {"frames_out": str(frames_out[0]),
             **{f"stage_{k}_total_ms": str(v[0]) for k, v in totals_ms.items()}}
    diag1 = {"frames_out": str(frames_out[1]),
             **{f"stage_{k}_total_ms": str(v[1]) for k, v in totals_ms.items()},
             **{f"stage_{k}_p50_ms": "1.0" for k in totals_ms}}
    return {"published": published, "answered": answered, "duration": duration,
            "latencies": lat_s, "rss": rss, "cpu_node": 1.0, "cpu_self": 0.1, "wall": 2.0,
            "diag": (diag0, diag1)}


def test_segments_merge_into_one_rate_result():
    a = _segment(10, 8, 1.0, [0.1] * 8, (100.0, 101.0), (5, 13),
                 {"inference": (50.0, 450.0), "publish": (5.0, 21.0)})
    b = _segment(10, 12, 2.0, [0.3] * 12, (101.0, 103.5), (13, 25),
                 {"inference": (450.0, 1050.0), "publish": (21.0, 45.0)})
    m = nb.merge_node([a, b], rate=10.0)
    assert m["answered"] == 20 and m["published"] == 20 and m["drop_rate"] == 0.0
    assert m["fps"] == pytest.approx(20 / 3.0)
    assert m["rss_drift_mb"] == pytest.approx(3.5)  # first segment's start -> last one's end
    assert m["stages"]["inference"]["mean_ms"] == pytest.approx((400 + 600) / 20)
    assert m["stages"]["publish"]["mean_ms"] == pytest.approx((16 + 24) / 20)
    assert m["node_cpu_percent"] == pytest.approx(50.0)
    assert m["latency_p50_ms"] == pytest.approx(300.0)


def test_bare_runs_merge_and_the_pace_criteria():
    runs = [{"backend": "b", "times": [0.1] * 10, "stages": [{"inference": 0.09}] * 10},
            {"backend": "b", "times": [0.05] * 10, "stages": [{"inference": 0.04}] * 10}]
    bare = nb.merge_bare(runs)
    assert bare["fps"] == pytest.approx(20 / 1.5) and bare["frames"] == 20
    assert bare["runs_fps"] == pytest.approx([10.0, 20.0])
    node = {"fps": 0.9 * bare["fps"], "latency_p50_ms": 100.0, "latency_p99_ms": 190.0,
            "rss_drift_mb": 2.0}
    assert nb.verdict(node, bare)[0]
    assert not nb.verdict(dict(node, fps=0.8 * bare["fps"]), bare)[0]
    assert not nb.verdict(dict(node, latency_p99_ms=250.0), bare)[0]
    assert not nb.verdict(dict(node, rss_drift_mb=12.0), bare)[0]
