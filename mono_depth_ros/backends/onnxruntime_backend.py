"""ONNX Runtime backend: TensorRT / CUDA execution providers when present, else CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..model_io import ModelLoadError
from ..onnx_export import INPUT_NAME, OUTPUT_NAMES, onnx_model_config
from .base import BackendUnavailable, DepthBackend

log = logging.getLogger("mono_depth_ros.backends")

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers ([] when onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


class OnnxRuntimeBackend(DepthBackend):
    """Runs the exported ONNX graph; ``device`` auto|cpu|cuda picks the execution providers."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str = "auto", threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime)") \
                from None
        path = Path(onnx_path)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model not found: {path}")
        cfg, self.metadata = onnx_model_config(path)
        super().__init__(cfg)
        avail = ort.get_available_providers()
        providers = [] if device == "cpu" else [p for p in GPU_PROVIDERS if p in avail]
        if device.startswith("cuda") and not providers:
            raise BackendUnavailable(f"onnxruntime: CUDA requested but this build offers only "
                                     f"{', '.join(avail)} (install onnxruntime-gpu)")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = self._session(ort, path, opts, providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelLoadError(f"{path}: onnxruntime cannot load it "
                                 f"({str(exc).splitlines()[0][:160]})") from None
        self.providers = self.session.get_providers()
        if device.startswith("cuda") and not set(GPU_PROVIDERS) & set(self.providers):
            raise BackendUnavailable(f"onnxruntime: GPU providers failed to start; got "
                                     f"{self.providers}")
        self.path = path
        self.threads = threads

    @staticmethod
    def _session(ort, path: Path, opts, providers: list[str]):
        """InferenceSession on ``providers`` + CPU; drops the TensorRT provider if it fails to
        start (onnxruntime-gpu lists it even where the TensorRT libraries are missing)."""
        try:
            return ort.InferenceSession(str(path), sess_options=opts,
                                        providers=providers + ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            if "TensorrtExecutionProvider" not in providers:
                raise
            log.warning("onnxruntime TensorRT provider failed (%s); trying without it",
                        str(exc).splitlines()[0][:160])
            rest = [p for p in providers if p != "TensorrtExecutionProvider"]
            return ort.InferenceSession(str(path), sess_options=opts,
                                        providers=rest + ["CPUExecutionProvider"])

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in GPU_PROVIDERS

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fine, coarse = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return fine, coarse

    def describe(self) -> str:
        return f"onnxruntime ({self.providers[0]}, {self.path.name})"
