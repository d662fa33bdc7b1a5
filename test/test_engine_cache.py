"""Engine cache keys and files (pure Python), plus the TensorRT build path against a mock.

TensorRT cannot be installed on these machines, so the build tests use a recording mock of the
``tensorrt`` module (test names say ``mock``); the real build is covered in test_backends on
machines where TensorRT exists.
"""

from __future__ import annotations

import hashlib
import os
import sys
import types

import pytest

from mono_depth_ros.backends import trt_build
from mono_depth_ros.backends.engine_cache import (EngineCache, EngineCacheError, EngineKey,
                                                  default_cache_dir)

SHA = hashlib.sha256(b"model").hexdigest()
KEY = EngineKey(SHA, "10.3.0", "NVIDIA GeForce RTX 4090", "fp16")


def test_filename_depends_on_every_key_field():
    variants = [KEY, EngineKey(hashlib.sha256(b"other").hexdigest(), "10.3.0",
                               KEY.gpu_name, "fp16"),
                EngineKey(SHA, "10.4.0", KEY.gpu_name, "fp16"),
                EngineKey(SHA, "10.3.0", "NVIDIA Jetson AGX Orin", "fp16"),
                EngineKey(SHA, "10.3.0", KEY.gpu_name, "int8", "0123456789abcdef"),
                EngineKey(SHA, "10.3.0", KEY.gpu_name, "int8", "fedcba9876543210")]
    names = [k.filename() for k in variants]
    assert len(set(names)) == len(names)
    assert all("/" not in n and " " not in n and n.endswith(".engine") for n in names)
    assert KEY.filename().startswith(SHA[:16] + "_fp16_trt10.3.0_nvidia-geforce-rtx-4090")


def test_gpu_names_that_slug_alike_stay_apart():
    a = EngineKey(SHA, "10.3.0", "GPU A/B", "fp16").filename()
    b = EngineKey(SHA, "10.3.0", "GPU A B", "fp16").filename()
    assert a != b


@pytest.mark.parametrize("kwargs", [dict(onnx_sha256="abc"), dict(precision="fp8"),
                                    dict(trt_version=""), dict(gpu_name=""),
                                    dict(precision="int8"),  # int8 without its calibration set
                                    dict(calibration="0123456789abcdef"),  # fp16 with one
                                    dict(precision="int8", calibration="../x")])
def test_bad_keys_are_rejected(kwargs):
    fields = dict(onnx_sha256=SHA, trt_version="10.3.0", gpu_name="x", precision="fp16")
    fields.update(kwargs)
    with pytest.raises(ValueError):
        EngineKey(**fields)


def test_int8_engines_of_two_calibration_sets_stay_apart(tmp_path):
    """An INT8 engine's ranges come from its calibration frames: another set is another engine;
    fp16/fp32 keys are written as before the calibration field existed (old caches still hit)."""
    cache = EngineCache(tmp_path)
    a = EngineKey(SHA, "10.3.0", "GPU", "int8", "0123456789abcdef")
    b = EngineKey(SHA, "10.3.0", "GPU", "int8", "fedcba9876543210")
    cache.store(a, b"calibrated on a")
    assert cache.lookup(b) is None and cache.lookup(a) == b"calibrated on a"
    assert "_int8_cal01234567_" in a.filename()
    assert "calibration" not in KEY.as_dict() and a.as_dict()["calibration"] == a.calibration
    assert EngineKey(**cache.entries()[0]) == a


def test_store_then_lookup_round_trips_atomically(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, b"engine-bytes")
    assert path.parent == tmp_path and cache.lookup(KEY) == b"engine-bytes"
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".engine", ".json"]
    assert cache.entries() == [dict(onnx_sha256=SHA, trt_version="10.3.0",
                                    gpu_name=KEY.gpu_name, precision="fp16")]


def test_other_key_misses_and_rebuilds(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"fp16 engine")
    other = EngineKey(SHA, "10.4.0", KEY.gpu_name, "fp16")  # TensorRT upgraded
    assert cache.lookup(other) is None
    calls = []
    data, built = cache.get_or_build(other, lambda: calls.append(1) or b"new", allow_build=True)
    assert (data, built, calls) == (b"new", True, [1])
    data, built = cache.get_or_build(other, lambda: pytest.fail("must not rebuild"), True)
    assert (data, built) == (b"new", False)


