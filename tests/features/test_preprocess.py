"""Preprocessing: colour order, grey input, crop policies, batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from vist_rt.errors import VistError
from vist_rt.features.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor, PreprocessSpec


def _unnormalise(x: np.ndarray) -> np.ndarray:
    """[3, S, S] normalised -> [S, S, 3] RGB in 0..255."""
    return (x.transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255


def test_bgr_becomes_rgb_and_rgb_input_is_kept():
    blue_bgr = np.zeros((50, 80, 3), np.uint8)
    blue_bgr[..., 0] = 255
    rgb = _unnormalise(Preprocessor()(blue_bgr)[0])
    assert rgb[..., 2].min() > 254 and rgb[..., :2].max() < 1
    rgb2 = _unnormalise(Preprocessor(PreprocessSpec(color="rgb"))(blue_bgr)[0])
    assert rgb2[..., 0].min() > 254 and rgb2[..., 1:].max() < 1


def test_grey_equals_the_same_frame_in_colour():
    grey = np.random.default_rng(0).integers(0, 256, (120, 160), dtype=np.uint8)
    p = Preprocessor()
    a = p(grey).copy()
    np.testing.assert_allclose(a, p(np.repeat(grey[..., None], 3, axis=2)), atol=1e-6)
    np.testing.assert_allclose(a, p(grey[None])[:1], atol=1e-6)  # [N,H,W] batch of one
    np.testing.assert_allclose(a, p(grey[None, ..., None]), atol=1e-6)  # [N,H,W,1]
    np.testing.assert_allclose(a, p(grey[..., None]), atol=1e-6)  # [H,W,1]: one frame, not H frames


def test_center_crop_drops_the_sides_letterbox_keeps_them_and_pads_with_the_mean():
    frame = np.full((224, 448), 128, np.uint8)
    frame[:, :50] = 255  # a bright band on the left, outside the centred square
    centre = _unnormalise(Preprocessor()(frame)[0])
    assert np.abs(centre - 128).max() < 1
    box = Preprocessor(PreprocessSpec(crop="letterbox"))(frame)[0]
    assert np.abs(box[:, :56]).max() < 1e-2  # padding rows: the mean colour, i.e. zero after normalisation
    assert _unnormalise(box)[112, :20].min() > 250  # the band is still there, shrunk
    assert box.shape == (3, 224, 224)


def test_any_size_and_batches_match_single_frames():
    rng = np.random.default_rng(1)
    for shape in [(7, 9, 3), (480, 640, 3), (1080, 1920, 3), (224, 224, 3), (100, 50)]:
        frames = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
        p = Preprocessor(PreprocessSpec(image_size=112))
        batch = p(frames)
        assert batch.shape == (3, 3, 112, 112) and batch.dtype == np.float32
        for i in range(3):
            np.testing.assert_array_equal(batch[i], p(frames[i])[0])


def test_single_frame_reuses_its_buffer():
    p = Preprocessor()
    f = np.zeros((60, 80, 3), np.uint8)
    assert p(f) is p(f)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((2, 3, 4, 5, 6), np.uint8), "shape"),
        (np.zeros((2, 4, 4, 2), np.uint8), "shape"),
        (np.zeros((4, 4, 4), np.uint8)[..., :4], "4 channels"),
        (np.zeros((2, 4, 4, 4), np.uint8), "4 channels"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((3, 0, 10), np.uint8), "empty"),
        ([[1, 2]], "numpy"),
    ],
)
def test_bad_frames(frames, match):
    with pytest.raises(VistError, match=match):
        Preprocessor()(frames)


def test_bad_spec():
    with pytest.raises(VistError, match="crop"):
        PreprocessSpec(crop="stretch")
    with pytest.raises(VistError, match="color"):
        PreprocessSpec(color="yuv")


@pytest.mark.parametrize("spec_color", ["bgr", "rgb"])
def test_a_frame_says_its_own_channel_order(spec_color: str) -> None:
    """A rig's RGB frame and the same frame as BGR give the same pixels, whatever order the spec assumes."""
    pre = Preprocessor(PreprocessSpec(image_size=28, color=spec_color))
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    want = pre(rgb, color="rgb").copy()
    np.testing.assert_array_equal(pre(bgr, color="bgr"), want)
    assert np.abs(pre(bgr, color="rgb") - want).max() > 1.0  # declared wrongly: another image
    default = bgr if spec_color == "bgr" else rgb
    np.testing.assert_array_equal(pre(default), want)  # no colour given: the spec's
    grey = rgb[..., 0]
    np.testing.assert_array_equal(pre(grey, color="rgb"), pre(grey, color="bgr"))  # grey has no order
    with pytest.raises(VistError, match="color must be 'bgr' or 'rgb', got 'hsv'"):
        pre(rgb, color="hsv")
