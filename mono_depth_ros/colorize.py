"""Depth -> colour images people can look at (near = bright), and side-by-side panels."""

from __future__ import annotations

import numpy as np


def colorize(depth: np.ndarray, min_depth: float = 1.0, max_depth: float = 80.0,
             invalid_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Colourise metres as RGB uint8 with the magma map on log depth (near = bright). A log scale
    gives 1-5 m, 5-20 m and 20-80 m similar shares of the colour map, which suits road scenes.
    NaN, inf and 0 are drawn in ``invalid_color``."""
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    norm = np.zeros_like(d)
    lo, hi = np.log(min_depth), np.log(max_depth)
    norm[valid] = (hi - np.log(np.clip(d[valid], min_depth, max_depth))) / (hi - lo)
    gray = (np.clip(norm, 0.0, 1.0) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(gray, cv2.COLORMAP_MAGMA)[:, :, ::-1].copy()
    rgb[~valid] = invalid_color
    return rgb


def colorize_sparse(depth: np.ndarray, min_depth: float = 1.0, max_depth: float = 80.0,
                    dilate: int = 2) -> np.ndarray:
    """Colourise sparse LiDAR depth, dilating points so they are visible at panel size."""
    import cv2

    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    if dilate > 0:
        # nearest point wins: dilate inverse depth (max) instead of depth
        inv = np.where(d > 0, 1.0 / np.maximum(d, 1e-3), 0).astype(np.float32)
        inv = cv2.dilate(inv, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
        d = np.where(inv > 0, 1.0 / np.maximum(inv, 1e-6), 0)
    return colorize(d, min_depth, max_depth)


def label(image: np.ndarray, text: str) -> np.ndarray:
    """Write a caption in the top-left corner (white on a dark box)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    scale = max(0.5, out.shape[1] / 1400)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 10, th + 12), (0, 0, 0), -1)
    cv2.putText(out, text, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def stack_panels(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Labelled RGB panels of one width stacked vertically."""
    import cv2

    width = panels[0][1].shape[1]
    rows = []
    for text, img in panels:
        if img.shape[1] != width:
            h = round(img.shape[0] * width / img.shape[1])
            img = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
        rows.append(label(img, text))
    return np.vstack(rows)


def write_rgb(path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"could not write {path}")
