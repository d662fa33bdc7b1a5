"""Build TensorRT 10 engines from the exported ONNX file (TensorRT and CUDA imported lazily).

Written against the TensorRT 10 Python API: ``trt.Builder``, ``create_network(0)`` (networks are
always explicit-batch in TensorRT 10; the EXPLICIT_BATCH flag is deprecated and ignored),
``trt.OnnxParser``, ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``,
``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` with an ``IInt8EntropyCalibrator2`` and
``build_serialized_network``. GPU buffers come from torch.cuda, which is on every GPU machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
import numpy as np

from ..calibration import calibration_batches  # noqa: F401 - shared with onnxruntime int8
from .base import BackendUnavailable
from .engine_cache import EngineCache, EngineKey

log = logging.getLogger("mono_depth_ros.backends")

DEFAULT_WORKSPACE_BYTES = 1 << 30


def import_tensorrt():
    """The ``tensorrt`` module, or BackendUnavailable with one line saying why not."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed ({exc}); install NVIDIA TensorRT 10 "
                                 "for Python, or use backend onnxruntime/torch") from None
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise BackendUnavailable(f"TensorRT {trt.__version__} found; this code needs TensorRT 10")
    return trt


def cuda_device_name() -> str:
    """Name of the current CUDA GPU (the engine cache key), or BackendUnavailable."""
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("TensorRT backend needs torch (for CUDA memory)") from None
    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs a CUDA GPU; torch.cuda.is_available() is False")
    return torch.cuda.get_device_name(torch.cuda.current_device())


def engine_key(onnx_sha256: str, precision: str, calibration: str = "") -> EngineKey:
    """Cache key for this ONNX file on this machine's GPU and TensorRT version (and, for INT8,
    the calibration set id)."""
    trt = import_tensorrt()
    return EngineKey(onnx_sha256, str(trt.__version__), cuda_device_name(), precision,
                     calibration)


def int8_table_path(cache: EngineCache, key: EngineKey) -> Path | None:
    """TensorRT's calibration table for an INT8 key: one per (model, calibration set), beside
    the engines, so that other frames never reuse another set's table."""
    if key.precision != "int8":
        return None
    return cache.dir / f"{key.onnx_sha256[:16]}_int8_cal{key.calibration}.calib"


def _make_calibrator(trt, batches: list[np.ndarray], cache_file: Path | None):
    """An IInt8EntropyCalibrator2 over preprocessed 1x3xhxw float32 batches (KITTI frames)."""
    import torch

    class KittiCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds real frames, preprocessed exactly as at run time, one per batch."""

        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._index = 0
            self._device = torch.empty(batches[0].shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return int(self._batches[0].shape[0])

        def get_batch(self, names, p_str=None):
            if self._index >= len(self._batches):
                return None  # tells TensorRT calibration data is exhausted
            self._device.copy_(torch.from_numpy(self._batches[self._index]))
            torch.cuda.synchronize()
            self._index += 1
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self):
            if cache_file is not None and cache_file.is_file():
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if cache_file is not None:
                from ..model_io import atomic_write_bytes

                atomic_write_bytes(cache_file, bytes(cache))

    return KittiCalibrator()


def build_engine_bytes(onnx_path: str | Path, precision: str,
                       calib_images: list[np.ndarray] | None = None,
                       calib_cache: Path | None = None,
                       workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine at ``precision`` (fp32|fp16|int8)."""
    trt = import_tensorrt()
    cuda_device_name()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else '?'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast fp16; building %s anyway", precision)
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep fp16 for layers left un-quantised
    if precision == "int8":
        shape = tuple(network.get_input(0).shape)  # static 1x3xhxw from the export
        batches = calibration_batches(calib_images or [], int(shape[2]), int(shape[3]))
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, batches, calib_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine from {onnx_path}")
    return bytes(serialized)
