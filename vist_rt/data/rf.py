"""RF masks in stimulus pixels -> the model's condition on the token grid.

The geometry is the feature preprocessing's (`vist_rt.features.preprocess`): the frame becomes a square
(`center`: the largest centred square, cropped at the same integer offsets; `letterbox`: the whole frame
scaled into the square and centred, the rest is padding), then the square is cut into `grid x grid`
patches. A token's value is the fraction of its patch's area covered by the mask (area average; padding
counts as uncovered), computed with two separable overlap matrices, so it is the same in training and at
run time.
"""

from __future__ import annotations

import numpy as np

from vist_rt.errors import VistError
from vist_rt.features.preprocess import CROPS


def _overlap(n_pix: int, start: float, step: float, size: float, grid: int) -> np.ndarray:
    """float64 `[grid, n_pix]`: fraction of patch i (of `grid` over [0, size)) covered by pixel p.

    Pixel p spans [start + p*step, start + (p+1)*step) in square coordinates.
    """
    lo = start + step * np.arange(n_pix)
    hi = lo + step
    edges = size / grid * np.arange(grid + 1)
    ov = np.minimum(hi[None, :], edges[1:, None]) - np.maximum(lo[None, :], edges[:-1, None])
    return np.clip(ov, 0.0, None) / (size / grid)


def rf_to_grid(rf: np.ndarray, grid: int = 16, crop: str = "center", image_size: int = 224) -> np.ndarray:
    """RF masks float `[C,H,W]` (values in [0,1]) -> float32 `[C,grid,grid]`, each token the covered fraction.

    `image_size` is the preprocessing's square side; it sets the letterbox's integer rounding exactly as
    `Preprocessor` does (the centre crop does not depend on it).
    """
    rf = np.asarray(rf)
    if rf.ndim != 3 or 0 in rf.shape:
        raise VistError(f"rf masks must be [C,H,W] with C,H,W > 0, got shape {list(rf.shape)}")
    if not np.issubdtype(rf.dtype, np.number) and rf.dtype != np.bool_:
        raise VistError(f"rf masks must be numeric, got {rf.dtype}")
    if crop not in CROPS:
        raise VistError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if not isinstance(grid, int) or grid < 1:
        raise VistError(f"grid must be a positive integer, got {grid!r}")
    _, h, w = rf.shape
    s = float(image_size)
    if crop == "center":
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        masks = rf[:, y : y + side, x : x + side].astype(np.float64)
        ay = _overlap(side, 0.0, s / side, s, grid)
        ax = ay
    else:
        scale = s / max(h, w)
        bw, bh = max(1, round(w * scale)), max(1, round(h * scale))
        y0, x0 = (image_size - bh) // 2, (image_size - bw) // 2
        masks = rf.astype(np.float64)
        ay = _overlap(h, float(y0), bh / h, s, grid)
        ax = _overlap(w, float(x0), bw / w, s, grid)
    out = np.einsum("ip,cpq,jq->cij", ay, masks, ax, optimize=True)
    return out.astype(np.float32)
