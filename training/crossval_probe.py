"""Two probes of a finished cross-validation: what detail is worth, and what a second net adds.

    python -m training.crossval_probe runs/crossval [--with runs/other_crossval]

Each fold's model (``fold*_seed*/model.pt``) re-scores that fold's held-out frames (the
``val_frames`` of its ``result.json``), median-scaled AbsRel, mean over frames:

* ``fine``: the fine depth as the cross-validation scored it (the probe must reproduce it);
* ``grid 1/k``: the fine log depth averaged onto a grid of 1/k of the network's input size and
  enlarged bilinearly. Where AbsRel does not rise, the ground truth cannot see any detail finer
  than that grid, so no refinement working at finer scales can earn anything on it;
* with ``--with``: the log-average of this fine depth and that of the same fold's run in another
  folder (another encoder, seed or recipe). What two whole, independently trained networks gain
  together bounds what a second stage of that size can add.

Prints a table and writes ``probe.json`` into the folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mono_depth_ros.config import ConfigError
from mono_depth_ros.kitti import KittiFormatError
from mono_depth_ros.model_io import ModelLoadError, atomic_write_text

from . import data as D

GRIDS = (8, 16, 32)


def through_grid(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``depth`` (HxW metres) with its log averaged onto a ``size`` (w, h) grid and enlarged
    bilinearly back to HxW: the same depth map without any detail finer than a grid cell."""
    import cv2

    h, w = depth.shape
    small = cv2.resize(np.log(depth), size, interpolation=cv2.INTER_AREA)
    return np.exp(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def probe_run(run: Path, other: Path | None, frames: dict[str, D.Frame]) -> dict[str, float]:
    """Mean AbsRel of each probe over ``run``'s held-out frames."""
    from mono_depth_ros.metrics import mean_scores, score_frame
    from mono_depth_ros.predict import make_backend

    result = json.loads((run / "result.json").read_text())
    backend = make_backend("torch", str(run / "model.pt"))
    second = None
    if other is not None:
        held = json.loads((other / "result.json").read_text())["val_frames"]
        if held != result["val_frames"]:
            raise ConfigError(f"{other} held out other frames than {run}: not the same folds")
        second = make_backend("torch", str(other / "model.pt"))
    cfg = backend.model.cfg
    scores: dict[str, list] = {}
    for frame_id in result["val_frames"]:
        if frame_id not in frames:
            raise ConfigError(f"{run}: held-out frame {frame_id} is not in the frame list")
        s = D.load_sample(frames[frame_id])
        fine = backend.infer(s.rgb, camera=s.camera).fine
        preds = {"fine": fine}
        for k in GRIDS:
            preds[f"grid 1/{k}"] = through_grid(fine, (cfg.width // k, cfg.height // k))
        if second is not None:
            other_fine = second.infer(s.rgb, camera=s.camera).fine
            preds["second net"] = other_fine
            preds["both, log-averaged"] = np.sqrt(fine * other_fine)
        for name, pred in preds.items():
            scores.setdefault(name, []).append(score_frame(pred, s.depth))
    out = {name: mean_scores(sc)["abs_rel"] for name, sc in scores.items()}
    out["crossval fine"] = result["val"]["summary"]["fine"]["abs_rel"]
    out["crossval coarse"] = result["val"]["summary"]["coarse"]["abs_rel"]
    return out


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per run, then mean ± std; each probe with its difference to ``fine``."""
    names = [n for n in next(iter(rows.values())) if not n.startswith("crossval")]
    lines = ["| run | coarse | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for run, r in rows.items():
        lines.append(f"| {run} | {r['crossval coarse']:.4f} | "
                     + " | ".join(f"{r[n]:.4f}" for n in names) + " |")
    cells = []
    for n in ["crossval coarse"] + names:
        v = np.array([r[n] for r in rows.values()])
        d = v - np.array([r["fine"] for r in rows.values()])
        cells.append(f"{v.mean():.4f} ± {v.std():.4f}" + (
            "" if n == "fine" else f" ({d.mean():+.4f} ± {d.std():.4f} vs fine)"))
    lines.append("| mean | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a training.crossval --out folder")
    p.add_argument("--with", dest="other", default="",
                   help="another crossval folder with the same folds: log-average its fine "
                   "depth with this one's, fold by fold")
    p.add_argument("--list", default="../shared/kitti/index.tsv",
                   help="the frame list the cross-validation ran on")
    p.add_argument("--data-root", default="")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    try:
        runs = sorted(r.parent for r in folder.glob("fold*_seed*/result.json"))
        if not runs:
            raise ConfigError(f"{folder}: no finished run (fold*_seed*/result.json)")
        frames = {f.frame_id: f for f in D.load_frames(args.list, args.data_root or None)}
        rows = {}
        for run in tqdm(runs, desc="probe runs", unit="run"):
            other = None
            if args.other:
                fold = run.name.split("_")[0]
                match = sorted(Path(args.other).glob(f"{fold}_seed*/result.json"))
                if not match:
                    raise ConfigError(f"--with {args.other}: no finished run of {fold}")
                other = match[0].parent
            rows[run.name] = probe_run(run, other, frames)
    except (ConfigError, KittiFormatError, ModelLoadError, OSError) as exc:
        print(f"crossval_probe: error: {exc}", file=sys.stderr)
        return 2
    table = format_table(rows)
    atomic_write_text(folder / "probe.json", json.dumps(
        {"with": args.other, "runs": rows}, indent=2))
    print(table)
    print(f"wrote {folder}/probe.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
