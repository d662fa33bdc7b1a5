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


SPARSIFICATION_STEPS = 20


@dataclass
class Sparsification:
    """AbsRel left after removing a fraction of the pixels: least confident first (``curve``)
    and largest error first (``oracle``, the best any confidence could do). ``ause`` is the
    area between the two over ``fractions`` (0 = the confidence ranks errors perfectly)."""

    fractions: np.ndarray
    curve: np.ndarray
    oracle: np.ndarray
    ause: float


def _removal_curve(errors: np.ndarray, order: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Mean of ``errors`` after dropping the first round(f * n) pixels of ``order``, per f."""
    kept_sum = np.cumsum(errors[order][::-1])[::-1]  # sum of errors from position i to the end
    n = errors.size
    drop = np.minimum(np.round(fractions * n).astype(np.int64), n - 1)
    return kept_sum[drop] / (n - drop)


def sparsification(errors: np.ndarray, confidence: np.ndarray,
                   steps: int = SPARSIFICATION_STEPS) -> Sparsification:
    """Sparsification of per-pixel errors (e.g. |pred - gt| / gt) by ``confidence`` (higher =
    more trusted), at ``steps`` removal fractions 0, 1/steps, ... (steps-1)/steps. Poggi et al.
    (CVPR 2020) and Ilg et al. (ECCV 2018). Ties in confidence are removed in pixel order."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    c = np.asarray(confidence, dtype=np.float64).ravel()
    if e.shape != c.shape:
        raise ValueError(f"{e.size} errors but {c.size} confidences")
    keep = np.isfinite(e) & np.isfinite(c)
    e, c = e[keep], c[keep]
    if e.size == 0:
        raise ValueError("no pixels with a finite error and confidence")
    fractions = np.arange(steps, dtype=np.float64) / steps
    curve = _removal_curve(e, np.argsort(c, kind="stable"), fractions)
    oracle = _removal_curve(e, np.argsort(-e, kind="stable"), fractions)
    gap = curve - oracle  # trapezoid rule by hand: numpy 1.x (ROS's python3-numpy) lacks
    ause = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(fractions)))  # np.trapezoid
    return Sparsification(fractions, curve, oracle, ause)


def mean_sparsification(items: list[Sparsification]) -> Sparsification:
    """Per-frame sparsifications averaged (curves point by point, AUSE as the mean)."""
    if not items:
        raise ValueError("no frames to average")
    return Sparsification(items[0].fractions, np.mean([s.curve for s in items], axis=0),
                          np.mean([s.oracle for s in items], axis=0),
                          float(np.mean([s.ause for s in items])))


def abs_rel_errors(pred: np.ndarray, gt: np.ndarray, cfg: EvalConfig | None = None,
                   scaled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(per-pixel |pred - gt| / gt, mask) on the pixels ``score_frame`` scores (metric, or
    median-scaled with ``scaled``); predictions clamped like ``score_frame``."""
    cfg = cfg or EvalConfig()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    mask = valid_mask(gt, cfg)
    g = gt[mask].astype(np.float64)
    p = np.nan_to_num(pred[mask].astype(np.float64), nan=cfg.min_depth)
    if scaled:
        p = p * float(np.median(g) / np.median(np.clip(p, 1e-6, None)))
    p = np.clip(p, cfg.min_depth, cfg.max_depth)
    return np.abs(p - g) / g, mask
