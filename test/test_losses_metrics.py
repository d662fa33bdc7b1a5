"""Scale-invariant loss and Eigen metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from mono_depth_ros.config import EvalConfig
from mono_depth_ros.metrics import compute_errors, garg_crop_mask, mean_scores, score_frame
from training.losses import scale_invariant_loss


def _t(values):
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_loss_hand_computed():
    # d = log(pred) - log(gt) = [log 2, 0, -log 2]; invalid pixel (gt = 0) ignored
    pred = _t([math.log(2.0), 0.0, 0.0, 5.0])
    gt = _t([1.0, 1.0, 2.0, 0.0])
    d = np.array([math.log(2), 0.0, -math.log(2)])
    for lam in (0.0, 0.5, 1.0):
        expected = np.mean(d ** 2) - lam * np.mean(d) ** 2
        assert float(scale_invariant_loss(pred, gt, lam)) == pytest.approx(expected, rel=1e-12)
    # a second case where the mean of d is not zero
    pred = _t([math.log(3.0), math.log(3.0)])
    gt = _t([1.0, 3.0])
    d = np.array([math.log(3), 0.0])
    assert float(scale_invariant_loss(pred, gt, 0.5)) == pytest.approx(
        np.mean(d ** 2) - 0.5 * np.mean(d) ** 2)


def test_loss_invariant_to_global_scale_at_lambda_one():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64) * 50 + 1
    gt[0, 0, :3] = 0  # some invalid pixels
    pred = torch.log(gt * torch.exp(0.3 * torch.randn(2, 1, 8, 8, generator=g,
                                                      dtype=torch.float64)))
    base = scale_invariant_loss(pred, gt, 1.0)
    for k in (0.1, 3.0, 40.0):
        assert float(scale_invariant_loss(pred + math.log(k), gt, 1.0)) == pytest.approx(
            float(base), rel=1e-9)
    # ... and not invariant at lambda = 0.5
    assert float(scale_invariant_loss(pred + math.log(3.0), gt, 0.5)) > float(base) + 0.1


def test_loss_refuses_batch_without_ground_truth():
    with pytest.raises(ValueError, match="no valid"):
        scale_invariant_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_metrics_hand_computed():
    gt = np.array([10.0, 20.0])
    pred = np.array([12.5, 20.0])
    m = compute_errors(gt, pred)
    assert m["abs_rel"] == pytest.approx((2.5 / 10) / 2)
    assert m["sq_rel"] == pytest.approx((6.25 / 10) / 2)
    assert m["rmse"] == pytest.approx(math.sqrt(6.25 / 2))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(1.25) ** 2) / 2))
    assert m["d1"] == 0.5  # 1.25 is not < 1.25
    assert m["d2"] == 1.0 and m["d3"] == 1.0


def test_score_frame_median_scaling_and_crop():
    h, w = 375, 1242
    gt = np.zeros((h, w), np.float32)
    gt[200:300, 100:1100] = np.linspace(5, 60, 1000, dtype=np.float32)[None]
    gt[10, 10] = 30.0  # outside the Garg crop: ignored
    pred = gt * 2.0
    pred[10, 10] = 1000.0
    s = score_frame(pred, gt, EvalConfig())
    assert s.scale == pytest.approx(0.5)
    assert s.scaled["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    g = np.linspace(5, 60, 1000)
    expected_metric = np.mean(np.abs(np.minimum(2 * g, 80.0) - g) / g)  # clamped at 80 m
    assert s.metric["abs_rel"] == pytest.approx(expected_metric, rel=1e-5)
    assert s.valid_pixels == 100 * 1000
    assert garg_crop_mask(h, w)[200, 600] and not garg_crop_mask(h, w)[10, 10]
    agg = mean_scores([s, s])
    assert agg["frames"] == 2 and agg["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_score_frame_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        score_frame(np.ones((4, 4)), np.ones((4, 5)))


def test_perturb_coarse_is_a_smooth_field_of_about_sigma():
    """The fine stage's coarse-depth perturbation: zero sigma changes nothing; otherwise each
    image gets its own smooth field (neighbouring pixels nearly equal) of about sigma std."""
    from training.losses import perturb_coarse

    base = torch.full((64, 1, 48, 160), 2.0)
    assert torch.equal(perturb_coarse(base, 0.0), base)
    torch.manual_seed(0)
    field = perturb_coarse(base, 0.2) - base
    std = float(field.std())
    assert 0.1 < std < 0.25, std
    step = float((field[..., 1:] - field[..., :-1]).abs().mean())
    assert step < 0.1 * std, (step, std)
    per_image = field.flatten(1).mean(1)
    assert float(per_image.std()) > 0.05  # a global offset per image, not one for the batch
