"""Scoring predicted depth against projected LiDAR: the code shared by ``kitti_eval_node`` (live,
over DDS) and ``evaluate_bag`` (offline), so both give the same numbers for the same frames.

Ground truth is the scan projected with ``K @ [R|t]``: ``K`` is the rectified intrinsics of the
depth image (``camera_info.P[:3, :3]``) and ``[R|t]`` takes LiDAR points into that camera's own
optical frame (``velo_to_cam_optical`` from the KITTI calibration, or ``/tf_static``). The 4th
column of a KITTI ``P_rect_02`` (camera 2's offset from camera 0) is therefore not applied a
second time. Metrics come from ``metrics.score_frame``, the function ``training.evaluate`` uses.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import EvalConfig
from .geometry import project_points
from .metrics import METRIC_NAMES, FrameScore, mean_scores, score_frame, valid_mask


def lidar_depth(points: np.ndarray, K: np.ndarray, velo_to_cam: np.ndarray, width: int,
                height: int) -> np.ndarray:
    """Sparse depth (float32 HxW, 0 = none) of LiDAR ``points`` seen by camera ``K``."""
    velo_to_image = np.asarray(K, dtype=np.float64).reshape(3, 3) @ \
        np.asarray(velo_to_cam, dtype=np.float64)[:3, :4]
    return project_points(points, velo_to_image, width, height)


def p_offset(P: np.ndarray) -> np.ndarray:
    """(tx, ty, tz) of a 3x4 projection ``P = K [I | t]``: where P's camera sits relative to the
    frame it projects from (camera 2's ~6 cm from camera 0 in a KITTI ``P_rect_02``)."""
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    return np.linalg.solve(P[:, :3], P[:, 3])


def frame_to_camera(P: np.ndarray, frame: str, tf, tol: float = 0.02) -> tuple[np.ndarray, str]:
    """4x4 taking points in a camera_info's header ``frame`` into the optical frame of the camera
    ``P`` describes, and one line saying which case it is.

    kitti2bag master stamps camera_info in camera 2's own frame (``camera_color_left``, placed at
    camera 2 by /tf_static) while P = P_rect_02 still holds camera 2's offset from camera 0:
    applying both would count the offset twice, so it is dropped (identity). The
    ``image_rect_color`` layout stamps it in camera 0's frame (``camera_gray_left``); there the
    offset lives only in P and is applied. The tf tells the cases apart: the offset is applied
    when /tf_static (``tf``: ``frames()``, ``lookup(target, source)``) holds another frame at
    exactly P's offset from ``frame``, with the same orientation. Without such a frame the header
    frame is taken to be the camera itself (as in bags written by kitti_to_bag).
    """
    t = p_offset(P)
    if np.linalg.norm(t) < 1e-4:
        return np.eye(4), f"{frame}: P has no offset"
    tol = min(tol, 0.5 * float(np.linalg.norm(t)))
    for other in sorted(tf.frames() - {frame}) if tf is not None else ():
        T = tf.lookup(other, frame)  # points in `frame` -> `other`
        if T is not None and np.allclose(T[:3, :3], np.eye(3), atol=1e-3) \
                and np.linalg.norm(T[:3, 3] - t) < tol:
            C = np.eye(4)
            C[:3, 3] = t
            return C, (f"{frame} is the reference camera; P's offset ({t[0]:+.3f} m) applied "
                       f"(its camera is {other})")
    return np.eye(4), (f"{frame} is the camera itself; P's offset ({t[0]:+.3f} m) not applied "
                       "again")


def calib_velo_to_cam(calib_dir: str | Path) -> np.ndarray:
    """4x4 velo -> camera-2 optical frame from a KITTI date folder (or a drive folder in it)."""
    from .kitti import KittiFormatError, read_raw_calib

    d = Path(calib_dir)
    for cand in (d, d.parent):
        if (cand / "calib_cam_to_cam.txt").is_file():
            return read_raw_calib(cand / "calib_cam_to_cam.txt",
                                  cand / "calib_velo_to_cam.txt").velo_to_cam_optical
    raise KittiFormatError(f"{d}: no calib_cam_to_cam.txt here or in the parent folder")


@dataclass
class FrameRecord:
    stamp_ns: int
    score: FrameScore
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        out = {"stamp_ns": self.stamp_ns, "stamp": self.stamp_ns * 1e-9}
        out.update(self.extra)
        out.update(self.score.flat())
        return out


class DistanceBins:
    """Error against ground-truth distance: per bin, sums for abs_rel and RMSE (scaled, metric)."""

    def __init__(self, width: float, max_depth: float):
        self.width = width
        self.n = max(1, int(math.ceil(max_depth / width)))
        z = np.zeros(self.n)
        self.count, self.abs_rel, self.sq, self.abs_rel_m, self.sq_m = z.copy(), z.copy(), \
            z.copy(), z.copy(), z.copy()

    def add(self, gt: np.ndarray, pred_scaled: np.ndarray, pred_metric: np.ndarray) -> None:
        idx = np.clip((gt / self.width).astype(np.int64), 0, self.n - 1)
        np.add.at(self.count, idx, 1)
        np.add.at(self.abs_rel, idx, np.abs(gt - pred_scaled) / gt)
        np.add.at(self.sq, idx, (gt - pred_scaled) ** 2)
        np.add.at(self.abs_rel_m, idx, np.abs(gt - pred_metric) / gt)
        np.add.at(self.sq_m, idx, (gt - pred_metric) ** 2)

    def table(self) -> list[dict]:
        rows = []
        for i in range(self.n):
            c = self.count[i]
            rows.append({
                "from_m": i * self.width, "to_m": (i + 1) * self.width, "pixels": int(c),
                "abs_rel": float(self.abs_rel[i] / c) if c else None,
                "rmse": float(math.sqrt(self.sq[i] / c)) if c else None,
                "metric_abs_rel": float(self.abs_rel_m[i] / c) if c else None,
                "metric_rmse": float(math.sqrt(self.sq_m[i] / c)) if c else None,
            })
        return rows


class EvalRecorder:
    """Collects per-frame scores and writes ``metrics.csv``, ``metrics.json`` and plots."""

    def __init__(self, cfg: EvalConfig | None = None, distance_bin: float = 10.0):
        self.cfg = cfg or EvalConfig()
        self.records: list[FrameRecord] = []
        self.bins = DistanceBins(distance_bin, self.cfg.max_depth)
        self.skipped: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, stamp_ns: int, pred: np.ndarray, gt: np.ndarray, **extra) -> FrameScore | None:
        """Score one frame; returns None (and counts the reason) when nothing can be scored."""
        mask = valid_mask(gt, self.cfg)
        if not mask.any():
            self.skip("no valid LiDAR pixels")
            return None
        score = score_frame(pred, gt, self.cfg)
        g = gt[mask].astype(np.float64)
        p = np.nan_to_num(pred[mask].astype(np.float64), nan=self.cfg.min_depth)
        self.bins.add(g, np.clip(p * score.scale, self.cfg.min_depth, self.cfg.max_depth),
                      np.clip(p, self.cfg.min_depth, self.cfg.max_depth))
        self.records.append(FrameRecord(stamp_ns, score, dict(extra)))
        return score

    @property
    def scores(self) -> list[FrameScore]:
        return [r.score for r in self.records]

    def summary(self) -> dict:
        out: dict = {"frames": 0}
        if self.records:
            out = mean_scores(self.scores)
        out["skipped"] = dict(self.skipped)
        return out

    # ----------------------------------------------------------------------------------------
    def write(self, out_dir: str | Path, extra: dict | None = None, plots: bool = True,
              plots_deadline: float | None = None) -> dict:
        """Write the report; returns the paths written (name -> path).

        ``plots_deadline`` (a ``time.monotonic()`` value): draw the plots only if they are done
        by then (a node stopping within 2 s); the JSON and CSV files are always written.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        summary = self.summary()
        summary.update(extra or {})
        summary["eval"] = {"min_depth": self.cfg.min_depth, "max_depth": self.cfg.max_depth,
                           "garg_crop": self.cfg.garg_crop}
        summary["per_frame"] = [r.row() for r in self.records]
        summary["error_vs_distance"] = self.bins.table()
        paths["json"] = out / "metrics.json"
        tmp = paths["json"].with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        tmp.replace(paths["json"])
        paths["csv"] = out / "metrics.csv"
        rows = [r.row() for r in self.records]
        keys = list(rows[0]) if rows else ["stamp_ns", "stamp", *METRIC_NAMES]
        with open(paths["csv"], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        paths["distance_csv"] = out / "error_vs_distance.csv"
        table = self.bins.table()
        with open(paths["distance_csv"], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
        if plots and plots_deadline is None:
            paths.update(self._plots(out, table))
        elif plots:
            paths.update(self._plots_by(plots_deadline, out, table))
        return paths

    def _plots_by(self, deadline: float, out: Path, table: list[dict]) -> dict:
        """``_plots`` in a thread, waited for until ``deadline``; {} if not done by then (the
        unfinished plots are written under temporary names, never as half files). None are
        drawn when there is no frame to plot, or when matplotlib is not imported yet: importing
        it holds the GIL for long stretches, which would hold up everything else too."""
        import sys
        import threading
        import time

        if not self.records or "matplotlib.pyplot" not in sys.modules:
            return {}
        box: dict = {}

        def run():
            try:
                box.update(self._plots(out, table))
            except Exception:  # noqa: BLE001 - plots are an extra; the numbers are written
                pass

        t = threading.Thread(target=run, name="report_plots", daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        return dict(box) if not t.is_alive() else {}

    def _plots(self, out: Path, table: list[dict]) -> dict:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        paths = {}
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        x = np.arange(len(self.records))
        labels = [r.extra.get("label", str(i)) for i, r in enumerate(self.records)]
        for ax, keys, title in (
                (axes[0], ("abs_rel", "metric_abs_rel"), "AbsRel"),
                (axes[1], ("rmse", "metric_rmse"), "RMSE (m)"),
                (axes[2], ("d1", "metric_d1"), "delta < 1.25")):
            for k, style in zip(keys, ("o-", "s--")):
                ax.plot(x, [r.score.flat()[k] for r in self.records], style,
                        label="median-scaled" if not k.startswith("metric") else "metric")
            ax.set_title(title)
            ax.set_xticks(x, labels, rotation=30, fontsize=7)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle("per-frame Eigen metrics against projected LiDAR")
        # fixed margins: tight_layout costs a third of the drawing time
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.22, top=0.84, wspace=0.25)
        paths["per_frame_plot"] = _save(fig, out / "per_frame_metrics.png")
        plt.close(fig)

        fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
        mids = [(r["from_m"] + r["to_m"]) / 2 for r in table]
        for k, lab in (("abs_rel", "median-scaled"), ("metric_abs_rel", "metric")):
            ax[0].plot(mids, [np.nan if r[k] is None else r[k] for r in table], "o-", label=lab)
        for k, lab in (("rmse", "median-scaled"), ("metric_rmse", "metric")):
            ax[1].plot(mids, [np.nan if r[k] is None else r[k] for r in table], "o-", label=lab)
        ax[0].set_ylabel("AbsRel")
        ax[1].set_ylabel("RMSE (m)")
        for a in ax:
            a.set_xlabel("LiDAR distance (m)")
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        fig.suptitle("error against distance (all scored pixels)")
        fig.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.86, wspace=0.25)
        paths["distance_plot"] = _save(fig, out / "error_vs_distance.png")
        plt.close(fig)
        return paths


def _save(fig, path: Path) -> Path:
    """Save a figure atomically (temporary name, then rename), so a stopped writer leaves no half
    PNG."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=90, format="png")
    tmp.replace(path)
    return path


def format_table(summary: dict) -> str:
    """Two-row text table (median-scaled and metric) of a summary from ``mean_scores``."""
    head = "          " + " ".join(f"{k:>9}" for k in METRIC_NAMES)
    rows = [head]
    for prefix, name in (("", "scaled"), ("metric_", "metric")):
        vals = [summary.get(prefix + k) for k in METRIC_NAMES]
        cells = (f"{v:9.4f}" if v is not None else f"{'-':>9}" for v in vals)
        rows.append(f"{name:<10}" + " ".join(cells))
    return "\n".join(rows)
