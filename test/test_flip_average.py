"""Test-time flip averaging: the blend's weights, and a real ONNX Runtime session on KITTI frames
blending its prediction with the mirrored image's, mirrored back."""

from __future__ import annotations

import numpy as np
import pytest

from mono_depth_ros.backends.factory import create_backend
from mono_depth_ros.config import BackendConfig, ConfigError, from_dict
from mono_depth_ros.flip_average import blend_depth, blend_linear, mirrored_weight
from mono_depth_ros.kitti import read_rgb
from mono_depth_ros.sample_frames import validation_frames


def test_weights_take_each_edge_from_one_view_and_the_middle_from_both():
    w = mirrored_weight(640)
    assert w.dtype == np.float32 and w.shape == (640,)
    assert np.all(w[:32] == 1.0) and np.all(w[-32:] == 0.0)  # the outer 5 % of each side
    assert np.all(w[64:-64] == 0.5)
    np.testing.assert_allclose(w + w[::-1], 1.0, atol=1e-6)  # the two views weigh alike overall
    assert np.all(np.diff(w) <= 1e-7)  # falls from left to right


def test_blend_is_in_inverse_depth_and_between_the_two():
    a = np.full((1, 1, 4, 200), 10.0, np.float32)
    b = np.full((1, 1, 4, 200), 40.0, np.float32)
    d = blend_depth(a, b)
    assert d.dtype == np.float32 and d.shape == a.shape
    assert d[..., 0].max() == pytest.approx(40.0) and d[..., -1].min() == pytest.approx(10.0)
    assert d[..., 100] == pytest.approx(16.0)  # 1 / (0.5 / 10 + 0.5 / 40)
    assert np.all((d >= 10.0 - 1e-4) & (d <= 40.0 + 1e-3))
    np.testing.assert_allclose(blend_depth(a, a), a, rtol=1e-6)
    assert blend_linear(np.zeros((2, 200)), np.ones((2, 200)))[0, 100] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def rgb_frames():
    return [read_rgb(f.image) for f in validation_frames()[:2]]


def test_onnxruntime_blends_the_mirrored_images_prediction(tmp_path, rgb_frames):
    """With flip averaging on, the depth is the blend of the plain prediction and the mirrored
    image's prediction mirrored back (same session, same frame), and it differs from both."""
    plain = create_backend(BackendConfig(backend="onnxruntime", device="cpu", threads=1,
                                         engine_cache_dir=str(tmp_path)))
    both = create_backend(BackendConfig(backend="onnxruntime", device="cpu", threads=1,
                                        engine_cache_dir=str(tmp_path), flip_average=True))
    assert "flip averaging" in both.describe() and "flip" not in plain.describe()
    for rgb in rgb_frames:
        averaged = both.infer(rgb)
        p = plain.infer(rgb)
        m = plain.infer(np.ascontiguousarray(rgb[:, ::-1]))
        expected = blend_depth(p.fine, m.fine[:, ::-1])
        assert averaged.fine.shape == rgb.shape[:2] and averaged.fine.dtype == np.float32
        # the same up to resampling order (blend then resize vs resize then blend)
        assert np.median(np.abs(averaged.fine / expected - 1)) < 1e-3
        assert np.median(np.abs(averaged.fine / p.fine - 1)) > 0.005  # it did change the depth
        assert np.median(np.abs(averaged.coarse / blend_depth(p.coarse, m.coarse[:, ::-1])
                                - 1)) < 1e-3
        if p.confidence is not None:
            c = averaged.confidence
            assert c.shape == rgb.shape[:2] and 0.0 <= c.min() and c.max() <= 1.0
            assert np.median(np.abs(c - blend_linear(p.confidence, m.confidence[:, ::-1]))) < 1e-3


def test_the_option_is_typed_like_the_other_backend_settings():
    assert from_dict(BackendConfig, {"flip_average": True}).flip_average is True
    with pytest.raises(ConfigError):
        from_dict(BackendConfig, {"flip_average": "sometimes"})


def test_benchmark_runs_the_flip_variant(tmp_path):
    """``--backends onnxruntime-cpu+flip``: the shipped ONNX model with flip averaging on (a real
    run of two frames; the table counts its two passes' GFLOP)."""
    from mono_depth_ros.backends.factory import resolve_onnx
    from mono_depth_ros.benchmark import run_one

    onnx = str(resolve_onnx(BackendConfig()))
    res = run_one("onnxruntime-cpu+flip", onnx, "", (192, 640), iters=2, warmup=1, threads=1,
                  cache_dir=str(tmp_path))
    assert "flip averaging" in res["describe"] and res["p50_ms"] > 0
    assert set(res["stages"]) >= {"inference", "postprocess"}
