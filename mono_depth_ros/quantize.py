"""Build the INT8 onnxruntime model into the cache ahead of time (``precision: int8``).

    python -m mono_depth_ros.quantize [--onnx models/default/model.onnx] \
        [--calibration ../shared/kitti/index.tsv] [--cache-dir DIR] [--out FILE]

The backend (``precision: int8``, backend onnxruntime) finds the file when it is given the same
ONNX model, calibration source and cache folder; without this step it builds it on first use.
``--out`` writes a standalone copy as well (metadata says how it was made).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mono_depth_ros.quantize",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default="", help="ONNX model, as written by python -m "
                    "training.export (default: the model the backend factory resolves for the "
                    "shipped checkpoint)")
    ap.add_argument("--calibration", default="", help="calibration frames: index.tsv, image "
                    "folder, or empty for the KITTI sample frames (as the backend's parameter)")
    ap.add_argument("--cache-dir", default="", help="cache root, as engine_cache_dir (default: "
                    "$MONO_DEPTH_ENGINE_CACHE or ~/.cache/mono_depth_ros/engines)")
    ap.add_argument("--out", default="", help="also copy the INT8 model to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from .backends.factory import cache_root, resolve_onnx
    from .calibration import CalibrationError
    from .config import BackendConfig
    from .model_io import ModelLoadError
    from .backends.ort_quant import int8_model

    try:
        cfg = BackendConfig(backend="onnxruntime", onnx=args.onnx,
                            engine_cache_dir=args.cache_dir, calibration=args.calibration)
        onnx_path = resolve_onnx(cfg)
        path, built = int8_model(onnx_path, cache_root(cfg), args.calibration)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, args.out)
    except (CalibrationError, ModelLoadError, OSError, ValueError, RuntimeError) as exc:
        print(f"quantize: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"int8 model {path} ({'built now' if built else 'already cached'}) from {onnx_path}"
          + (f"; copied to {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
