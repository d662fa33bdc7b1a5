"""ONNX Runtime backend: TensorRT / CUDA execution providers when present, else CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..model_io import ModelLoadError
from ..onnx_export import CONFIDENCE_NAME, INPUT_NAME, OUTPUT_NAMES, onnx_model_config
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


def session_options(ort, threads: int = 0, spinning: bool = False):
    """CPU session options: full graph optimisation, ``threads`` intra-op threads, one inter-op
    thread, and (unless ``spinning``) no busy-waiting of idle pool threads. Spinning threads burn
    a core between runs; in a node that core is the one DDS and the callback need."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    for pool in ("intra_op", "inter_op"):
        opts.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if spinning else "0")
    return opts


class OnnxRuntimeBackend(DepthBackend):
    """Runs the exported ONNX graph; ``device`` auto|cpu|cuda picks the execution providers."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str = "auto", threads: int = 0,
                 spinning: bool = False):
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
        opts = session_options(ort, threads, spinning)
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
        self.spinning = spinning
        self.precision = "int8" if self.metadata.get("quantization") else "fp32"
        # depth, coarse_depth (+ confidence in files exported with the head)
        names = {o.name for o in self.session.get_outputs()}
        self.output_names = OUTPUT_NAMES + ((CONFIDENCE_NAME,) if CONFIDENCE_NAME in names
                                            else ())
        self._binding = self._bind_outputs() if not self.on_gpu else None

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

    def _bind_outputs(self):
        """IOBinding with outputs written into arrays this backend owns (no per-frame output
        allocation); the input is bound per call to the base class's reused input tensor."""
        binding = self.session.io_binding()
        shapes = {o.name: tuple(o.shape) for o in self.session.get_outputs()}
        self._outputs = {}
        for name in self.output_names:
            shape = shapes.get(name)
            if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
                return None  # dynamic or missing output: fall back to session.run
            self._outputs[name] = np.empty(shape, dtype=np.float32)
            binding.bind_output(name, "cpu", 0, np.float32, list(shape),
                                self._outputs[name].ctypes.data)
        self._bound_input = None
        return binding

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self._binding is None:
            out = self.session.run(list(self.output_names), {INPUT_NAME: x})
            return out[0], out[1], (out[2] if len(out) > 2 else None)
        if self._bound_input is not x:  # the base class passes the same buffer every frame
            x = np.ascontiguousarray(x, dtype=np.float32)
            self._binding.bind_input(INPUT_NAME, "cpu", 0, np.float32, list(x.shape),
                                     x.ctypes.data)
            self._bound_input = x
        self.session.run_with_iobinding(self._binding)
        return (self._outputs[OUTPUT_NAMES[0]], self._outputs[OUTPUT_NAMES[1]],
                self._outputs.get(CONFIDENCE_NAME))

    def _describe(self) -> str:
        q = ", int8" if self.precision == "int8" else ""
        return f"onnxruntime ({self.providers[0]}{q}, {self.path.name})"
