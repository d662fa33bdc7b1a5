"""Backends: factory choice and logging, onnxruntime vs torch agreement on KITTI, GPU paths."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mono_depth_ros.backends.base import BackendUnavailable
from mono_depth_ros.backends.factory import (AUTO_ORDER, auto_candidates, create_backend,
                                             resolve_onnx)
from mono_depth_ros.config import BackendConfig, ConfigError, EvalConfig, from_dict
from mono_depth_ros.kitti import read_depth_png, read_rgb
from mono_depth_ros.metrics import score_frame
from mono_depth_ros.model_io import (ModelLoadError, default_model_path, load_checkpoint,
                                     save_checkpoint)
from mono_depth_ros.sample_frames import validation_frames


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine_cache")


@pytest.fixture(scope="module")
def ort_cpu(cache_dir):
    return create_backend(BackendConfig(backend="onnxruntime", device="cpu",
                                        engine_cache_dir=str(cache_dir)))


@pytest.fixture(scope="module")
def torch_cpu():
    return create_backend(BackendConfig(backend="torch", device="cpu"))


@pytest.fixture(scope="module")
def frames():
    return [(read_rgb(f.image), read_depth_png(f.gt)) for f in validation_frames()]


def test_onnxruntime_and_torch_give_same_eigen_metrics(ort_cpu, torch_cpu, frames):
    for rgb, gt in frames:
        a, b = ort_cpu.infer(rgb), torch_cpu.infer(rgb)
        assert a.fine.shape == gt.shape == b.fine.shape
        sa, sb = score_frame(a.fine, gt, EvalConfig()), score_frame(b.fine, gt, EvalConfig())
        assert abs(sa.scaled["abs_rel"] - sb.scaled["abs_rel"]) <= 1e-3
        assert abs(sa.metric["abs_rel"] - sb.metric["abs_rel"]) <= 1e-3
        for x, y in ((a.fine, b.fine), (a.coarse, b.coarse)):
            assert np.max(np.abs(np.log(x) - np.log(y))) <= 1e-4


def test_auto_takes_first_available_and_logs_why(cache_dir, caplog):
    with caplog.at_level(logging.INFO, logger="mono_depth_ros.backends"):
        b = create_backend(BackendConfig(engine_cache_dir=str(cache_dir)))
    if _has_tensorrt() and _torch_cuda():
        expected = "tensorrt"
    elif _ort_cuda():
        expected = "onnxruntime"
    elif _torch_cuda():
        expected = "torch"
    else:
        expected = "onnxruntime"
        assert "CPUExecutionProvider" in b.describe()
    assert b.name == expected
    msgs = [r.getMessage() for r in caplog.records if r.name == "mono_depth_ros.backends"]
    chosen = [m for m in msgs if "chosen automatically" in m]
    assert len(chosen) == 1 and b.describe() in chosen[0]
    if not _has_tensorrt():
        assert "tensorrt: TensorRT is not installed" in chosen[0]  # the reason it was skipped


def test_auto_on_cpu_only_tries_cpu_paths():
    assert auto_candidates("cpu") == ["onnxruntime-cpu", "torch-cpu"]
    assert "torch-cpu" not in auto_candidates("cuda")
    assert auto_candidates("auto") == list(AUTO_ORDER)


def test_unavailable_backend_is_one_line(cache_dir):
    if _has_tensorrt() and _torch_cuda():
        pytest.skip("TensorRT and a GPU exist here; nothing is unavailable")
    with pytest.raises(BackendUnavailable) as exc:
        create_backend(BackendConfig(backend="tensorrt", engine_cache_dir=str(cache_dir)))
    assert "\n" not in str(exc.value) and str(exc.value)
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        create_backend(BackendConfig(backend="tensorrt", device="cpu"))


def test_bad_backend_config_is_rejected():
    with pytest.raises(ConfigError):
        from_dict(BackendConfig, {"backend": "tflite"})
    with pytest.raises(ConfigError):
        from_dict(BackendConfig, {"device": "gpu0"})


def test_missing_onnx_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="ONNX model not found"):
        create_backend(BackendConfig(backend="onnxruntime", onnx=str(tmp_path / "none.onnx")))


def test_onnxruntime_thread_count_is_configurable(cache_dir):
    b = create_backend(BackendConfig(backend="onnxruntime", device="cpu", threads=1,
                                     engine_cache_dir=str(cache_dir)))
    assert b.session.get_session_options().intra_op_num_threads == 1


def test_stale_shipped_onnx_is_not_used(tmp_path, monkeypatch, cache_dir, ort_cpu):
    """A model.onnx exported from an older model.pt must not run with the new weights."""
    model_dir = tmp_path / "default"
    model_dir.mkdir()
    ckpt = load_checkpoint(default_model_path())
    ckpt["meta"] = {**ckpt.get("meta", {}), "note": "retrained"}
    save_checkpoint(model_dir / "model.pt", ckpt)
    (model_dir / "model.onnx").write_bytes(ort_cpu.path.read_bytes())  # old export
    monkeypatch.setenv("MONO_DEPTH_MODEL_DIR", str(model_dir))
    cfg = BackendConfig(engine_cache_dir=str(tmp_path / "cache"))
    path = resolve_onnx(cfg)
    assert path != model_dir / "model.onnx" and path.parent == tmp_path / "cache" / "onnx"
    from mono_depth_ros.onnx_export import read_metadata, sha256_file

    assert read_metadata(path)["checkpoint_sha256"] == sha256_file(model_dir / "model.pt")


def test_predict_cli_runs_onnxruntime_like_torch(tmp_path, monkeypatch, cache_dir):
    from mono_depth_ros import predict

    monkeypatch.setenv("MONO_DEPTH_ENGINE_CACHE", str(cache_dir))
    image = validation_frames()[0].image
    for name in ("onnxruntime", "torch"):
        assert predict.run(["--images", str(image), "--out", str(tmp_path / name),
                            "--backend", name, "--format", "npy"]) == 0
    a = np.load(next((tmp_path / "onnxruntime").glob("*.npy")))
    b = np.load(next((tmp_path / "torch").glob("*.npy")))
    # --backend torch runs on the GPU where there is one, with TF32 convolutions (measured on an
    # H200: 1.2e-3); on CPU both are fp32 and agree to 1e-4
    tol = 3e-3 if _torch_cuda() else 1e-4
    assert np.max(np.abs(np.log(a) - np.log(b))) <= tol


# ---------------------------------------------------------------------------------------------
# GPU paths: run where the hardware and libraries exist, skip with the reason otherwise
# ---------------------------------------------------------------------------------------------

def test_onnxruntime_cuda_matches_cpu(cache_dir, ort_cpu, frames):
    if not _ort_cuda():
        pytest.skip("onnxruntime has no CUDAExecutionProvider here (CPU-only build / no GPU)")
    gpu = create_backend(BackendConfig(backend="onnxruntime", device="cuda",
                                       engine_cache_dir=str(cache_dir)))
    assert gpu.on_gpu
    rgb = frames[0][0]
    assert np.max(np.abs(np.log(gpu.infer(rgb).fine) - np.log(ort_cpu.infer(rgb).fine))) < 1e-2


def test_torch_cuda_matches_cpu(torch_cpu, frames):
    if not _torch_cuda():
        pytest.skip("torch.cuda.is_available() is False (CPU-only torch / no GPU)")
    gpu = create_backend(BackendConfig(backend="torch", device="cuda"))
    rgb = frames[0][0]
    assert np.max(np.abs(np.log(gpu.infer(rgb).fine) - np.log(torch_cpu.infer(rgb).fine))) < 1e-2


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_tensorrt_engine_matches_onnxruntime(cache_dir, ort_cpu, frames, precision, tol):
    if not _has_tensorrt():
        pytest.skip("TensorRT is not installed here (not on PyPI without NVIDIA's index)")
    if not _torch_cuda():
        pytest.skip("TensorRT needs a CUDA GPU; torch.cuda.is_available() is False")
    trt = create_backend(BackendConfig(backend="tensorrt", precision=precision,
                                       engine_cache_dir=str(cache_dir)))
    rgb = frames[0][0]
    diff = np.abs(np.log(trt.infer(rgb).fine) - np.log(ort_cpu.infer(rgb).fine))
    assert np.max(diff) < tol
    again = create_backend(BackendConfig(backend="tensorrt", precision=precision,
                                         engine_cache_dir=str(cache_dir),
                                         allow_engine_build=False))  # must hit the cache
    assert again.engine_path == trt.engine_path


def test_benchmark_table_reports_speedup_against_torch_eager():
    """Formatting only (no timing in tests): speed-up and share of peak come out right."""
    from mono_depth_ros.benchmark import _parse_sizes, to_markdown

    assert _parse_sizes("640x192,416x128") == [(192, 640), (128, 416)]
    with pytest.raises(ValueError, match="multiples of 32"):
        _parse_sizes("640x190")
    common = dict(size="640x192", gflop=3.6, p99_ms=0, peak_rss_mib=100)
    p50 = (("decode", 9.0), ("preprocess", 1.5), ("inference", 40.0), ("postprocess", 2.25))
    stages = {k: {"p50_ms": v} for k, v in p50}
    rows = [dict(variant="onnxruntime-cpu", describe="ort", p50_ms=50.0, mean_ms=50.0,
                 stages=stages, **common),
            dict(variant="onnxruntime-cpu-int8", describe="ort q", precision="int8", p50_ms=40.0,
                 mean_ms=40.0, **common),
            dict(variant="torch-cpu", describe="torch", p50_ms=100.0, mean_ms=100.0, **common),
            dict(variant="tensorrt-fp16", size="640x192", error="TensorRT is not installed")]
    table = to_markdown(rows, peak=144.0)
    assert "| ort | fp32 | 640x192 | 3.60 | 50.0 |" in table and "| 2.00x | 72 (50%) |" in table
    assert "| 9.0 / 1.5 / 40.0 / 2.2 |" in table
    assert "| ort q | int8 | 640x192 |" in table and "| 2.50x | 90 (6" in table
    assert "failed: TensorRT is not installed" in table


def test_infer_reuses_buffers_but_results_stay_the_callers(ort_cpu, frames):
    """The input tensor and work buffers are reused frame to frame; returned depth is not."""
    from mono_depth_ros.preprocess import to_camera_depth, to_network_input

    (rgb1, _), (rgb2, _) = frames[:2]
    first = ort_cpu.infer(rgb1)
    fine1 = first.fine.copy()
    x_buf = ort_cpu._buffers.get("input", (1, 3, *ort_cpu.input_size), np.float32)
    second = ort_cpu.infer(rgb2)
    assert ort_cpu._buffers.get("input", (1, 3, *ort_cpu.input_size), np.float32) is x_buf
    np.testing.assert_array_equal(first.fine, fine1)  # not overwritten by the second frame
    assert not np.array_equal(first.fine, second.fine)
    # same numbers as a fresh session.run on freshly allocated arrays (coarse resized lazily)
    x = to_network_input(rgb1, *ort_cpu.input_size)
    fine, coarse = ort_cpu.session.run(None, {"image": x})[:2]  # (+ confidence: the head)
    np.testing.assert_array_equal(first.fine, to_camera_depth(fine, *rgb1.shape[:2]))
    np.testing.assert_array_equal(first.coarse, to_camera_depth(coarse, *rgb1.shape[:2]))
    assert set(ort_cpu.last_timing) == {"preprocess", "inference", "postprocess"}


def test_onnxruntime_threads_do_not_spin_unless_asked(cache_dir):
    key = "session.intra_op.allow_spinning"
    quiet = create_backend(BackendConfig(backend="onnxruntime", device="cpu", threads=1,
                                         engine_cache_dir=str(cache_dir)))
    assert quiet.session.get_session_options().get_session_config_entry(key) == "0"
    spin = create_backend(BackendConfig(backend="onnxruntime", device="cpu", threads=1,
                                        ort_spinning=True, engine_cache_dir=str(cache_dir)))
    assert spin.session.get_session_options().get_session_config_entry(key) == "1"
