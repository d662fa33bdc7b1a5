"""``create_backend(BackendConfig)``: build the requested backend, or the best one available.

``auto`` tries, in order, and logs (logger ``mono_depth_ros.backends``) which one it took and why:

1. tensorrt          fused kernels, fp16/int8: fastest on NVIDIA GPUs;
2. onnxruntime-cuda  the same ONNX graph on cuDNN, no TensorRT needed;
3. torch-cuda        PyTorch eager on the GPU;
4. onnxruntime-cpu   about 2x faster than torch eager on CPU here (graph fusion, better threading);
5. torch-cpu         always there with the checkpoint; the reference implementation.

ONNX file resolution (onnxruntime, tensorrt): ``cfg.onnx`` if given (must exist); otherwise the
shipped ``model.onnx`` if its ``checkpoint_sha256`` metadata matches the checkpoint in use;
otherwise the checkpoint is exported once into ``<cache>/onnx/<checkpoint sha>_r<export
revision>.onnx`` and reused.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import BackendConfig
from ..model_io import default_model_path, default_onnx_path
from .base import BackendUnavailable, DepthBackend
from .engine_cache import default_cache_dir

log = logging.getLogger("mono_depth_ros.backends")

AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu", "torch-cpu")
_WHY = {
    "tensorrt": "TensorRT and a CUDA GPU are present (fastest: fused fp16/int8 kernels)",
    "onnxruntime-cuda": "onnxruntime has a GPU execution provider",
    "torch-cuda": "torch sees a CUDA GPU",
    "onnxruntime-cpu": "no GPU path; onnxruntime runs the graph ~2x faster than torch eager on CPU",
    "torch-cpu": "only PyTorch is usable",
}


def cache_root(cfg: BackendConfig) -> Path:
    """Folder for engines (and exported ONNX files when none is shipped)."""
    return Path(cfg.engine_cache_dir) if cfg.engine_cache_dir else default_cache_dir()


def resolve_onnx(cfg: BackendConfig) -> Path:
    """The ONNX file to run for ``cfg`` (exporting the checkpoint once if none matches it)."""
    from ..model_io import ModelLoadError
    from ..onnx_export import EXPORT_REVISION, export_checkpoint, read_metadata, sha256_file

    if cfg.onnx:
        path = Path(cfg.onnx)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model not found: {path}")
        return path
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else default_model_path()
    if not ckpt.is_file():
        raise ModelLoadError(f"model file not found: {ckpt}")
    sha = sha256_file(ckpt)
    shipped = default_onnx_path()
    if not cfg.checkpoint and shipped.is_file():
        if read_metadata(shipped).get("checkpoint_sha256") == sha:
            return shipped
        log.warning("%s was exported from another checkpoint than %s; using a fresh export",
                    shipped, ckpt)
    cached = cache_root(cfg) / "onnx" / f"{sha[:16]}_r{EXPORT_REVISION}.onnx"
    if not cached.is_file():
        log.info("exporting %s to %s (one time)", ckpt, cached)
        export_checkpoint(ckpt, cached)
    return cached


def _int8_onnx(onnx_path: Path, cfg: BackendConfig) -> Path:
    """The statically quantised copy of ``onnx_path`` (``ort_quant``), built on a cache miss."""
    from ..calibration import CalibrationError
    from ..model_io import ModelLoadError
    from .engine_cache import EngineCacheError
    from .ort_quant import int8_model

    try:
        path, built = int8_model(onnx_path, cache_root(cfg), cfg.calibration,
                                 cfg.allow_engine_build)
    except (CalibrationError, EngineCacheError) as exc:
        raise ModelLoadError(f"int8: {exc}") from None
    log.info("onnxruntime int8 model %s (%s)", path, "built now" if built else "cached")
    return path


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _build(kind: str, cfg: BackendConfig) -> DepthBackend:
    """Construct one concrete backend; raises BackendUnavailable when it cannot run here."""
    if kind == "tensorrt":
        from .trt_build import cuda_device_name, import_tensorrt

        import_tensorrt()
        cuda_device_name()
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(resolve_onnx(cfg), cache_root(cfg), cfg.precision,
                               cfg.allow_engine_build, cfg.calibration)
    if kind.startswith("onnxruntime"):
        from .onnxruntime_backend import GPU_PROVIDERS, OnnxRuntimeBackend, available_providers

        provs = available_providers()
        if not provs:
            raise BackendUnavailable("onnxruntime is not installed")
        if kind == "onnxruntime-cuda" and not set(GPU_PROVIDERS) & set(provs):
            raise BackendUnavailable(f"onnxruntime has no GPU provider (only {', '.join(provs)})")
        device = {"onnxruntime-cuda": "cuda", "onnxruntime-cpu": "cpu"}.get(kind, cfg.device)
        path = resolve_onnx(cfg)
        if cfg.precision == "int8":
            path = _int8_onnx(path, cfg)
        return OnnxRuntimeBackend(path, device, cfg.threads, cfg.ort_spinning)
    if kind.startswith("torch"):
        if kind == "torch-cuda" and not _torch_cuda():
            raise BackendUnavailable("torch sees no CUDA GPU")
        from .torch_backend import TorchBackend

        device = {"torch-cuda": "cuda", "torch-cpu": "cpu"}.get(kind, cfg.device)
        if device == "auto":
            device = "cuda" if _torch_cuda() else "cpu"
        return TorchBackend(cfg.checkpoint or None, device, cfg.threads)
    raise BackendUnavailable(f"unknown backend {kind!r}")


def auto_candidates(device: str) -> list[str]:
    """AUTO_ORDER restricted to the requested device (cpu -> CPU paths, cuda -> GPU paths)."""
    if device == "cpu":
        return [k for k in AUTO_ORDER if k.endswith("-cpu")]
    if device.startswith("cuda"):
        return [k for k in AUTO_ORDER if not k.endswith("-cpu")]
    return list(AUTO_ORDER)


def create_backend(cfg: BackendConfig) -> DepthBackend:
    """The backend ``cfg`` asks for; ``auto`` takes the first of AUTO_ORDER that starts."""
    backend = _create(cfg)
    backend.flip_average = cfg.flip_average
    return backend


def _create(cfg: BackendConfig) -> DepthBackend:
    cfg.validate()
    if cfg.backend != "auto":
        if cfg.backend == "tensorrt" and cfg.device == "cpu":
            raise BackendUnavailable("tensorrt needs a CUDA device, but device is 'cpu'")
        backend = _build(cfg.backend, cfg)
        log.info("backend %s (requested explicitly)", backend.describe())
        return backend
    skipped = []
    for kind in auto_candidates(cfg.device):
        try:
            backend = _build(kind, cfg)
        except BackendUnavailable as exc:
            skipped.append(f"{kind}: {exc}")
            log.debug("auto backend: skip %s: %s", kind, exc)
            continue
        log.info("backend %s chosen automatically: %s%s", backend.describe(), _WHY[kind],
                 f" (skipped: {'; '.join(skipped)})" if skipped else "")
        return backend
    raise BackendUnavailable("no backend can run here: " + "; ".join(skipped))


def add_backend_arguments(ap) -> None:
    """The model flags of the evaluation tools (scale_eval, camera_eval): --backend,
    --checkpoint, --onnx, --device, --threads, --flip-average."""
    ap.add_argument("--backend", default="auto",
                    choices=("auto", "tensorrt", "onnxruntime", "torch"))
    ap.add_argument("--checkpoint", default="", help="checkpoint (default: the shipped model)")
    ap.add_argument("--onnx", default="", help="ONNX model (onnxruntime / tensorrt)")
    ap.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N]")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")
    add_flip_average_argument(ap)


def add_flip_average_argument(ap) -> None:
    """``--flip-average`` (``BackendConfig.flip_average``), for every tool that has a backend."""
    ap.add_argument("--flip-average", action="store_true",
                    help=BackendConfig.__dataclass_fields__["flip_average"].metadata["help"])


def backend_from_arguments(args) -> DepthBackend:
    """The backend those flags ask for (an ONNX file alone means onnxruntime)."""
    return create_backend(BackendConfig(
        backend="onnxruntime" if args.onnx and args.backend == "auto" else args.backend,
        checkpoint=args.checkpoint, onnx=args.onnx, device=args.device, threads=args.threads,
        flip_average=args.flip_average))
