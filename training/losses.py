"""Eigen et al. (2014) scale-invariant loss in log space, over valid pixels only; the Laplace
likelihood that trains the confidence head; the stereo photometric loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def laplace_nll(fine_log: torch.Tensor, log_b: torch.Tensor, gt: torch.Tensor,
                mask: torch.Tensor | None = None, min_depth: float = 1e-3) -> torch.Tensor:
    """Laplace negative log-likelihood of the log-depth error, mean over valid pixels:
    mean(|log gt - fine_log| / b + log b) (the constant log 2 left out).

    Trains the confidence head: ``log_b`` (Bx1xHxW) is its predicted log scale; ``fine_log``
    should come detached, so only the head learns from this loss. ``mask`` defaults to the
    pixels with finite ground truth above ``min_depth``; all tensors share one size.
    """
    if not (fine_log.shape == log_b.shape == gt.shape):
        raise ValueError(f"fine {tuple(fine_log.shape)}, log b {tuple(log_b.shape)} and target "
                         f"{tuple(gt.shape)} differ")
    valid = torch.isfinite(gt) & (gt > min_depth)
    if mask is not None:
        valid = valid & mask.bool()
    if not bool(valid.any()):
        raise ValueError("no valid ground-truth pixels in the batch")
    err = (torch.log(torch.where(valid, gt, torch.ones_like(gt))) - fine_log).abs()
    nll = err * torch.exp(-log_b) + log_b
    return torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum()


def _ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 over 3x3 windows, per pixel and channel (monodepth's form)."""
    import torch.nn.functional as F

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pool = torch.nn.AvgPool2d(3, 1)
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mx, my = pool(x), pool(y)
    sx, sy = pool(x * x) - mx * mx, pool(y * y) - my * my
    sxy = pool(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2))
    return torch.clamp((1 - ssim) / 2, 0, 1)


def warp_right_to_left(right: torch.Tensor, disparity: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the right image at (u - disparity, v): the left view as the right camera saw it,
    and a mask of pixels whose match lies inside the right image."""
    import torch.nn.functional as F

    b, _, h, w = right.shape
    u = torch.arange(w, dtype=right.dtype, device=right.device).view(1, 1, 1, w)
    v = torch.arange(h, dtype=right.dtype, device=right.device).view(1, 1, h, 1)
    xs = u - disparity
    gx = 2 * (xs + 0.5) / w - 1
    gy = (2 * (v + 0.5) / h - 1).expand_as(gx)
    grid = torch.stack([gx[:, 0], gy[:, 0]], dim=-1)
    warped = F.grid_sample(right, grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    inside = ((xs >= 0) & (xs <= w - 1)).to(right.dtype)
    return warped, inside


def stereo_photometric_loss(pred_log: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                            k: torch.Tensor, alpha: float = 0.85,
                            smooth: float = 1e-3) -> torch.Tensor:
    """Self-supervision from a rectified stereo pair (Godard et al. 2017): the right image warped
    by the predicted disparity k / depth must look like the left image (SSIM + L1), plus an
    edge-aware smoothness of the mean-normalised disparity. It reaches the pixels LiDAR never
    covers. ``k`` (B) is fx * baseline in network pixels; images with k = 0 are skipped."""
    has = k > 0
    if not bool(has.any()):
        return pred_log.sum() * 0.0
    pred_log, left, right, k = pred_log[has], left[has], right[has], k[has]
    disp = k.view(-1, 1, 1, 1) * torch.exp(-pred_log)
    warped, inside = warp_right_to_left(right, disp)
    err = alpha * _ssim_distance(warped, left).mean(1, keepdim=True) \
        + (1 - alpha) * (warped - left).abs().mean(1, keepdim=True)
    photo = (err * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp(min=1)
    nd = disp / disp.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    gx = (nd[..., :, 1:] - nd[..., :, :-1]).abs() * torch.exp(
        -(left[..., :, 1:] - left[..., :, :-1]).abs().mean(1, keepdim=True))
    gy = (nd[..., 1:, :] - nd[..., :-1, :]).abs() * torch.exp(
        -(left[..., 1:, :] - left[..., :-1, :]).abs().mean(1, keepdim=True))
    return photo.mean() + smooth * (gx.mean() + gy.mean())


# Grids of the random field in ``perturb_coarse``: a global offset, blobs of about a quarter and
# a twentieth of the image (regions and objects the coarse net gets wrong on unseen drives).
PERTURB_GRIDS = ((1, 1), (2, 6), (6, 20))


def perturb_coarse(coarse_log: torch.Tensor, sigma: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``coarse_log`` (Bx1xHxW) plus a smooth random field of about ``sigma`` std: bilinearly
    enlarged Gaussian noise on the grids of ``PERTURB_GRIDS``, one field per image."""
    if sigma <= 0:
        return coarse_log
    b, _, h, w = coarse_log.shape
    field = torch.zeros_like(coarse_log)
    for gh, gw in PERTURB_GRIDS:
        noise = torch.randn(b, 1, gh, gw, generator=generator, device=coarse_log.device,
                            dtype=coarse_log.dtype)
        field = field + F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=True)
    return coarse_log + field * (sigma / math.sqrt(len(PERTURB_GRIDS)))
