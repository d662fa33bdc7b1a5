"""Offline (evaluate_bag) and live (player -> depth_node -> kitti_eval_node over real DDS, each
in its own process) evaluation give the same Eigen metrics as a direct metrics.score_frame
computation on the same frames (issue 6)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mono_depth_ros.bags.evaluate_bag import evaluate, make_backend
from mono_depth_ros.bags.kitti_to_bag import convert
from mono_depth_ros.config import BackendConfig, EvalConfig, EvalNodeConfig
from mono_depth_ros.geometry import project_points
from mono_depth_ros.kitti import find_raw_calib, read_rgb, read_velodyne
from mono_depth_ros.metrics import METRIC_NAMES, mean_scores, score_frame

from conftest import DRIVE_0001, DRIVE_0005, REPO
from depth_node_harness import ros_env

KEYS = list(METRIC_NAMES) + [f"metric_{k}" for k in METRIC_NAMES]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalbag") / "sample"
    # drive 0001 frames 5 (LiDAR) + 50 (none) and drive 0005 frame 137 (LiDAR)
    convert([DRIVE_0001, DRIVE_0005], out, frames=None, progress=False)
    return out


@pytest.fixture(scope="module")
def backend():
    return make_backend(BackendConfig())


@pytest.fixture(scope="module")
def offline(bag, backend, tmp_path_factory):
    out = tmp_path_factory.mktemp("offline")
    # the calibration files give the extrinsic, as in the live run (tf2_msgs is not on PyPI)
    evaluate(bag, out, backend=backend, plots=True,
             eval_cfg=EvalNodeConfig(calib_dir=str(DRIVE_0001.parent)))
    return json.loads((out / "metrics.json").read_text()), out


def direct(backend, predict=None):
    """Scores computed straight from the KITTI files with metrics.score_frame."""
    scores = []
    for drive, frame in ((DRIVE_0001, 5), (DRIVE_0005, 137)):
        calib = find_raw_calib(drive)
        rgb = read_rgb(drive / "image_02" / "data" / f"{frame:010d}.png")
        pts = read_velodyne(drive / "velodyne_points" / "data" / f"{frame:010d}.bin")
        gt = project_points(pts, calib.velo_to_image, rgb.shape[1], rgb.shape[0])
        pred = predict(rgb) if predict else backend.infer(rgb).fine
        scores.append(score_frame(pred, gt, EvalConfig()))
    return mean_scores(scores)


def test_offline_equals_direct_score_frame(offline, backend):
    got, out = offline
    want = direct(backend)
    assert got["frames"] == want["frames"] == 2
    assert got["images"] == 4 and got["unmatched_images"] == 2
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
    for name in ("metrics.csv", "error_vs_distance.csv", "per_frame_metrics.png",
                 "error_vs_distance.png"):
        assert (out / name).stat().st_size > 0
    assert sum(r["pixels"] for r in got["error_vs_distance"]) == sum(
        f["valid_pixels"] for f in got["per_frame"])


def test_offline_with_a_known_prediction(bag, tmp_path):
    """A constant prediction: the numbers are the direct ones, independent of any weights."""
    const = lambda rgb: np.full(rgb.shape[:2], 12.0, np.float32)  # noqa: E731
    s = evaluate(bag, tmp_path, predict=const, plots=False,
                 eval_cfg=EvalNodeConfig(calib_dir=str(DRIVE_0001.parent)))
    want = direct(None, const)
    for k in KEYS:
        assert s[k] == pytest.approx(want[k], rel=1e-9), k
    # the extrinsic from the bag's /tf_static (a quaternion) agrees to float precision
    s2 = evaluate(bag, tmp_path / "tf", predict=const, plots=False)
    for k in KEYS:
        assert s2[k] == pytest.approx(s[k], rel=1e-5), k


def test_offline_equals_training_evaluate(offline, backend):
    """evaluate_bag and `python -m training.evaluate` give the same numbers on the same frames."""
    from training import data as D
    from training.evaluate import evaluate_frames

    got, _ = offline
    frames = [f for f in D.read_index(REPO / "data" / "kitti_sample" / "index.tsv")
              if f.frame_id.endswith(("drive_0001_sync/0000000005", "drive_0005_sync/0000000137"))]
    samples = [D.load_sample(f, ("lidar",)) for f in frames]
    assert len(samples) == 2 and all(s.gt_kind == "lidar" for s in samples)
    want = mean_scores(evaluate_frames(backend, samples, None, progress=False)["fine"])
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


def test_live_equals_offline(bag, offline, tmp_path):
    """mono_depth_bringup starts depth_node, kitti_eval_node and kitti_bag_player as processes."""
    out = tmp_path / "live"
    r = subprocess.run(
        [sys.executable, "-m", "mono_depth_ros.ros.bringup",
         str(REPO / "config" / "kitti_eval.yaml"),
         "--bag", str(bag), "--rate", "2", "--output-dir", str(out), "--calib-dir",
         str(DRIVE_0001.parent), "--log-dir", str(tmp_path / "logs"), "--timeout", "150"],
        env=ros_env(73), capture_output=True, text=True, timeout=200, cwd=tmp_path)
    logs = "\n".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert r.returncode == 0, r.stdout + r.stderr + logs
    live = json.loads((out / "metrics.json").read_text())
    got, _ = offline
    assert live["frames"] == got["frames"] == 2, logs
    assert live["received"]["depth"] >= 2, logs  # the depth node may skip unscored frames
    assert live["unmatched"]["depth"] == live["received"]["depth"] - 2  # 50, 100: no scan
    for k in KEYS:
        assert live[k] == pytest.approx(got[k], rel=1e-4, abs=1e-6), k
    for name in ("metrics.csv", "per_frame_metrics.png", "error_vs_distance.png"):
        assert (out / name).is_file()
