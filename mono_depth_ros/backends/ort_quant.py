"""INT8 for ONNX Runtime on CPU: static quantisation (QDQ, per-channel weights) of an exported
model, calibrated on KITTI frames, built once and cached like TensorRT engines.

Key = (ONNX sha256, calibration set id, onnxruntime version, recipe revision): a retrained model,
another calibration set or another quantiser gives another file. The calibration frames come
from ``calibration.calibration_frames``, the selection the TensorRT INT8 calibrator uses.
``python -m mono_depth_ros.quantize`` builds one ahead of time; ``precision: int8`` with the
onnxruntime backend builds it on first use (about a minute on 2 cores) when the cache has none.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .engine_cache import EngineCache, EngineCacheError

log = logging.getLogger("mono_depth_ros.backends")

QUANT_REVISION = 1  # bump when the recipe below changes
QUANT_SUBDIR = "onnxruntime_int8"


@dataclass(frozen=True)
class QuantKey:
    """Everything a quantised model depends on."""

    onnx_sha256: str
    calibration_id: str
    ort_version: str
    revision: int = QUANT_REVISION

    def as_dict(self) -> dict:
        """The key's fields, as the cache's sidecar stores them."""
        return asdict(self)

    def filename(self) -> str:
        ver = re.sub(r"[^0-9a-z.]+", "-", self.ort_version.lower())
        return (f"{self.onnx_sha256[:16]}_int8_cal{self.calibration_id[:12]}_ort{ver}"
                f"_r{self.revision}.onnx")


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed 1x3xhxw batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # quantize_static may read the data twice (some calibrators)
        pass


def quantize_onnx(onnx_path: str | Path, images: list[np.ndarray], out: str | Path,
                  calibration_id: str = "") -> Path:
    """Write the INT8 QDQ model of ``onnx_path`` calibrated on ``images`` (uint8 RGB) to ``out``.

    Recipe: ``quant_pre_process`` (shape inference + graph optimisation), then
    ``quantize_static`` with QDQ format, per-channel int8 weights, uint8 activations and MinMax
    calibration. The source model's metadata is kept, plus a ``quantization`` entry.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..calibration import calibration_batches
    from ..model_io import atomic_write_bytes
    from ..onnx_export import INPUT_NAME, onnx_model_config, sha256_file

    cfg, meta = onnx_model_config(onnx_path)
    batches = calibration_batches(images, cfg.height, cfg.width)
    with tempfile.TemporaryDirectory(prefix="mono_depth_int8_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        q = Path(tmp) / "int8.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q), _Reader(INPUT_NAME, batches),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(q))
    del proto.metadata_props[:]
    info = {"format": "QDQ", "weights": "int8 per-channel", "activations": "uint8",
            "calibration": "MinMax", "calibration_frames": len(batches),
            "calibration_id": calibration_id, "source_onnx_sha256": sha256_file(onnx_path),
            "onnxruntime": ort.__version__, "revision": QUANT_REVISION}
    for k, v in {**meta, "quantization": json.dumps(info, sort_keys=True)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    out = Path(out)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


def int8_model(onnx_path: str | Path, cache_root: str | Path, calibration: str = "",
               allow_build: bool = True) -> tuple[Path, bool]:
    """(path of the cached INT8 model for ``onnx_path``, built now?); builds it on a miss when
    ``allow_build``, else raises EngineCacheError naming the key and the command to build it."""
    import onnxruntime as ort

    from ..calibration import calibration_frames, calibration_id, calibration_images
    from ..onnx_export import sha256_file

    frames = calibration_frames(calibration)
    key = QuantKey(sha256_file(onnx_path), calibration_id(frames), ort.__version__)
    cache = EngineCache(Path(cache_root) / QUANT_SUBDIR)
    path = cache.path_for(key)
    if cache.lookup(key) is not None:
        return path, False
    if not allow_build:
        raise EngineCacheError(
            f"no INT8 onnxruntime model for onnx {key.onnx_sha256[:12]} / calibration "
            f"{key.calibration_id} / onnxruntime {key.ort_version} in {cache.dir}; build it with "
            f"'python -m mono_depth_ros.quantize --onnx {onnx_path}' or set allow_engine_build")
    log.info("quantising %s to INT8 on %d calibration frames (one time; cached in %s)",
             onnx_path, len(frames), cache.dir)
    with tempfile.TemporaryDirectory(prefix="mono_depth_int8_") as tmp:
        built = quantize_onnx(onnx_path, calibration_images(frames), Path(tmp) / "m.onnx",
                              key.calibration_id)
        cache.store(key, built.read_bytes())
    log.info("INT8 model %s (%s)", path, json.dumps(asdict(key)))
    return path, True
