"""Eigen et al. (2014) scale-invariant loss in log space, over valid pixels only."""

from __future__ import annotations

import torch


def scale_invariant_loss(pred_log: torch.Tensor, gt: torch.Tensor, lam: float = 0.5,
                         min_depth: float = 1e-3) -> torch.Tensor:
    """Mean over images of  (1/n) sum d^2 - (lam/n^2) (sum d)^2,  d = pred_log - log(gt).

    ``pred_log`` and ``gt`` are Bx1xHxW; ground truth <= ``min_depth`` (or non-finite) is ignored.
    lam = 0 is the plain log-space L2 loss; lam = 1 is fully scale-invariant (a global scale on the
    prediction does not change the loss); Eigen et al. train with lam = 0.5.
    """
    if pred_log.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred_log.shape)} and target {tuple(gt.shape)} differ")
    valid = torch.isfinite(gt) & (gt > min_depth)
    d = torch.where(valid, pred_log - torch.log(torch.where(valid, gt, torch.ones_like(gt))),
                    torch.zeros_like(gt))
    n = valid.flatten(1).sum(dim=1)
    has = n > 0
    if not bool(has.any()):
        raise ValueError("no valid ground-truth pixels in the batch")
    n = n.clamp(min=1).to(d.dtype)
    s1 = d.flatten(1).sum(dim=1)
    s2 = (d * d).flatten(1).sum(dim=1)
    per_image = s2 / n - lam * (s1 / n) ** 2
    return per_image[has].mean()