def test_miss_without_build_permission_is_one_clear_line(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"x")
    other = EngineKey(SHA, "10.3.0", "NVIDIA A100", "fp16")
    with pytest.raises(EngineCacheError) as exc:
        cache.get_or_build(other, lambda: b"y", allow_build=False)
    msg = str(exc.value)
    assert "\n" not in msg and "allow_engine_build" in msg and "NVIDIA A100" in msg
    assert "1 engine(s) for other keys" in msg


def test_sidecar_key_mismatch_and_corruption_are_misses(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, b"good engine")
    path.write_bytes(b"good eng")  # truncated
    assert cache.lookup(KEY) is None
    cache.store(KEY, b"good engine")
    side = path.with_suffix(".json")
    side.write_text(side.read_text().replace("10.3.0", "10.2.0"))  # renamed from another key
    assert cache.lookup(KEY) is None


def test_engines_load_only_from_the_cache_folder(tmp_path):
    outside = EngineCache(tmp_path / "elsewhere")
    src = outside.store(KEY, b"engine")
    cache = EngineCache(tmp_path / "cache")
    cache.dir.mkdir()
    os.symlink(src, cache.path_for(KEY))
    os.symlink(src.with_suffix(".json"), cache.path_for(KEY).with_suffix(".json"))
    assert cache.lookup(KEY) is None


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MONO_DEPTH_ENGINE_CACHE", str(tmp_path / "e"))
    assert default_cache_dir() == tmp_path / "e"
    monkeypatch.delenv("MONO_DEPTH_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "mono_depth_ros" / "engines"


# ---------------------------------------------------------------------------------------------
# TensorRT build path against a recording mock (TensorRT cannot exist here)
# ---------------------------------------------------------------------------------------------

def _mock_tensorrt(calls: list, parse_ok: bool = True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.26"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            calls.append(("Logger", level))

    class Network:
        def get_input(self, i):
            return types.SimpleNamespace(shape=(1, 3, 192, 640))

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            calls.append(("OnnxParser",))

        def parse(self, data):
            calls.append(("parse", len(data)))
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Resize): unsupported mode"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return b"serialized-engine"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    return trt


@pytest.fixture
def mock_trt(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", _mock_tensorrt(calls))
    monkeypatch.setattr(trt_build, "cuda_device_name", lambda: "Mock GPU 9000")
    return calls


def test_mock_tensorrt_fp16_build_follows_trt10_api(mock_trt, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx-bytes")
    data = trt_build.build_engine_bytes(onnx_file, "fp16", workspace_bytes=1 << 28)
    assert data == b"serialized-engine"
    names = [c[0] for c in mock_trt]
    assert names.index("Builder") < names.index("create_network") < names.index("parse") \
        < names.index("build_serialized_network")
    assert ("create_network", 0) in mock_trt  # TRT 10: explicit batch is implicit, flags 0
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 28) in mock_trt
    assert ("set_flag", "FP16") in mock_trt and ("set_flag", "INT8") not in mock_trt


def test_mock_tensorrt_fp32_sets_no_precision_flags(mock_trt, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    trt_build.build_engine_bytes(onnx_file, "fp32")
    assert not [c for c in mock_trt if c[0] == "set_flag"]


def test_mock_tensorrt_parse_error_is_reported(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", _mock_tensorrt([], parse_ok=False))
    monkeypatch.setattr(trt_build, "cuda_device_name", lambda: "Mock GPU")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(RuntimeError, match="cannot parse.*Resize"):
        trt_build.build_engine_bytes(onnx_file, "fp16")


def test_mock_tensorrt_build_engine_cli_caches_by_key(mock_trt, tmp_path, capsys):
    from training import build_engine

    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx-bytes")
    cache = tmp_path / "cache"
    assert build_engine.main(["--onnx", str(onnx_file), "--precision", "fp16",
                              "--cache-dir", str(cache)]) == 0
    key = EngineKey(hashlib.sha256(b"onnx-bytes").hexdigest(), "10.3.0.26", "Mock GPU 9000",
                    "fp16")
    assert EngineCache(cache).lookup(key) == b"serialized-engine"
    builds = sum(c[0] == "build_serialized_network" for c in mock_trt)
    assert build_engine.main(["--onnx", str(onnx_file), "--precision", "fp16",
                              "--cache-dir", str(cache)]) == 0
    assert sum(c[0] == "build_serialized_network" for c in mock_trt) == builds  # cache hit
    assert str(cache) in capsys.readouterr().out


def test_mock_tensorrt_build_engine_cli_int8_keys_engine_and_table_by_calibration_set(
        mock_trt, monkeypatch, tmp_path, capsys):
    """build_engine int8 selects frames as the run time does (calibration.calibration_frames),
    and two frame sets give two engines and two calibration tables; the same set hits the cache.
    TensorRT's builder is a mock here (no GPU): the recorded call stands for the build."""
    import shutil

    from mono_depth_ros.calibration import calibration_frames, calibration_id
    from mono_depth_ros.sample_frames import all_frames
    from training import build_engine

    builds = []
    monkeypatch.setattr(trt_build, "build_engine_bytes",
                        lambda onnx, precision, images, table, ws=0: builds.append(
                            (precision, len(images), table)) or b"int8-engine")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx-bytes")
    frames = [f.image for f in all_frames()]
    sets = {}
    for name, chosen in (("a", frames[:2]), ("b", frames[2:3])):
        folder = tmp_path / name
        folder.mkdir()
        for f in chosen:
            shutil.copy(f, folder / f.name)
        sets[name] = folder
    cache = tmp_path / "cache"
    run = ["--onnx", str(onnx_file), "--precision", "int8", "--cache-dir", str(cache)]
    assert build_engine.main(run + ["--calib-images", str(sets["a"])]) == 0
    assert build_engine.main(run + ["--calib-images", str(sets["b"])]) == 0
    assert build_engine.main(run + ["--calib-images", str(sets["a"])]) == 0  # cache hit
    assert [(p, n) for p, n, _ in builds] == [("int8", 2), ("int8", 1)]
    assert builds[0][2] != builds[1][2] and all(t.parent == cache for _, _, t in builds)
    ids = {e["calibration"] for e in EngineCache(cache).entries()}
    assert ids == {calibration_id(calibration_frames(str(sets[n]))) for n in "ab"}
    assert "calibrated on 2 frames" in capsys.readouterr().out


def test_calibration_batches_use_runtime_preprocessing():
    import numpy as np

    from mono_depth_ros.kitti import read_rgb
    from mono_depth_ros.preprocess import to_network_input
    from mono_depth_ros.sample_frames import all_frames

    rgb = read_rgb(all_frames()[0].image)
    (batch,) = trt_build.calibration_batches([rgb], 192, 640)
    assert batch.shape == (1, 3, 192, 640) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, to_network_input(rgb, 192, 640))
    with pytest.raises(ValueError):
        trt_build.calibration_batches([], 192, 640)


def test_build_engine_cli_without_tensorrt_fails_in_one_line(tmp_path):
    import subprocess
    from pathlib import Path

    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; this checks the message when it is absent")
    except ImportError:
        pass
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    r = subprocess.run([sys.executable, "-m", "training.build_engine", "--onnx", str(onnx_file),
                        "--precision", "fp16"], cwd=Path(__file__).resolve().parent.parent,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "TensorRT" in r.stderr


def test_mock_tensorrt_int8_key_at_run_time_follows_the_calibration_frames(mock_trt, tmp_path):
    """The TensorRT backend keys its int8 engine on the calibration set it would build with; a
    vehicle without those frames uses the one cached int8 engine of this model, else one line.
    TensorRT is a mock here (no GPU)."""
    from mono_depth_ros.backends.base import BackendUnavailable
    from mono_depth_ros.backends.tensorrt_backend import _int8_key
    from mono_depth_ros.calibration import calibration_frames, calibration_id

    cache = EngineCache(tmp_path / "cache")
    key, frames = _int8_key(SHA, "", cache)  # the KITTI sample frames
    assert frames == calibration_frames("") and key.calibration == calibration_id(frames)
    assert (key.precision, key.gpu_name) == ("int8", "Mock GPU 9000")
    gone = str(tmp_path / "frames_not_on_this_vehicle")
    with pytest.raises(BackendUnavailable, match="calibration frames"):
        _int8_key(SHA, gone, cache)
    cache.store(key, b"prebuilt int8")
    assert _int8_key(SHA, gone, cache) == (key, [])
    cache.store(EngineKey(SHA, key.trt_version, key.gpu_name, "int8", "0" * 16), b"another")
    with pytest.raises(BackendUnavailable):  # two candidates: no guessing
        _int8_key(SHA, gone, cache)
