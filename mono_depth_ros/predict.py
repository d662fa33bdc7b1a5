"""Depth for image files: ``python -m mono_depth_ros.predict --images PATH... --out DIR``.

Each input image gives one output with the same stem in DIR, at the input's full resolution:
``npy`` (float32 metres), ``png16`` (uint16 metres x 256, the KITTI convention) or ``color``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff"}


class PredictError(RuntimeError):
    """Something the user must fix (bad path, unreadable image, bad model)."""


def collect_images(paths: list[str]) -> list[Path]:
    """Files as given, directories expanded to their images (sorted); nothing found is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise PredictError(f"no such image file or directory: {p}")
    if not out:
        raise PredictError(f"no images found in {' '.join(paths)}")
    stems = [p.stem for p in out]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise PredictError(f"two inputs share the stem {sorted(dup)[0]!r}; outputs would collide")
    return out


def make_backend(name: str, model: str | None, threads: int = 0, flip_average: bool = False):
    """The inference backend chosen by ``--backend`` (``backends.factory``)."""
    from .backends.factory import create_backend
    from .config import BackendConfig, from_dict

    cfg = from_dict(BackendConfig, {"backend": name, "checkpoint": model or "",
                                    "threads": threads, "flip_average": flip_average})
    return create_backend(cfg)


def image_camera(args, rgb: np.ndarray):
    """The images' intrinsics from --fx/--fy/--cx/--cy (principal point: the image centre by
    default); None without --fx (said once: metres then assume the model's own camera)."""
    from .camera import Intrinsics

    h, w = rgb.shape[:2]
    if args.fx is None:
        if not getattr(args, "_said", False):
            args._said = True
            logging.getLogger("mono_depth_predict").info(
                "no --fx: taking the images to show the model's own camera's view (KITTI's "
                "focal length at their width); give --fx for metres on another camera")
        return None
    return Intrinsics(args.fx, args.fy if args.fy is not None else args.fx,
                      args.cx if args.cx is not None else (w - 1) / 2,
                      args.cy if args.cy is not None else (h - 1) / 2, w, h).validate()


def write_confidence(path: Path, conf: np.ndarray | None, fmt: str) -> Path:
    """The confidence beside the depth: float32 .npy, or 0..255 grey .png."""
    from .colorize import write_rgb
    from .model_io import atomic_write_bytes

    if conf is None:
        raise PredictError("--confidence: this model has no confidence head (train one with "
                           "model.confidence: true, as config/train_default.yaml does)")
    if fmt == "npy":
        import io

        buf = io.BytesIO()
        np.save(buf, conf.astype(np.float32))
        atomic_write_bytes(path.with_suffix(".npy"), buf.getvalue())
        return path.with_suffix(".npy")
    grey = np.clip(np.nan_to_num(conf) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    write_rgb(path.with_suffix(".png"), np.repeat(grey[..., None], 3, axis=2))
    return path.with_suffix(".png")


def write_output(path: Path, depth: np.ndarray, fmt: str, color_range=(1.0, 80.0)) -> Path:
    from .colorize import colorize, write_rgb
    from .kitti import write_depth_png
    from .model_io import atomic_write_bytes

    if fmt == "npy":
        import io

        out = path.with_suffix(".npy")
        buf = io.BytesIO()
        np.save(buf, depth.astype(np.float32))
        atomic_write_bytes(out, buf.getvalue())
    elif fmt == "png16":
        out = path.with_suffix(".png")
        write_depth_png(out, depth)
    else:
        out = path.with_suffix(".png")
        write_rgb(out, colorize(depth, *color_range))
    return out


def run(argv: list[str] | None = None) -> int:
    from .backends.factory import add_flip_average_argument

    parser = argparse.ArgumentParser(prog="mono_depth_predict", description=__doc__.split("\n")[0])
    parser.add_argument("--images", nargs="+", required=True, help="image files or directories")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--stage", choices=("fine", "coarse"), default="fine")
    parser.add_argument("--confidence", action="store_true",
                        help="also write the fine depth's confidence (0..1) as STEM_confidence "
                             "(.npy float32 for npy, else an 8-bit grey .png); needs a model "
                             "with the confidence head")
    parser.add_argument("--format", choices=("npy", "png16", "color"), default="npy")
    parser.add_argument("--backend", choices=("auto", "tensorrt", "onnxruntime", "torch"),
                        default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")
    add_flip_average_argument(parser)
    parser.add_argument("--fx", type=float, default=None,
                        help="focal length in pixels of the given images at their own size; the "
                             "images are brought to the model's camera so that metres stay "
                             "metres (default: the images are taken to show the model's own "
                             "camera's view, KITTI's)")
    parser.add_argument("--fy", type=float, default=None, help="focal length y (default: --fx)")
    parser.add_argument("--cx", type=float, default=None,
                        help="principal point x in pixels (default: the image centre)")
    parser.add_argument("--cy", type=float, default=None,
                        help="principal point y in pixels (default: the image centre)")
    args = parser.parse_args(argv)
    if args.fx is None and any(v is not None for v in (args.fy, args.cx, args.cy)):
        parser.error("--fy/--cx/--cy need --fx")

    from tqdm import tqdm

    from .kitti import KittiFormatError, read_rgb
    from .model_io import ModelLoadError
    from .timing import StageTimes, breakdown_markdown

    try:
        images = collect_images(args.images)
        first = read_rgb(images[0])  # a bad image fails before the model is loaded
        if args.fx is not None:
            image_camera(args, first)  # and so do bad intrinsics
        backend = make_backend(args.backend, args.model, args.threads, args.flip_average)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        times = []
        stages = StageTimes()
        for i, path in enumerate(tqdm(images, desc=f"predict ({backend.describe()})", unit="img",
                                      disable=len(images) < 2)):
            t0 = time.perf_counter()
            rgb = first if i == 0 else read_rgb(path)
            t1 = time.perf_counter()
            result = backend.infer(rgb, camera=image_camera(args, rgb))
            depth = result.fine if args.stage == "fine" else result.coarse
            t2 = time.perf_counter()
            write_output(out_dir / path.stem, depth, args.format)
            if args.confidence:
                write_confidence(out_dir / f"{path.stem}_confidence", result.confidence,
                                 args.format)
            t3 = time.perf_counter()
            times.append(t2 - t1)
            if i == 0:
                continue  # warm-up: the first run of a session builds its kernels
            stages.add("decode", t1 - t0)
            stages.update(backend.last_timing)
            stages.add("write", t3 - t2)
    except (PredictError, KittiFormatError, ModelLoadError, OSError) as exc:
        print(f"mono_depth_predict: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. BackendUnavailable, ConfigError: one line
        print(f"mono_depth_predict: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    print(f"wrote {len(images)} {args.format} depth map(s) to {out_dir}; {backend.describe()}: "
          f"median {1000 * float(np.median(times)):.1f} ms per frame (pre-processing, inference, "
          f"resizing to the input size; the first frame includes warm-up)")
    if stages.stages():
        print(f"per stage, frames 2..{len(images)} (decode = reading the image file, write = "
              f"the {args.format} output):")
        print(breakdown_markdown({backend.describe(): stages.summary()}))
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run())


if __name__ == "__main__":
    main()
