"""INT8 for ONNX Runtime on CPU: static quantisation (QDQ, per-channel weights) of an exported
model, calibrated on KITTI frames, built once and cached like TensorRT engines.

Key = (ONNX sha256, calibration set id, onnxruntime version, reduced range, recipe revision): a
retrained model, another calibration set, another quantiser or another kind of CPU gives another
file. On x86 CPUs without VNNI, ONNX Runtime's U8S8 kernels add pairs of products in 16 bits,
which saturate (its quantisation guide); there the weights use 7 of their 8 bits
(``reduce_range``). On an AVX2-only AMD EPYC that took the shipped model's change of depth from
7 % to 2.6 % (mean |log|) and ran faster; U8U8 changed it by 1 % but ran 5x slower than fp32.

The calibration frames come from ``calibration.calibration_frames``, the selection the TensorRT
INT8 calibrator uses. ``python -m mono_depth_ros.quantize`` builds one ahead of time;
``precision: int8`` with the onnxruntime backend builds it on first use (about a minute on 2
cores) when the cache has none.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .engine_cache import EngineCache, EngineCacheError

log = logging.getLogger("mono_depth_ros.backends")

QUANT_REVISION = 2  # bump when the recipe below changes (2: reduced range by CPU)
QUANT_SUBDIR = "onnxruntime_int8"


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """True if the x86 CPU has AVX-VNNI or AVX512-VNNI (from /proc/cpuinfo's flags; False when
    they cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def needs_reduced_range(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """True on x86 CPUs without VNNI, where U8S8 saturates: quantise weights to 7 bits."""
    machine = (machine or platform.machine()).lower()
    return machine in ("x86_64", "amd64", "i686", "x86") and not cpu_has_vnni(cpuinfo)


@dataclass(frozen=True)
class QuantKey:
    """Everything a quantised model depends on."""

    onnx_sha256: str
    calibration_id: str
    ort_version: str
    reduce_range: bool = False
    revision: int = QUANT_REVISION

    def as_dict(self) -> dict:
        """The key's fields, as the cache's sidecar stores them."""
        return asdict(self)

    def filename(self) -> str:
        ver = re.sub(r"[^0-9a-z.]+", "-", self.ort_version.lower())
        return (f"{self.onnx_sha256[:16]}_int8_cal{self.calibration_id[:12]}_ort{ver}"
                f"{'_rr' if self.reduce_range else ''}_r{self.revision}.onnx")


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed 1x3xhxw batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # quantize_static may read the data twice (some calibrators)
        pass


def quantize_onnx(onnx_path: str | Path, images: list[np.ndarray], out: str | Path,
                  calibration_id: str = "", reduce_range: bool | None = None) -> Path:
    """Write the INT8 QDQ model of ``onnx_path`` calibrated on ``images`` (uint8 RGB) to ``out``.

    Recipe: ``quant_pre_process`` (shape inference + graph optimisation), then
    ``quantize_static`` with QDQ format, per-channel int8 weights (7-bit with ``reduce_range``;
    None = ``needs_reduced_range()``), uint8 activations and MinMax calibration. The source
    model's metadata is kept, plus a ``quantization`` entry.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..calibration import calibration_batches
    from ..model_io import atomic_write_bytes
    from ..onnx_export import INPUT_NAME, onnx_model_config, sha256_file

    if reduce_range is None:
        reduce_range = needs_reduced_range()
    cfg, meta = onnx_model_config(onnx_path)
    batches = calibration_batches(images, cfg.height, cfg.width)
    with tempfile.TemporaryDirectory(prefix="mono_depth_int8_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        q = Path(tmp) / "int8.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q), _Reader(INPUT_NAME, batches),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(q))
    del proto.metadata_props[:]
    weights = "int8 per-channel" + (" (7-bit range)" if reduce_range else "")
    info = {"format": "QDQ", "weights": weights, "activations": "uint8",
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
    key = QuantKey(sha256_file(onnx_path), calibration_id(frames), ort.__version__,
                   needs_reduced_range())
    cache = EngineCache(Path(cache_root) / QUANT_SUBDIR)
    path = cache.path_for(key)
    if cache.lookup(key) is not None:
        return path, False
    if not allow_build:
        raise EngineCacheError(
            f"no INT8 onnxruntime model for onnx {key.onnx_sha256[:12]} / calibration "
            f"{key.calibration_id} / onnxruntime {key.ort_version}"
            f"{' / reduced range' if key.reduce_range else ''} in {cache.dir}; build it with "
            f"'python -m mono_depth_ros.quantize --onnx {onnx_path}' or set allow_engine_build")
    log.info("quantising %s to INT8 on %d calibration frames (one time; cached in %s)",
             onnx_path, len(frames), cache.dir)
    with tempfile.TemporaryDirectory(prefix="mono_depth_int8_") as tmp:
        built = quantize_onnx(onnx_path, calibration_images(frames), Path(tmp) / "m.onnx",
                              key.calibration_id, key.reduce_range)
        cache.store(key, built.read_bytes())
    log.info("INT8 model %s (%s)", path, json.dumps(asdict(key)))
    return path, True
