"""INT8 on CPU: calibration-frame selection, real ONNX Runtime static quantisation of the shipped
model on real KITTI frames, the cache, and ``precision: int8`` through the backend factory."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mono_depth_ros.backends.factory import create_backend
from mono_depth_ros.calibration import (EIGEN_TEST_DRIVES, CalibrationError, calibration_frames,
                                        calibration_id)
from mono_depth_ros.config import BackendConfig, EvalConfig
from mono_depth_ros.kitti import drive_of, read_depth_png, read_rgb, read_test_scenes
from mono_depth_ros.metrics import score_frame
from mono_depth_ros.model_io import ModelLoadError, default_onnx_path
from mono_depth_ros.sample_frames import all_frames, validation_frames

from conftest import REPO

SHARED_INDEX = REPO.parent / "shared" / "kitti" / "index.tsv"
TEST_SCENES = REPO.parent / "shared" / "kitti" / "splits" / "sfmlearner" / "test_scenes.txt"


def test_default_calibration_set_is_the_sample_frames_in_a_fixed_order():
    frames = calibration_frames("")
    assert frames == [f.image for f in all_frames()]
    assert calibration_frames("") == frames and calibration_id(frames) == calibration_id(frames)
    assert calibration_id(frames[:2]) != calibration_id(frames)


def test_builtin_test_drive_list_matches_the_split_file():
    if not TEST_SCENES.is_file():
        pytest.skip(f"{TEST_SCENES} is not on this machine (shared KITTI folder)")
    assert set(EIGEN_TEST_DRIVES) == read_test_scenes(TEST_SCENES)


def test_index_calibration_spreads_over_drives_and_never_takes_test_drives():
    if not SHARED_INDEX.is_file():
        pytest.skip(f"{SHARED_INDEX} is not on this machine (shared KITTI folder)")
    frames = calibration_frames(SHARED_INDEX, limit=24)
    assert len(frames) == 24 and len(set(frames)) == 24
    assert all(p.is_file() for p in frames)
    drives = [drive_of(str(p)) for p in frames]
    assert not set(drives) & EIGEN_TEST_DRIVES
    assert not any("not_for_training" in p.parts or "image_03" in p.parts for p in frames)
    assert drives.count("2011_09_26_drive_0005") <= 2  # one long drive does not fill the set
    fewer = calibration_frames(SHARED_INDEX, limit=24, exclude_drives=("2011_09_26_drive_0001",))
    assert "2011_09_26_drive_0001" not in {drive_of(str(p)) for p in fewer}


def test_folder_calibration_skips_test_drives_and_bad_sources_are_one_line(tmp_path):
    good = tmp_path / "2011_09_26_drive_0001_sync" / "image_02" / "data"
    bad = tmp_path / "2011_09_26_drive_0117_sync" / "image_02" / "data"  # an Eigen test drive
    for d in (good, bad):
        d.mkdir(parents=True)
        shutil.copy(all_frames()[0].image, d / "0000000005.png")
    assert calibration_frames(tmp_path) == [good / "0000000005.png"]
    with pytest.raises(CalibrationError, match="neither an index.tsv nor a folder"):
        calibration_frames(tmp_path / "missing")
    with pytest.raises(CalibrationError, match="no usable frames"):
        calibration_frames(bad.parent.parent)


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("int8_cache")


@pytest.fixture(scope="module")
def backends(int8_cache):
    """FP32 and INT8 onnxruntime backends of the shipped model.onnx (INT8: real quantize_static
    calibrated on the KITTI sample frames, built into the module's cache)."""
    if not default_onnx_path().is_file():
        pytest.skip(f"no shipped ONNX model at {default_onnx_path()}")
    common = dict(backend="onnxruntime", device="cpu", threads=1, onnx=str(default_onnx_path()),
                  engine_cache_dir=str(int8_cache))
    return (create_backend(BackendConfig(precision="fp32", **common)),
            create_backend(BackendConfig(precision="int8", **common)))


def test_int8_is_a_real_qdq_model_selected_by_precision(backends):
    import onnx

    fp32, int8 = backends
    assert fp32.precision == "fp32" and int8.precision == "int8"
    assert "int8" in int8.describe() and "int8" not in fp32.describe()
    ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert int8.metadata["checkpoint_sha256"] == fp32.metadata["checkpoint_sha256"]
    assert '"format": "QDQ"' in int8.metadata["quantization"]
    assert int8.input_size == fp32.input_size


def test_int8_depth_is_close_to_fp32_on_kitti_frames(backends):
    fp32, int8 = backends
    for f in validation_frames():
        rgb, gt = read_rgb(f.image), read_depth_png(f.gt)
        a, b = fp32.infer(rgb), int8.infer(rgb)
        assert b.fine.shape == a.fine.shape == gt.shape and np.isfinite(b.fine).all()
        log_diff = np.abs(np.log(a.fine) - np.log(b.fine))
        assert float(np.mean(log_diff)) < 0.05, "int8 depth strays from fp32"
        assert not np.array_equal(a.fine, b.fine), "int8 returned the fp32 result"
        sa, sb = score_frame(a.fine, gt, EvalConfig()), score_frame(b.fine, gt, EvalConfig())
        assert abs(sa.scaled["abs_rel"] - sb.scaled["abs_rel"]) < 0.02


def test_int8_model_is_cached_and_a_miss_without_build_is_one_line(backends, int8_cache,
                                                                   tmp_path):
    _, int8 = backends
    common = dict(backend="onnxruntime", device="cpu", threads=1, onnx=str(default_onnx_path()),
                  precision="int8", allow_engine_build=False)
    again = create_backend(BackendConfig(engine_cache_dir=str(int8_cache), **common))
    assert again.path == int8.path  # found in the cache, not rebuilt
    with pytest.raises(ModelLoadError, match="python -m mono_depth_ros.quantize") as exc:
        create_backend(BackendConfig(engine_cache_dir=str(tmp_path), **common))
    assert "\n" not in str(exc.value)


def test_int8_eval_leaves_out_calibration_frames_by_content(tmp_path):
    """The validation frames of int8_eval: rows with ground truth, minus the calibration frames
    (recognised by their bytes, wherever the copy lies), with ground truth at image size."""
    from mono_depth_ros.int8_eval import _digest, report, validation_samples

    index = REPO / "data" / "kitti_sample" / "index.tsv"
    calib_copy = tmp_path / "copy.png"
    shutil.copy(all_frames()[0].image, calib_copy)  # drive 0001 frame 5, elsewhere
    everything, _ = validation_samples(str(index), set())
    samples, skipped = validation_samples(str(index), {_digest(calib_copy)})
    ids = [s.frame.frame_id for s in samples]
    assert len(samples) == len(everything) - 1 and skipped >= 1
    assert not any(i.endswith("0001_sync/0000000005") for i in ids)
    assert all(s.depth.shape == s.rgb.shape[:2] and (s.depth > 0).any() for s in samples)
    rows = [{"frame": i, "drive": "d", "abs_rel": 0.1, "metric_abs_rel": 0.2} for i in ids]
    worse = [dict(r, abs_rel=0.107) for r in rows]
    speed = {k: {"infer_p50_ms": 1.0, "inference_p50_ms": 1.0, "inference_p99_ms": 1.0}
             for k in ("fp32", "int8")}
    text, summary = report({"fp32": rows, "int8": worse}, speed, skipped)
    assert summary["delta_abs_rel_per_frame_mean"] == pytest.approx(0.007)
    assert not summary["recommended"] and "NOT met" in text


def test_reduced_range_follows_the_cpu():
    """7-bit weights on x86 without VNNI, where ONNX Runtime's U8S8 kernels saturate; full
    8-bit where VNNI exists and on ARM (Jetson)."""
    from mono_depth_ros.backends.ort_quant import QuantKey, cpu_has_vnni, needs_reduced_range

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    vnni = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni\n"
    assert not cpu_has_vnni(avx2) and cpu_has_vnni(vnni)
    assert cpu_has_vnni("flags : avx2 avx_vnni\n")
    assert needs_reduced_range("x86_64", avx2)
    assert not needs_reduced_range("x86_64", vnni)
    assert not needs_reduced_range("aarch64", avx2)
    a, b = QuantKey("ab" * 32, "cal", "1.0", False), QuantKey("ab" * 32, "cal", "1.0", True)
    assert a.filename() != b.filename()  # a model built for one CPU kind is not taken for another


def test_int8_model_records_this_cpus_range(backends):
    import json

    from mono_depth_ros.backends.ort_quant import needs_reduced_range

    _, int8 = backends
    info = json.loads(int8.metadata["quantization"])
    assert ("7-bit" in info["weights"]) == needs_reduced_range()
    assert ("_rr_" in int8.path.name) == needs_reduced_range()
