"""Ground-plane metric scale: synthetic planes, real KITTI LiDAR, smoothing, evaluation table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mono_depth_ros.backends.base import DepthResult
from mono_depth_ros.config import ScaleConfig
from mono_depth_ros.geometry import project_points
from mono_depth_ros.kitti import find_raw_calib, read_depth_png, read_rgb, read_velodyne
from mono_depth_ros.scale import GroundPlaneScaler, fit_ground_plane
from mono_depth_ros.scale_eval import evaluate, to_markdown
from mono_depth_ros.sample_frames import DRIVE_0001, DRIVE_0005, sample_frame

H, W = 375, 1242
K = np.array([[721.5, 0.0, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]])
CFG = ScaleConfig(mode="ground_plane")


def road_depth(height: float, pitch_deg: float = 0.0, noise: float = 0.0,
               obstacles: float = 0.0, seed: int = 0) -> np.ndarray:
    """Depth image of a flat road ``height`` below a camera pitched down by ``pitch_deg``."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    p = np.radians(pitch_deg)
    normal = np.array([0.0, np.cos(p), np.sin(p)])  # road normal in the camera frame
    denom = rays @ normal
    depth = np.where(denom > 1e-3, height / np.maximum(denom, 1e-3), 0.0)
    depth[depth > 80] = 0
    depth *= 1 + noise * rng.standard_normal(depth.shape)
    if obstacles:
        box = rng.random(depth.shape) < obstacles
        depth[box] = rng.uniform(3, 20, box.sum())  # things standing on the road
    return depth.astype(np.float32)


@pytest.mark.parametrize("height,pitch", [(1.65, 0.0), (0.4, 2.0), (7.0, -1.5)])
def test_synthetic_plane_distance_is_recovered(height, pitch):
    fit = fit_ground_plane(road_depth(height, pitch), K, CFG)
    assert fit is not None
    assert fit.distance == pytest.approx(height, rel=0.01)
    assert np.degrees(np.arccos(fit.normal[1])) == pytest.approx(abs(pitch), abs=0.3)


def test_noisy_plane_with_obstacles_is_robust():
    cfg = dataclasses.replace(CFG, max_depth=1000.0)
    fit = fit_ground_plane(road_depth(0.5, 1.0, noise=0.01, obstacles=0.2), K, cfg)
    assert fit is not None and fit.distance == pytest.approx(0.5, rel=0.03)
    assert 0.5 < fit.inlier_ratio < 0.95


def test_no_road_gives_no_fit_and_unit_scale():
    wall = np.full((H, W), 10.0, dtype=np.float32)  # a wall facing the camera: normal is +z
    assert fit_ground_plane(wall, K, CFG) is None
    assert GroundPlaneScaler(CFG).update(wall, K) == 1.0
    assert fit_ground_plane(np.zeros((H, W), np.float32), K, CFG) is None


def test_bad_input_raises():
    with pytest.raises(ValueError):
        fit_ground_plane(np.zeros((2, H, W), np.float32), K, CFG)


@pytest.mark.parametrize("drive,frame", [(DRIVE_0001, 5), (DRIVE_0005, 137)])
def test_camera_height_from_real_kitti_lidar(drive, frame):
    f = sample_frame(drive, frame)
    calib = find_raw_calib(f.drive_dir)
    h, w = read_rgb(f.image).shape[:2]
    lidar = project_points(read_velodyne(f.velodyne), calib.velo_to_image, w, h)
    fit = fit_ground_plane(lidar, calib.K, CFG)
    print(f"{drive} frame {frame}: camera height fitted to LiDAR {fit.distance:.3f} m")
    assert fit.distance == pytest.approx(1.65, abs=0.1)


def test_scale_turns_half_scale_lidar_into_metres():
    f = sample_frame(DRIVE_0001, 5)
    calib = find_raw_calib(f.drive_dir)
    lidar = project_points(read_velodyne(f.velodyne), calib.velo_to_image, W, H)
    scaler = GroundPlaneScaler(CFG)
    scaled = scaler.apply(lidar * 0.5, calib.K)
    assert scaler.scale == pytest.approx(2.0 * 1.65 / 1.616, rel=0.03)
    valid = lidar > 0
    assert np.median(scaled[valid] / lidar[valid]) == pytest.approx(1.0, abs=0.05)


def test_smoothing_rejects_a_jump_then_relocks():
    cfg = dataclasses.replace(CFG, smoothing=0.5, max_jump=0.2)
    scaler = GroundPlaneScaler(cfg)
    assert scaler.update(road_depth(1.65), K) == pytest.approx(1.0, rel=0.01)
    assert scaler.update(road_depth(1.65 * 1.1, seed=1), K) == pytest.approx(
        1.1 ** -0.5, rel=0.01)  # EMA in log space, half way
    before = scaler.scale
    assert scaler.update(road_depth(1.65 * 3), K) == before  # one wild frame: ignored
    for _ in range(GroundPlaneScaler.RESYNC_AFTER - 1):
        scaler.update(road_depth(1.65 * 3), K)
    assert scaler.scale == pytest.approx(1 / 3, rel=0.02)  # persistent change: re-locked


def test_mode_none_never_scales():
    assert GroundPlaneScaler(ScaleConfig(mode="none")).update(road_depth(0.3), K) == 1.0


class _GtBackend:
    """Stands in for a network: returns each validation frame's ground truth at half scale."""

    def __init__(self):
        self.frames = iter(sample_frame(DRIVE_0001, i) for i in (5, 50, 100))

    def infer(self, rgb):
        gt = read_depth_png(next(self.frames).gt)
        return DepthResult(gt * 0.5, gt * 0.5)


def test_evaluation_table_shows_ground_plane_fixing_scale():
    rows = evaluate(_GtBackend(), CFG)
    mean = rows[-1]
    assert mean["frame"] == "mean" and len(rows) == 4
    assert mean["abs_rel_none"] == pytest.approx(0.5, abs=0.01)  # half scale: AbsRel 0.5
    assert mean["abs_rel_ground_plane"] < 0.05
    assert all(r["fit_ok"] for r in rows)
    assert "| mean |" in to_markdown(rows)
