"""Eigen-protocol evaluation of coarse, fine and an image-blind baseline.

    python -m training.evaluate --checkpoint models/default/model.pt \
        --list ../shared/kitti/index.tsv --drives 2011_09_26_drive_0001 --out outputs/eval

Garg crop, ground truth in (1e-3, 80) m, predictions clamped, metrics per image then averaged;
both median-scaled and metric (no scaling). Writes ``per_frame.csv``, ``summary.json``,
``abs_rel_per_frame.png`` and one colourised panel per frame (image | coarse | fine | GT). For a
model with a confidence head also the sparsification of the fine AbsRel (drop the least confident
pixels first) against the oracle, its AUSE (``summary.json``) and ``sparsification.png``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from mono_depth_ros.colorize import colorize, colorize_sparse, stack_panels, write_rgb
from mono_depth_ros.config import ConfigError, EvalConfig
from mono_depth_ros.kitti import KittiFormatError
from mono_depth_ros.metrics import (METRIC_NAMES, FrameScore, Sparsification, abs_rel_errors,
                                    mean_scores, mean_sparsification, score_frame,
                                    sparsification)
from mono_depth_ros.model_io import ModelLoadError, atomic_write_bytes, atomic_write_text

from . import data as D

MODELS = ("coarse", "fine", "baseline", "shuffled")


def shuffled_partner(groups: list[str]) -> list[int]:
    """For each frame, another frame whose prediction stands in for its own in the shuffled check:
    half the list away (lists are grouped by drive, so mostly another drive), never itself."""
    n = len(groups)
    order = sorted(range(n), key=lambda i: (groups[i], i))
    pos = {i: k for k, i in enumerate(order)}
    return [order[(pos[i] + max(1, n // 2)) % n] for i in range(n)]


def evaluate_frames(backend, samples: list[D.Sample], row_medians: list[float] | None,
                    cfg: EvalConfig | None = None, panel_dir: Path | None = None,
                    progress: bool = True,
                    sparsified: dict[str, list[Sparsification]] | None = None
                    ) -> dict[str, list[FrameScore]]:
    """Score every sample for coarse, fine, (given row medians) the baseline, and ``shuffled``:
    each frame scored with another frame's fine prediction. A network that looks at the image
    must lose clearly when shuffled; the image-blind baseline would not lose at all.
    ``sparsified`` (given, and the model has a confidence) collects each frame's sparsification
    of the fine AbsRel, under "metric" and "median_scaled"."""
    import cv2
    from tqdm import tqdm

    cfg = cfg or EvalConfig()
    scores: dict[str, list[FrameScore]] = {m: [] for m in MODELS}
    fines: list[np.ndarray] = []
    for s in tqdm(samples, desc="evaluate", unit="frame", disable=not progress):
        h, w = s.depth.shape
        result = backend.infer(s.rgb, camera=s.camera)  # the training map, its intrinsics
        fines.append(cv2.resize(result.fine, (160, 48), interpolation=cv2.INTER_AREA))
        preds = {"coarse": result.coarse, "fine": result.fine}
        if row_medians is not None:
            preds["baseline"] = D.baseline_depth(row_medians, h, w)
        for name, pred in preds.items():
            scores[name].append(score_frame(pred, s.depth, cfg))
        if sparsified is not None and result.confidence is not None:
            for kind, scaled in (("metric", False), ("median_scaled", True)):
                err, mask = abs_rel_errors(result.fine, s.depth, cfg, scaled)
                sparsified.setdefault(kind, []).append(
                    sparsification(err, result.confidence[mask]))
        if panel_dir is not None:
            lo, hi = 1.0, cfg.max_depth
            panels = [(s.frame.frame_id, s.rgb),
                      (f"coarse  AbsRel {scores['coarse'][-1].scaled['abs_rel']:.3f}",
                       colorize(result.coarse, lo, hi)),
                      (f"fine  AbsRel {scores['fine'][-1].scaled['abs_rel']:.3f}",
                       colorize(result.fine, lo, hi)),
                      (f"ground truth ({s.gt_kind})", colorize_sparse(s.depth, lo, hi))]
            panel_dir.mkdir(parents=True, exist_ok=True)
            write_rgb(panel_dir / (s.frame.frame_id.replace("/", "_") + ".png"),
                      stack_panels(panels))
    if len(samples) > 1:
        partner = shuffled_partner([s.frame.group for s in samples])
        for s, j in zip(samples, partner):
            h, w = s.depth.shape
            other = np.exp(cv2.resize(np.log(fines[j]), (w, h), interpolation=cv2.INTER_LINEAR))
            scores["shuffled"].append(score_frame(other, s.depth, cfg))
    return {k: v for k, v in scores.items() if v}


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per model, median-scaled metrics then metric AbsRel / RMSE."""
    cols = list(METRIC_NAMES) + ["metric_abs_rel", "metric_rmse", "metric_d1"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def write_bar_chart(path: Path, labels: list[str], series: dict[str, list[float]], ylabel: str,
                    inch_per_group: float = 1.2, rotation: int = 30) -> None:
    """Grouped bars (one group per label, one bar per series), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, inch_per_group * len(labels)), 4))
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + i * width, values, width, label=name)
    ax.set_xticks(x + width * (len(series) - 1) / 2)
    ax.set_xticklabels(labels, rotation=rotation, ha="right" if rotation else "center")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_per_frame(frame_ids: list[str], scores: dict[str, list[FrameScore]], path: Path) -> None:
    write_bar_chart(path, [f.split("/")[-1] for f in frame_ids],
                    {name: [s.scaled["abs_rel"] for s in sc] for name, sc in scores.items()},
                    "AbsRel (median-scaled)")


def sparsification_report(sparsified: dict[str, list[Sparsification]],
                          path: Path) -> dict[str, dict]:
    """Frame-averaged sparsification curves (drop the least confident pixels first) against
    the oracle (largest errors first), their AUSE, and a PNG of both curves per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for (kind, items), colour in zip(sparsified.items(), ("tab:blue", "tab:orange")):
        m = mean_sparsification(items)
        report[kind] = {"ause": m.ause, "fractions": m.fractions.tolist(),
                        "abs_rel": m.curve.tolist(), "oracle_abs_rel": m.oracle.tolist(),
                        "monotonic": bool(np.all(np.diff(m.curve) <= 0)), "frames": len(items)}
        ax.plot(m.fractions, m.curve, "o-", color=colour, ms=3,
                label=f"{kind}: by confidence (AUSE {m.ause:.4f})")
        ax.plot(m.fractions, m.oracle, "--", color=colour, label=f"{kind}: oracle")
    ax.set_xlabel("fraction of pixels removed (least confident first)")
    ax.set_ylabel("AbsRel of the remaining pixels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return report


def format_sparsification(report: dict[str, dict]) -> str:
    """One text block: AUSE and the AbsRel at a few removal fractions, per kind."""
    lines = []
    for kind, r in report.items():
        pts = [(f, a) for f, a in zip(r["fractions"], r["abs_rel"])
               if round(f * 100) in (0, 25, 50, 75, 95)]
        lines.append(f"sparsification ({kind} AbsRel, {r['frames']} frames): AUSE "
                     f"{r['ause']:.4f}; " + ", ".join(f"{f:.0%} removed {a:.4f}" for f, a in pts)
                     + ("" if r["monotonic"] else "; NOT monotonic"))
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    from mono_depth_ros.backends.factory import add_flip_average_argument

    p = argparse.ArgumentParser(prog="python -m training.evaluate",
                                description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="model (default: the shipped model)")
    p.add_argument("--list", default="data/kitti_sample/index.tsv",
                   help="frames: index.tsv or monodepth2 split list")
    p.add_argument("--data-root", default=None, help="root for list paths")
    p.add_argument("--drives", nargs="*", default=None, help="keep only frames of these drives")
    p.add_argument("--gt", nargs="+", default=list(D.GT_KINDS), choices=D.GT_KINDS,
                   help="ground truth kinds, best first")
    p.add_argument("--backend", default="torch", choices=("auto", "tensorrt", "onnxruntime",
                                                          "torch"))
    p.add_argument("--onnx", default="", help="ONNX model for --backend onnxruntime/tensorrt "
                   "(default: the checkpoint's export)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-panels", action="store_true")
    add_flip_average_argument(p)
    args = p.parse_args(argv)

    from mono_depth_ros.model_io import load_checkpoint, default_model_path
    from mono_depth_ros.predict import PredictError, make_backend

    try:
        ckpt_path = args.checkpoint or str(default_model_path())
        meta = load_checkpoint(ckpt_path).get("meta", {})
        frames = D.load_frames(args.list, args.data_root)
        if args.drives:
            frames = [f for f in frames if f.drive in set(args.drives)]
            if not frames:
                raise KittiFormatError(f"{args.list}: no frames of drives {args.drives}")
        samples = [D.load_sample(f, tuple(args.gt)) for f in frames]
        if args.onnx:
            from mono_depth_ros.backends.factory import create_backend
            from mono_depth_ros.config import BackendConfig, from_dict

            backend = create_backend(from_dict(BackendConfig, {
                "backend": args.backend, "checkpoint": ckpt_path, "onnx": args.onnx,
                "flip_average": args.flip_average}))
        else:
            backend = make_backend(args.backend, ckpt_path, flip_average=args.flip_average)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        sparsified: dict[str, list[Sparsification]] = {}
        scores = evaluate_frames(backend, samples, meta.get("row_median_depth"),
                                 panel_dir=None if args.no_panels else out / "panels",
                                 sparsified=sparsified)
    except (ConfigError, KittiFormatError, ModelLoadError, PredictError, OSError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2

    ids = [s.frame.frame_id for s in samples]
    rows = []
    for name, sc in scores.items():
        for fid, s, smp in zip(ids, sc, samples):
            rows.append({"frame": fid, "model": name, "gt": smp.gt_kind, **s.flat()})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "per_frame.csv", buf.getvalue())
    summary = {name: mean_scores(sc) for name, sc in scores.items()}
    report = {"checkpoint": ckpt_path, "list": args.list, "frames": ids,
              "backend": backend.describe(), "data_hash": meta.get("data_hash"),
              "summary": summary}
    if sparsified:
        report["sparsification"] = sparsification_report(sparsified, out / "sparsification.png")
    atomic_write_text(out / "summary.json", json.dumps(report, indent=2))
    plot_per_frame(ids, scores, out / "abs_rel_per_frame.png")
    print(f"{len(ids)} frames from {args.list} ({backend.describe()})")
    print(format_table(summary))
    print(format_sparsification(report["sparsification"]) if sparsified else
          "no confidence output (the model has no confidence head): no sparsification")
    print(f"wrote {out}/per_frame.csv, summary.json, abs_rel_per_frame.png"
          + ("" if args.no_panels else ", panels/"))
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
