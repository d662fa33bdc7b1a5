"""Export a checkpoint to ONNX for onnxruntime / TensorRT: ``python -m training.export``.

Writes ``DIR/model.onnx`` (or the ``.onnx`` path given) atomically, checks it with onnx.checker
and, unless ``--no-verify``, compares it against PyTorch on the KITTI sample frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PARITY_LIMIT = 1e-4  # max |log depth| difference ONNX Runtime vs PyTorch accepted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="", help="checkpoint .pt (default: shipped model)")
    ap.add_argument("--out", required=True, help="output folder (writes model.onnx) or .onnx path")
    ap.add_argument("--height", type=int, default=0, help="input height (default: checkpoint's)")
    ap.add_argument("--width", type=int, default=0, help="input width (default: checkpoint's)")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the ONNX Runtime vs PyTorch check on the KITTI sample frames")
    args = ap.parse_args(argv)

    from mono_depth_ros.model_io import ModelLoadError
    from mono_depth_ros.onnx_export import ExportError, export_checkpoint, parity_log_diff

    out = Path(args.out)
    if out.suffix != ".onnx":
        out = out / "model.onnx"
    try:
        path = export_checkpoint(args.checkpoint or None, out, args.height or None,
                                 args.width or None)
        msg = f"wrote {path}"
        if not args.no_verify:
            from mono_depth_ros.kitti import read_rgb
            from mono_depth_ros.sample_frames import all_frames

            try:
                images = [read_rgb(f.image) for f in all_frames()]
            except FileNotFoundError:
                images = []
            if images:
                diff = parity_log_diff(args.checkpoint or None, path, images)
                if diff > PARITY_LIMIT:
                    print(f"error: {path}: ONNX Runtime differs from PyTorch by {diff:.2e} in "
                          f"log depth (limit {PARITY_LIMIT:.0e})", file=sys.stderr)
                    return 1
                msg += (f" (max |log depth| diff vs PyTorch on {len(images)} KITTI frames: "
                        f"{diff:.1e})")
        print(msg)
        return 0
    except (ModelLoadError, ExportError, OSError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
