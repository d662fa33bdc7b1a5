"""KITTI readers and the LiDAR projection, checked on real KITTI files."""

import numpy as np
import pytest

from conftest import DRIVE_0001, SAMPLE
from mono_depth_ros import geometry, kitti
from mono_depth_ros.kitti import KittiFormatError

FRAME5 = "0000000005"


@pytest.fixture(scope="module")
def projected_frame5():
    calib = kitti.find_raw_calib(DRIVE_0001)
    pts = kitti.read_velodyne(DRIVE_0001 / "velodyne_points" / "data" / f"{FRAME5}.bin")
    return geometry.project_points(pts, calib.velo_to_image, 1242, 375)


def test_raw_calibration_values():
    calib = kitti.find_raw_calib(DRIVE_0001)
    assert calib.P_rect[0, 0] == pytest.approx(721.5377)
    assert calib.image_size == (1242, 375)
    # camera 2 sits about 6 cm beside camera 0: P_rect_02 = K [I | t], t = K^-1 P[:, 3]
    tz = 2.745884e-03
    assert calib.cam_to_rect_offset[2] == pytest.approx(tz)
    assert calib.cam_to_rect_offset[0] == pytest.approx((44.85728 - 609.5593 * tz) / 721.5377)


def test_projection_agrees_with_benchmark_velodyne_raw_png(projected_frame5):
    """The benchmark's own projection of the same scan (velodyne_raw PNG) must match ours."""
    ref = kitti.read_depth_png(SAMPLE / "data_depth_velodyne/train/2011_09_26_drive_0001_sync/"
                               f"proj_depth/velodyne_raw/image_02/{FRAME5}.png")
    ours = projected_frame5
    assert ours.shape == ref.shape
    # same number of lit pixels within 1 %
    assert abs(int((ours > 0).sum()) - int((ref > 0).sum())) < 0.01 * (ref > 0).sum()
    # The benchmark compensates the scan's rotation, which moves points by about a pixel, so we
    # ask: does each benchmark pixel have one of our points within one pixel and 2 % depth?
    ys, xs = np.nonzero(ref)
    h, w = ref.shape
    matched = np.zeros(len(ys), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            d = ours[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
            matched |= (d > 0) & (np.abs(d - ref[ys, xs]) < 0.02 * ref[ys, xs])
    assert matched.mean() > 0.8
    both = (ours > 0) & (ref > 0)
    assert np.median(np.abs(ours[both] - ref[both]) / ref[both]) < 0.005


def test_projection_agrees_with_annotated_ground_truth(projected_frame5):
    gt = kitti.read_depth_png(SAMPLE / "data_depth_annotated/train/2011_09_26_drive_0001_sync/"
                              f"proj_depth/groundtruth/image_02/{FRAME5}.png")
    both = (projected_frame5 > 0) & (gt > 0)
    rel = np.abs(projected_frame5[both] - gt[both]) / gt[both]
    assert both.sum() > 5000
    assert np.median(rel) < 0.01
    assert (rel < 0.05).mean() > 0.95


def test_wrong_camera_matrix_is_detected(projected_frame5):
    """Control: using camera 3's P matrix must break the agreement the tests above rely on."""
    c2c = kitti.read_calib_file(DRIVE_0001.parent / "calib_cam_to_cam.txt")
    good = kitti.find_raw_calib(DRIVE_0001)
    P3 = c2c["P_rect_03"].reshape(3, 4)
    pts = kitti.read_velodyne(DRIVE_0001 / "velodyne_points" / "data" / f"{FRAME5}.bin")
    wrong = geometry.project_points(pts, P3 @ good.velo_to_rect, 1242, 375)
    both = (wrong > 0) & (projected_frame5 > 0)
    assert both.sum() < 0.5 * (projected_frame5 > 0).sum()


def test_points_behind_camera_are_dropped():
    calib = kitti.find_raw_calib(DRIVE_0001)
    behind = np.array([[-10.0, 0.0, 0.0, 1.0], [10.0, 0.0, 0.0, 1.0]], np.float32)  # x forward
    d = geometry.project_points(behind, calib.velo_to_image, 1242, 375)
    # the camera sits 27 cm ahead of the velodyne
    assert (d > 0).sum() == 1 and d.max() == pytest.approx(10.0 - 0.27, abs=0.1)


def test_nearest_point_wins():
    P = np.array([[100.0, 0, 50, 0], [0, 100.0, 50, 0], [0, 0, 1, 0]])
    pts = np.array([[0, 0, 20.0], [0, 0, 5.0], [0, 0, 12.0]])  # already camera coordinates
    d = geometry.project_points(pts, P, 100, 100)
    assert d[50, 50] == pytest.approx(5.0)


def test_object_calibration(tmp_path):
    calib = kitti.read_object_calib(SAMPLE / "not_for_training/eigen_test_scenes/object/training/"
                                    "calib/000001.txt")
    assert calib.P_rect.shape == (3, 4) and calib.velo_to_rect.shape == (4, 4)


def test_depth_png_round_trip(tmp_path):
    d = np.array([[0.0, 1.5], [80.25, np.nan]], np.float32)
    kitti.write_depth_png(tmp_path / "d.png", d)
    back = kitti.read_depth_png(tmp_path / "d.png")
    assert back[0, 1] == pytest.approx(1.5) and back[1, 0] == pytest.approx(80.25)
    assert back[0, 0] == 0 and back[1, 1] == 0


def test_timestamps():
    ts = kitti.read_timestamps(DRIVE_0001 / "image_02" / "timestamps.txt")
    assert len(ts) == 108 and 0.09 < ts[1] - ts[0] < 0.11


@pytest.mark.parametrize("content, why", [
    ("P_rect_02: 1 2 3\nR_rect_00: 1 0 0 0 1 0 0 0 1\n", "has 3 values"),
    ("R_rect_00: 1 0 0 0 1 0 0 0 1\n", "missing 'P_rect_02'"),
    ("this is not a calibration file\n", "expected 'key: values'"),
])
def test_bad_calibration_file_one_clear_line(tmp_path, content, why):
    (tmp_path / "calib_cam_to_cam.txt").write_text(content)
    (tmp_path / "calib_velo_to_cam.txt").write_text("R: 1 0 0 0 1 0 0 0 1\nT: 0 0 0\n")
    with pytest.raises(KittiFormatError, match=why) as exc:
        kitti.read_raw_calib(tmp_path / "calib_cam_to_cam.txt", tmp_path / "calib_velo_to_cam.txt")
    assert "\n" not in str(exc.value)


def test_missing_calibration(tmp_path):
    with pytest.raises(KittiFormatError, match="not found"):
        kitti.find_raw_calib(tmp_path / "2011_09_26_drive_0001_sync")


def test_corrupt_png_and_truncated_scan(tmp_path):
    src = (DRIVE_0001 / "image_02" / "data" / f"{FRAME5}.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(src[:200])
    with pytest.raises(KittiFormatError, match="not a readable image"):
        kitti.read_rgb(tmp_path / "cut.png")
    with pytest.raises(KittiFormatError, match="not a readable PNG"):
        kitti.read_depth_png(tmp_path / "cut.png")
    scan = (DRIVE_0001 / "velodyne_points" / "data" / f"{FRAME5}.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(scan[:1001])
    with pytest.raises(KittiFormatError, match="truncated"):
        kitti.read_velodyne(tmp_path / "cut.bin")


def test_split_lists(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(KittiFormatError, match="empty"):
        kitti.read_split(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("2011_09_26/2011_09_26_drive_0001_sync five l\n")
    with pytest.raises(KittiFormatError, match="expected 'FOLDER FRAME l|r'"):
        kitti.read_split(tmp_path / "bad.txt")
    (tmp_path / "ok.txt").write_text("2011_09_26/2011_09_26_drive_0001_sync 0000000005 l\n")
    (entry,) = kitti.read_split(tmp_path / "ok.txt")
    assert entry.drive == "2011_09_26_drive_0001"
    assert entry.image_path(SAMPLE).is_file() and entry.velodyne_path(SAMPLE).is_file()


def test_eigen_test_scenes_list():
    scenes = kitti.read_test_scenes(SAMPLE / "splits/sfmlearner/test_scenes.txt")
    assert len(scenes) == 28 and "2011_09_26_drive_0101" in scenes
    assert "2011_09_26_drive_0001" not in scenes
