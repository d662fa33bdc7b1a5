"""Test-time flip averaging: the post-processing of Godard et al. 2017 (monodepth2 --post_process).

The network also sees the mirrored image; that prediction, mirrored back, is blended with the
plain one in inverse depth. The two views err differently (what the network learnt is not
left-right symmetric: stereo training, the canvas padding), so the blend is more accurate, at
twice the inference. Near each side edge the blend leans on the view that had that edge on its
right-hand side, which the network handles better (the monodepth2 ramps).
"""

from __future__ import annotations

import numpy as np

EDGE = 0.05  # fraction of the width next to each side taken from one view only, ramping to 0.5


def mirrored_weight(width: int, edge: float = EDGE) -> np.ndarray:
    """Per column, the weight of the mirrored-back prediction (float32, ``width``): 1 over the
    left ``edge`` of the width, 0 over the right one, 0.5 in the middle, linear ramps between
    (over another ``edge``)."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float64)
    left = 1.0 - np.clip((x - edge) / edge, 0.0, 1.0)  # 1 at the left edge, 0 beyond 2 * edge
    right = left[::-1]
    return (left + 0.5 * (1.0 - left - right)).astype(np.float32)


def blend_depth(plain: np.ndarray, mirrored_back: np.ndarray, edge: float = EDGE) -> np.ndarray:
    """Depth (..., width), float32 metres: the two predictions blended in inverse depth."""
    w = mirrored_weight(plain.shape[-1], edge)
    inv = (1.0 - w) / plain + w / mirrored_back
    return (1.0 / inv).astype(np.float32)


def blend_linear(plain: np.ndarray, mirrored_back: np.ndarray, edge: float = EDGE) -> np.ndarray:
    """Any other per-pixel map (the confidence) blended with the same weights."""
    w = mirrored_weight(plain.shape[-1], edge)
    return ((1.0 - w) * plain + w * mirrored_back).astype(np.float32)
