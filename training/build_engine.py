"""Build a TensorRT 10 engine into the engine cache: ``python -m training.build_engine``.

The engine is stored under the cache key (ONNX sha256, TensorRT version, GPU name, precision), so
the TensorRT backend finds it with ``engine_cache_dir`` set to the same folder. INT8 calibrates on
real KITTI frames (``--calib-images``, default: data/kitti_sample) preprocessed by the runtime code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _load_images(folder: Path | None, limit: int):
    from mono_depth_ros.kitti import read_rgb
    from mono_depth_ros.sample_frames import all_frames

    if folder is None:
        paths = [f.image for f in all_frames()]
    else:
        if not folder.is_dir():
            raise ValueError(f"--calib-images {folder} is not a folder")
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"--calib-images {folder} holds no .png/.jpg images")
    return [read_rgb(p) for p in paths[:limit]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True, help="ONNX model from training.export")
    ap.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    ap.add_argument("--calib-images", type=Path, default=None,
                    help="folder of calibration frames for int8 (default: KITTI sample frames)")
    ap.add_argument("--calib-limit", type=int, default=500, help="at most this many frames")
    ap.add_argument("--cache-dir", default="", help="engine cache folder (default: "
                    "$MONO_DEPTH_ENGINE_CACHE or ~/.cache/mono_depth_ros/engines)")
    ap.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace pool, MiB")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache has the engine")
    args = ap.parse_args(argv)

    from mono_depth_ros.backends.base import BackendUnavailable
    from mono_depth_ros.backends.engine_cache import EngineCache, EngineCacheError
    from mono_depth_ros.backends.trt_build import build_engine_bytes, engine_key
    from mono_depth_ros.onnx_export import sha256_file

    try:
        onnx_path = Path(args.onnx)
        if not onnx_path.is_file():
            raise ValueError(f"ONNX model not found: {onnx_path}")
        key = engine_key(sha256_file(onnx_path), args.precision)  # raises if no TensorRT / GPU
        cache = EngineCache(args.cache_dir or None)
        images = _load_images(args.calib_images, args.calib_limit) if args.precision == "int8" \
            else None
        calib_cache = cache.dir / f"{key.onnx_sha256[:16]}_int8.calib"

        def build() -> bytes:
            return build_engine_bytes(onnx_path, args.precision, images, calib_cache,
                                      args.workspace_mb << 20)

        if args.force:
            path = cache.store(key, build())
        else:
            cache.get_or_build(key, build, allow_build=True)
            path = cache.path_for(key)
        print(f"engine {path} ({args.precision}, TensorRT {key.trt_version}, {key.gpu_name})")
        return 0
    except (BackendUnavailable, EngineCacheError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
