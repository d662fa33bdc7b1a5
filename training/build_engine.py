"""Build a TensorRT 10 engine into the engine cache: ``python -m training.build_engine``.

The engine is stored under the cache key (ONNX sha256, TensorRT version, GPU name, precision), so
the TensorRT backend finds it with ``engine_cache_dir`` set to the same folder. INT8 calibrates on
real KITTI frames preprocessed by the runtime code: ``--calib-images`` (an index.tsv or a folder,
default: data/kitti_sample) selected by ``calibration.calibration_frames``, the same selection the
run-time build and ONNX Runtime's int8 make; the calibration set's id is part of the cache key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True, help="ONNX model from training.export")
    ap.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    ap.add_argument("--calib-images", default="",
                    help="int8 calibration source: an index.tsv or a folder of frames (default: "
                    "the KITTI sample frames); Eigen test drives are never used")
    ap.add_argument("--calib-limit", type=int, default=None,
                    help="at most this many frames, spread over drives (default: the run time's "
                    "selection, so that the node finds this engine)")
    ap.add_argument("--cache-dir", default="", help="engine cache folder (default: "
                    "$MONO_DEPTH_ENGINE_CACHE or ~/.cache/mono_depth_ros/engines)")
    ap.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace pool, MiB")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache has the engine")
    args = ap.parse_args(argv)

    from mono_depth_ros.backends.base import BackendUnavailable
    from mono_depth_ros.backends.engine_cache import EngineCache, EngineCacheError
    from mono_depth_ros.backends.trt_build import build_engine_bytes, engine_key, int8_table_path
    from mono_depth_ros.calibration import (DEFAULT_LIMIT, calibration_frames, calibration_id,
                                            calibration_images)
    from mono_depth_ros.onnx_export import sha256_file

    try:
        onnx_path = Path(args.onnx)
        if not onnx_path.is_file():
            raise ValueError(f"ONNX model not found: {onnx_path}")
        frames, cal_id = [], ""
        if args.precision == "int8":
            limit = DEFAULT_LIMIT if args.calib_limit is None else args.calib_limit
            frames = calibration_frames(args.calib_images, limit)
            cal_id = calibration_id(frames)
        # raises if no TensorRT / GPU
        key = engine_key(sha256_file(onnx_path), args.precision, cal_id)
        cache = EngineCache(args.cache_dir or None)

        def build() -> bytes:
            images = calibration_images(frames) if frames else None
            return build_engine_bytes(onnx_path, args.precision, images,
                                      int8_table_path(cache, key), args.workspace_mb << 20)

        if args.force:
            path = cache.store(key, build())
        else:
            cache.get_or_build(key, build, allow_build=True)
            path = cache.path_for(key)
        cal = f", calibrated on {len(frames)} frames, set {cal_id}" if frames else ""
        print(f"engine {path} ({args.precision}, TensorRT {key.trt_version}, {key.gpu_name}{cal})")
        return 0
    except (BackendUnavailable, EngineCacheError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
