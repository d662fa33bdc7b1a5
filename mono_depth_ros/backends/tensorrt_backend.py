"""TensorRT 10 backend: engine from the cache, ``set_tensor_address`` + ``execute_async_v3``.

TensorRT and CUDA are imported lazily; GPU buffers and the stream come from torch.cuda. Engines
are loaded only from the engine cache (see ``engine_cache``) and built there on a miss when
``allow_build`` is set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..model_io import ModelLoadError
from ..onnx_export import (CONFIDENCE_NAME, INPUT_NAME, OUTPUT_NAMES, onnx_model_config,
                           sha256_file)
from .base import BackendUnavailable, DepthBackend
from .engine_cache import EngineCache, EngineKey
from .trt_build import build_engine_bytes, engine_key, import_tensorrt, int8_table_path

log = logging.getLogger("mono_depth_ros.backends")


def _int8_key(onnx_sha256: str, source: str, cache: EngineCache) -> tuple[EngineKey, list[Path]]:
    """(key, frames) of the INT8 engine calibrated on ``source`` (the selection
    ``calibration.calibration_frames`` makes for onnxruntime int8 too). Without those frames on
    this machine (a vehicle given a prebuilt engine) the one cached INT8 engine of this model, GPU
    and TensorRT is used; with none or several the error says how to build one."""
    from ..calibration import CalibrationError, calibration_frames, calibration_id

    try:
        frames = calibration_frames(source)
        return engine_key(onnx_sha256, "int8", calibration_id(frames)), frames
    except (CalibrationError, FileNotFoundError) as exc:
        missing = exc
    here = engine_key(onnx_sha256, "fp32")  # only its model, TensorRT and GPU fields are used
    cached = [e for e in cache.entries() if e.get("precision") == "int8" and all(
        e.get(f) == getattr(here, f) for f in ("onnx_sha256", "trt_version", "gpu_name"))]
    if len(cached) != 1:
        raise BackendUnavailable(f"int8 engine needs its calibration frames ({missing}); build it "
                                 "offline with 'python -m training.build_engine --precision int8 "
                                 "--calib-images DIR'")
    log.warning("int8 calibration frames unavailable; using the cached engine calibrated on set %s",
                cached[0].get("calibration"))
    return EngineKey(**cached[0]), []


class TensorRTBackend(DepthBackend):
    """Runs a serialized TensorRT engine built from the exported ONNX file."""

    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, cache_dir: str | Path | None = None,
                 precision: str = "fp16", allow_build: bool = True, calibration: str = ""):
        trt = import_tensorrt()
        import torch

        path = Path(onnx_path)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model not found: {path}")
        cfg, self.metadata = onnx_model_config(path)
        super().__init__(cfg)
        cache = EngineCache(cache_dir)
        sha = sha256_file(path)
        if precision == "int8":  # the engine depends on its calibration frames too
            key, frames = _int8_key(sha, calibration, cache)
        else:
            key, frames = engine_key(sha, precision), []  # raises BackendUnavailable without a GPU

        def build() -> bytes:
            from ..calibration import calibration_images

            if precision == "int8" and not frames:
                raise BackendUnavailable(f"the cached int8 engine {cache.path_for(key)} is "
                                         "unusable and there are no calibration frames to rebuild "
                                         "it; give a calibration source")
            log.info("building TensorRT %s engine for %s (minutes on first run)", precision, path)
            return build_engine_bytes(path, precision,
                                      calibration_images(frames) if frames else None,
                                      int8_table_path(cache, key))

        data, built = cache.get_or_build(key, build, allow_build)
        self.engine_path = cache.path_for(key)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ModelLoadError(f"{self.engine_path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, torch.Tensor] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(
                self.engine.get_tensor_dtype(name)))).dtype
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, int(self.buffers[name].data_ptr()))
        missing = {INPUT_NAME, *OUTPUT_NAMES} - set(self.buffers)
        if missing:
            raise ModelLoadError(f"{self.engine_path}: engine lacks tensors {sorted(missing)}")
        if self.has_confidence and CONFIDENCE_NAME not in self.buffers:
            raise ModelLoadError(f"{self.engine_path}: engine lacks tensor '{CONFIDENCE_NAME}' "
                                 "that the ONNX model has")
        # depth, coarse_depth (+ confidence for models with the head)
        self.output_names = OUTPUT_NAMES + ((CONFIDENCE_NAME,) if self.has_confidence else ())
        self.precision = precision
        log.info("TensorRT engine %s (%s)", self.engine_path, "built now" if built else "cached")

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        import torch

        with torch.cuda.stream(self.stream):
            self.buffers[INPUT_NAME].copy_(torch.from_numpy(x), non_blocking=False)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        out = [self.buffers[n].float().cpu().numpy() for n in self.output_names]
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def _describe(self) -> str:
        return f"tensorrt ({self.precision}, {self.engine_path.name})"
