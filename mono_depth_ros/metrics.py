"""Eigen et al. (2014) depth metrics. The one implementation used by training.evaluate, the
offline bag evaluation and the live evaluation node, so their numbers cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import EvalConfig

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "d1", "d2", "d3")


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean mask of the crop of Garg et al. (2016), defined relative to the image size."""
    mask = np.zeros((height, width), dtype=bool)
    top, bottom = int(0.40810811 * height), int(0.99189189 * height)
    left, right = int(0.03594771 * width), int(0.96405229 * width)
    mask[top:bottom, left:right] = True
    return mask


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The seven Eigen metrics over matching 1-D arrays of positive depths."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.size == 0:
        raise ValueError("no valid ground-truth pixels to score")
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "d1": float(np.mean(thresh < 1.25)),
        "d2": float(np.mean(thresh < 1.25 ** 2)),
        "d3": float(np.mean(thresh < 1.25 ** 3)),
    }


@dataclass
class FrameScore:
    """Metrics of one frame: median-scaled (``scaled``) and metric (``metric``, no scaling)."""

    scaled: dict[str, float]
    metric: dict[str, float]
    scale: float          # the median ratio gt / pred used for ``scaled``
    valid_pixels: int

    def flat(self) -> dict[str, float]:
        out = dict(self.scaled)
        out.update({f"metric_{k}": v for k, v in self.metric.items()})
        out["median_scale"] = self.scale
        out["valid_pixels"] = self.valid_pixels
        return out


def valid_mask(gt: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    mask = np.isfinite(gt) & (gt > cfg.min_depth) & (gt < cfg.max_depth)
    if cfg.garg_crop:
        mask &= garg_crop_mask(*gt.shape)
    return mask


def score_frame(pred: np.ndarray, gt: np.ndarray, cfg: EvalConfig | None = None) -> FrameScore:
    """Score a predicted depth map (metres) against ground truth of the same size (0/NaN = none)."""
    cfg = cfg or EvalConfig()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    mask = valid_mask(gt, cfg)
    g = gt[mask].astype(np.float64)
    p = pred[mask].astype(np.float64)
    p = np.nan_to_num(p, nan=cfg.min_depth)
    metric = compute_errors(g, np.clip(p, cfg.min_depth, cfg.max_depth))
    scale = float(np.median(g) / np.median(np.clip(p, 1e-6, None)))
    scaled = compute_errors(g, np.clip(p * scale, cfg.min_depth, cfg.max_depth))
    return FrameScore(scaled, metric, scale, int(mask.sum()))


def mean_scores(scores: list[FrameScore]) -> dict[str, float]:
    """Per-image metrics averaged over frames (the standard protocol), flattened."""
    if not scores:
        raise ValueError("no frames were scored")
    flats = [s.flat() for s in scores]
    out = {k: float(np.mean([f[k] for f in flats])) for k in flats[0]}
    out["frames"] = len(scores)
    return out
