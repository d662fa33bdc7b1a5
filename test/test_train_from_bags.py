"""Train and evaluate from recorded bags (issue 13): bags written by kitti_to_bag from the real
KITTI sample frames (drives 0001 and 0005 of 2011_09_26, not Eigen test scenes), one of them ROS 1
and two of them seen through another camera (centre crop, crop + resize); frames extracted into
the cache and re-used; projected depth checked pixel by pixel against the offline KITTI
projection; a tiny model trained from the bags, fine-tuned with --init, exported to ONNX and scored
by evaluate_bag on a held-out bag; bad bags give one line and a non-zero exit."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import DRIVE_0001, DRIVE_0005, REPO, SAMPLE
from mono_depth_ros import geometry, kitti
from mono_depth_ros.bags import kitti_to_bag
from training import bag_source, data as D

CROP = (620, 188)
TINY = ["--model-height", "64", "--model-width", "192", "--no-pretrained", "--threads", "1",
        "--coarse-epochs", "1", "--fine-epochs", "1", "--val-every", "0"]


def write(args: list[str]) -> None:
    assert kitti_to_bag.main([*args, "--no-progress"]) == 0


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    d = tmp_path_factory.mktemp("bags")
    scenes = kitti.read_test_scenes(SAMPLE / "splits" / "sfmlearner" / "test_scenes.txt")
    assert not {"2011_09_26_drive_0001", "2011_09_26_drive_0005"} & scenes
    write([str(DRIVE_0001), str(DRIVE_0005), str(d / "two")])            # ROS 2, 2 scans
    write([str(DRIVE_0001), str(d / "one.bag"), "--ros1"])                # ROS 1
    write([str(DRIVE_0001), str(d / "crop"), "--crop", "x".join(map(str, CROP))])
    write([str(DRIVE_0005), str(d / "held"), "--crop", "900x300", "--resize", "0.75"])
    write([str(DRIVE_0001), str(d / "no_lidar"), "--frames", "50,100"])
    return d


def offline_depth(drive, frame: int) -> np.ndarray:
    """The offline KITTI projection (training.data's 'lidar' ground truth), PNG-quantised."""
    calib = kitti.find_raw_calib(drive)
    scan = kitti.read_velodyne(drive / "velodyne_points" / "data" / f"{frame:010d}.bin")
    d = geometry.project_points(scan, calib.velo_to_image, 1242, 375)
    return np.round(d * 256) / 256


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels with a point in either image where both agree within 1/256 m."""
    either = (a > 0) | (b > 0)
    same = either & (a > 0) & (b > 0) & (np.abs(a - b) <= 1 / 256 + 1e-6)
    return same.sum() / either.sum()


def test_extracted_depth_matches_the_offline_kitti_projection(bags, tmp_path):
    cache = tmp_path / "cache"
    two = bag_source.extract_bag(bags / "two", cache, progress=False)
    ros1 = bag_source.extract_bag(bags / "one.bag", cache, progress=False)
    crop = bag_source.extract_bag(bags / "crop", cache, progress=False)
    assert [len(b.frames) for b in (two, ros1, crop)] == [2, 1, 1]
    assert two.manifest["unmatched_images"] == 2  # frames 50 and 100 have no scan
    ref = offline_depth(DRIVE_0001, 5)
    sample = D.load_sample(two.frames[0])
    assert sample.gt_kind == "png" and sample.rgb.shape == (375, 1242, 3)
    assert (ref > 0).sum() > 15000
    assert agreement(sample.depth, ref) > 0.999
    assert agreement(D.load_sample(two.frames[1]).depth, offline_depth(DRIVE_0005, 137)) > 0.999
    assert np.array_equal(D.load_sample(ros1.frames[0]).depth, sample.depth)
    # the cropped camera: the same points, shifted with the principal point
    x0, y0 = (1242 - CROP[0]) // 2, (375 - CROP[1]) // 2
    cropped = D.load_sample(crop.frames[0])
    assert cropped.depth.shape == CROP[::-1]
    assert agreement(cropped.depth, ref[y0:y0 + CROP[1], x0:x0 + CROP[0]]) > 0.999
    assert np.array_equal(cropped.rgb, sample.rgb[y0:y0 + CROP[1], x0:x0 + CROP[0]])
    # the per-bag object-format calibration: P2 = camera_info's P and it reproduces the projection
    for bf, full in ((two, sample), (crop, cropped)):
        calib = kitti.read_object_calib(bf.folder / "calib.txt")
        assert np.allclose(calib.P_rect, np.array(bf.manifest["P"]))
        scan = kitti.read_velodyne(DRIVE_0001 / "velodyne_points" / "data" / "0000000005.bin")
        h, w = full.depth.shape
        again = np.round(geometry.project_points(scan, calib.velo_to_image, w, h) * 256) / 256
        assert agreement(again, full.depth) > 0.999
    assert crop.manifest["P"][0][2] == pytest.approx(two.manifest["P"][0][2] - x0)


def test_second_extraction_reuses_the_cache_and_settings_change_the_key(bags, tmp_path):
    cache = tmp_path / "cache"
    first = bag_source.extract_bag(bags / "two", cache, progress=False)
    assert not first.cached
    stamps = {p: p.stat().st_mtime_ns for p in first.folder.rglob("*")}
    again = bag_source.extract_bag(bags / "two", cache, progress=False)
    assert again.cached and again.folder == first.folder
    assert {p: p.stat().st_mtime_ns for p in again.folder.rglob("*")} == stamps
    assert [f.frame_id for f in again.frames] == [f.frame_id for f in first.frames]
    m = again.manifest
    assert m["topics"]["lidar"] == "/kitti/velo/pointcloud" and m["settings"]["slop"] == 0.05
    assert m["bag"] == str((bags / "two").resolve()) and len(m["frames"]) == 2
    assert {f.drive for f in again.frames} == {"bag:two"}
    other = bag_source.extract_bag(bags / "two", cache,
                                   bag_source.ExtractSettings(slop=0.02), progress=False)
    assert other.folder != first.folder and not other.cached
    assert not list(cache.glob(".tmp-*"))


def test_validation_by_time_keeps_a_gap():
    stamps = [int(i * 1e8) for i in range(100)]  # 10 s at 10 Hz
    train, val = bag_source.split_by_time(stamps, 0.2, 2.0)
    assert val == list(range(80, 100))
    assert train == list(range(0, 60))             # 2 s (20 frames) before frame 80 dropped
    assert max(stamps[i] for i in train) < stamps[80] - 2e9 + 1
    assert bag_source.split_by_time(stamps[:1], 0.2, 2.0) == ([0], [])
    assert bag_source.split_by_time(stamps[:2], 0.2, 0.0) == ([0], [1])
    assert bag_source.split_by_time(stamps, 0.0, 2.0) == (list(range(100)), [])


def run(*args, cwd=REPO, timeout=180):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_train_from_bags_finetune_export_and_evaluate_a_held_out_bag(bags, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    r = run("-m", "training.train", "--bag", str(bags / "two"), "--bag", str(bags / "one.bag"),
            "--bag", str(bags / "crop"), "--val-bag", str(bags / "held"), "--bag-cache",
            str(cache), "--out-dir", str(out), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "all for validation" in r.stdout
    ck = __import__("torch").load(out / "model.pt", weights_only=True)
    assert len(ck["meta"]["train_frames"]) == 4 and len(ck["meta"]["val_frames"]) == 1
    assert all(f.startswith("bag:") for f in ck["meta"]["train_frames"])
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["val_fine"]["val_abs_rel"])
    # fine-tune from it, configured in YAML (bags + init in the train section), cache re-used
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"train:\n  bags: [{bags / 'two'}]\n  init: {out / 'model.pt'}\n"
                   f"  bag_cache: {cache}\n  out_dir: {tmp_path / 'ft'}\n  coarse_epochs: 0\n"
                   "  fine_epochs: 1\n  pretrained: false\n  threads: 1\n")
    r = run("-m", "training.train", "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fine-tuning from" in r.stdout and "(cache," in r.stdout
    assert "1 train, 1 validation" in r.stdout
    ft = __import__("torch").load(tmp_path / "ft" / "model.pt", weights_only=True)
    assert ft["model_config"]["width"] == 192  # the checkpoint's network, not the default
    r = run("-m", "training.export", "--checkpoint", str(out / "model.pt"), "--out", str(out))
    assert r.returncode == 0 and (out / "model.onnx").is_file(), r.stderr[-2000:]
    r = run("-m", "mono_depth_ros.bags.evaluate_bag", "--bag", str(bags / "held"), "--out",
            str(tmp_path / "eval"), "--model", str(out / "model.pt"), "--backend",
            "onnxruntime", "--no-plots")
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["frames"] == 1
    assert all(math.isfinite(metrics[k]) for k in ("abs_rel", "rmse", "metric_abs_rel", "d1"))


def test_init_whose_model_differs_from_the_config_is_one_line(bags, tmp_path, capsys):
    from mono_depth_ros.config import ModelConfig
    from mono_depth_ros.model_io import save_checkpoint
    from training import train

    ck = tmp_path / "m.pt"
    save_checkpoint(ck, {"model_config": ModelConfig(height=64, width=192).__dict__,
                         "state_dict": {}})
    rc = train.main(["--bag", str(bags / "two"), "--init", str(ck), "--model-width", "256"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "width: 256 in the command line, 192 in" in err and str(ck) in err


def write_bag(path, info: bool = True, cloud: bool = False) -> None:
    """A ROS 2 bag of the sample's frame 0001/5 under other names (camera 'cam', LiDAR 'lidar'),
    with no /tf_static; optionally without camera_info or without the scan."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    m = kitti_to_bag._Msgs()
    rgb = kitti.read_rgb(DRIVE_0001 / "image_02" / "data" / "0000000005.png")
    P = kitti.find_raw_calib(DRIVE_0001).P_rect
    scan = kitti.read_velodyne(DRIVE_0001 / "velodyne_points" / "data" / "0000000005.bin")
    msgs = [("/cam/image_raw", "sensor_msgs/msg/Image", m.image(rgb, 10**9, "cam"))]
    if info:
        msgs.append(("/cam/camera_info", "sensor_msgs/msg/CameraInfo",
                     m.camera_info(P, np.eye(3), 1242, 375, 10**9, "cam")))
    if cloud:
        msgs.append(("/lidar/points", "sensor_msgs/msg/PointCloud2",
                     m.cloud(scan, 10**9 + 20_000_000, "lidar")))  # 20 ms after the image
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        for topic, typ, msg in msgs:
            c = w.add_connection(topic, typ, typestore=m.ts)
            w.write(c, 10**9, m.ts.serialize_cdr(msg, typ))


def test_a_bag_without_tf_static_takes_a_calibration_file(bags, tmp_path, capsys):
    from training import train

    write_bag(tmp_path / "no_tf", cloud=True)
    rc = train.main(["--bag", str(tmp_path / "no_tf"), "--bag-cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no transform lidar -> cam in /tf_static" in err and "--bag-calib" in err
    ref = bag_source.extract_bag(bags / "two", tmp_path / "cache", progress=False)
    want = D.load_sample(ref.frames[0]).depth
    # a KITTI date folder, and the object-format file the cache itself wrote, give the same depth
    for calib in (DRIVE_0001.parent, ref.folder / "calib.txt"):
        bf = bag_source.extract_bag(tmp_path / "no_tf", tmp_path / "cache",
                                    bag_source.ExtractSettings(calib=str(calib)), progress=False)
        assert bf.manifest["topics"]["lidar"] == "/lidar/points"
        assert bf.manifest["frames"][0]["lidar_stamp_ns"] - bf.stamps_ns[0] == 20_000_000
        assert agreement(D.load_sample(bf.frames[0]).depth, want) > 0.999


def test_bad_bags_are_one_line_and_a_non_zero_exit(bags, tmp_path, capsys):
    from training import train

    write_bag(tmp_path / "no_info", info=False, cloud=True)
    write_bag(tmp_path / "no_cloud")
    cut = tmp_path / "cut"
    shutil.copytree(bags / "two", cut)
    (mcap,) = cut.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    cases = {"no_lidar": "has a LiDAR scan", "no_info": "camera_info", "no_cloud": "no LiDAR",
             "cut": "truncated"}
    for name, words in cases.items():
        path = bags / name if name == "no_lidar" else tmp_path / name
        rc = train.main(["--bag", str(path), "--bag-cache", str(tmp_path / "cache"),
                         "--out-dir", str(tmp_path / "out"), *TINY])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("train: error:") and len(err.splitlines()) == 1, err
        assert words in err and str(path) in err, err
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written is left
    r = run("-m", "training.train", "--bag", str(cut), "--bag-cache", str(tmp_path / "c2"))
    assert r.returncode == 2 and r.stderr.strip().startswith("train: error:")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
