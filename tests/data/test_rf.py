"""RF masks -> token grid: the feature preprocessing's geometry, area-averaged."""

from __future__ import annotations

import numpy as np
import pytest

from vist_rt.data.rf import rf_to_grid
from vist_rt.errors import VistError


def test_one_patch_center_crop() -> None:
    # 160x200 frame: centre square is rows 0..160, cols 20..180; 16 patches of 10x10 px
    rf = np.zeros((1, 160, 200), np.float32)
    rf[0, 10:20, 20 + 30 : 20 + 40] = 1.0  # patch (1, 3)
    g = rf_to_grid(rf, grid=16, crop="center")
    assert g.shape == (1, 16, 16) and g.dtype == np.float32
    expected = np.zeros((16, 16), np.float32)
    expected[1, 3] = 1.0
    np.testing.assert_allclose(g[0], expected, atol=1e-6)


def test_partial_cover_is_area_fraction() -> None:
    rf = np.zeros((1, 160, 160), np.float32)
    rf[0, 0:5, 0:10] = 1.0  # half of patch (0, 0)
    g = rf_to_grid(rf, grid=16)
    assert g[0, 0, 0] == pytest.approx(0.5)
    assert g[0].sum() == pytest.approx(0.5)


def test_center_crop_drops_outside_letterbox_keeps() -> None:
    rf = np.zeros((1, 160, 200), np.float32)
    rf[0, 70:90, 0:20] = 1.0  # left margin: outside the centre square
    assert rf_to_grid(rf, crop="center").max() == 0.0
    lb = rf_to_grid(rf, crop="letterbox")
    assert lb.max() > 0.5
    # letterbox: 160x200 -> 179x224 (rounded as Preprocessor does); 20x20 px -> 22.375 x 22.4 px, in 14x14 patches
    assert lb.sum() == pytest.approx(20 * (179 / 160) * 20 * (224 / 200) / 14**2, rel=1e-5)
    cols = np.flatnonzero(lb[0].sum(0))
    assert cols.min() == 0  # the frame fills the square's width: the mask touches the left edge


def test_letterbox_full_frame_leaves_padding_empty() -> None:
    g = rf_to_grid(np.ones((1, 120, 160), np.float32), crop="letterbox")
    # 120x160 -> 168x224 inside 224x224, padded 28 px (2 patches) above and below
    assert g[0, :2].max() == 0.0 and g[0, -2:].max() == 0.0
    np.testing.assert_allclose(g[0, 2:14], 1.0, atol=1e-6)


def test_bad_input() -> None:
    with pytest.raises(VistError, match=r"\[C,H,W\]"):
        rf_to_grid(np.zeros((4, 4), np.float32))
    with pytest.raises(VistError, match="crop must be one of"):
        rf_to_grid(np.zeros((1, 4, 4), np.float32), crop="stretch")


def test_matches_the_feature_preprocessing() -> None:
    """A mask drawn as a white-on-black frame, run through Preprocessor and patch-averaged, gives the same grid."""
    from vist_rt.features.preprocess import Preprocessor, PreprocessSpec

    yy, xx = np.mgrid[0:320, 0:400]
    mask = (((yy - 100) ** 2 + (xx - 150) ** 2) < 60**2) | ((xx > 250) & (xx < 330) & (yy > 200))
    g = rf_to_grid(mask[None].astype(np.float32), grid=16, crop="center")[0]
    spec = PreprocessSpec(image_size=224, crop="center")
    x = Preprocessor(spec)((mask * 255).astype(np.uint8))[0, 0]  # red channel, normalised
    img = x * spec.std[0] + spec.mean[0]  # back to [0, 1]
    patches = img.reshape(16, 14, 16, 14).mean(axis=(1, 3))
    np.testing.assert_allclose(g, patches, atol=0.02)
    assert g.max() == pytest.approx(1.0) and 0 < g.sum() < 256
