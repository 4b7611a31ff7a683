"""Extractors: block choice, final norm, random-weights honesty, specs that rebuild them, patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.features.replicas import hf_model, write_hf_folder
from vist_rt.errors import VistError
from vist_rt.features import DINOv2Extractor, PatchesExtractor, WeightsError, from_spec
from vist_rt.features.backbones import BACKBONES, build_vit
from vist_rt.features.vit import draw_layer_scales


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 120, 160, 3), dtype=np.uint8)


@pytest.mark.slow
def test_block_index_and_norm_follow_timm_on_the_full_model(frames):
    ext = DINOv2Extractor("vits14", seed=7, block=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        full = build_vit(BACKBONES["vits14"], 224).eval()
        draw_layer_scales(full)  # block by block from the first: the pruned extractor draws the same ones
    pixels = ext.preprocess(frames)
    x = torch.from_numpy(pixels)
    with torch.no_grad():
        for block, norm in ((4, False), (-8, False), (4, True)):
            e = DINOv2Extractor("vits14", seed=7, block=block, norm=norm)
            want = full.forward_intermediates(x, indices=[4], norm=norm, output_fmt="NLC", intermediates_only=True)[0]
            got = e.tokens_from_pixels(pixels)
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
            assert e.spec["block"] == 4 and len(e.module.vit.blocks) == 5  # later blocks are never computed
    assert not np.allclose(ext.tokens_from_pixels(pixels), DINOv2Extractor("vits14", seed=7, block=5)(frames))


def test_numpy_integers_are_blocks_and_seeds_are_checked():
    assert DINOv2Extractor("vits14", seed=0, block=np.int64(-12), image_size=28).spec["block"] == 0
    for seed in (1.7, True, -1, 2**64):
        with pytest.raises(VistError, match="random seed must be an integer"):
            DINOv2Extractor("vits14", seed=seed, image_size=28)


@pytest.mark.parametrize("block", [12, -13, 1.5, True])
def test_block_out_of_range(block):
    with pytest.raises(VistError, match=r"out of range for ViT-S/14 \(12 blocks: 0\.\.11 or -12\.\.-1\)"):
        DINOv2Extractor("vits14", seed=0, block=block)


def test_unknown_backbone():
    with pytest.raises(VistError, match="unknown backbone 'vith14'"):
        DINOv2Extractor("vith14", seed=0)


def test_random_weights_say_so_everywhere(frames):
    a, b = DINOv2Extractor("vits14", seed=3, block=1), DINOv2Extractor("vits14", seed=3, block=1)
    np.testing.assert_array_equal(a(frames), b(frames))  # seeded: reproducible
    assert not np.allclose(a(frames), DINOv2Extractor("vits14", seed=4, block=1)(frames))
    assert a.spec["dinov2"] is False and a.spec["weights"] == {"kind": "random", "seed": 3, "init": "scaled"}
    assert "NOT DINOv2" in a.describe() and "RANDOM" in a.describe()
    json.dumps(a.spec)  # the spec goes into checkpoints and meta messages


def test_random_blocks_change_the_tokens_and_old_random_specs_rebuild(frames):
    from vist_rt.features.accuracy import token_cosines

    def cos(a, b):  # mean per-token cosine of two extractors' tokens
        return float(token_cosines(a(frames), b(frames)).mean())

    first, deep = (DINOv2Extractor("vits14", seed=0, block=b, image_size=56) for b in (0, 5))
    assert cos(first, deep) < 0.98  # every block changes the tokens, as trained DINOv2 blocks do
    flat = [DINOv2Extractor("vits14", seed=0, block=b, image_size=56, random_init="timm") for b in (0, 5)]
    assert cos(*flat) > 0.9999  # timm's 1e-5 layer scales: ~ the patch embedding, whatever the block
    old = {**flat[1].spec, "weights": {"kind": "random", "seed": 0}}  # a spec from before `init` existed
    assert flat[1].spec == old
    np.testing.assert_array_equal(from_spec(old)(frames), flat[1](frames))
    mid = DINOv2Extractor("vits14", seed=0, block=2, image_size=56)  # a block's weights do not depend on the depth
    np.testing.assert_array_equal(
        mid.module.vit.blocks[2].ls1.gamma.detach(), deep.module.vit.blocks[2].ls1.gamma.detach()
    )
    with pytest.raises(VistError, match="random init must be one of scaled, timm"):
        DINOv2Extractor("vits14", seed=0, random_init="xavier")


def test_output_shape_and_dtype_for_every_input_form(frames):
    ext = DINOv2Extractor("vits14", seed=0, block=0, image_size=112)
    cases = [(frames[0], 1), (frames, 2), (frames[0, :, :, 0], 1), (frames[:, :, :, 0], 2)]
    for f, n in cases:
        out = ext(f)
        assert out.dtype == np.float32 and out.shape == (n, 64, 384)


@pytest.mark.slow
def test_spec_rebuilds_the_same_extractor(tmp_path, frames):
    folder = write_hf_folder(hf_model(), tmp_path / "hf")
    ext = DINOv2Extractor("vits14", folder, block=2, image_size=112, norm=True)
    spec = json.loads(json.dumps(ext.spec))
    again = from_spec(spec, weights=folder)
    np.testing.assert_array_equal(again(frames), ext(frames))
    assert "DINOv2 ViT-S/14 block 2 +norm" in ext.describe()
    with pytest.raises(VistError, match="give that file"):
        from_spec(spec)
    other = write_hf_folder(hf_model(seed=9), tmp_path / "other")
    with pytest.raises(WeightsError, match="other weights than the ones"):
        from_spec(spec, weights=other)
    rnd = DINOv2Extractor("vits14", seed=1, block=0, image_size=56)
    np.testing.assert_array_equal(from_spec(rnd.spec)(frames), rnd(frames))
    with pytest.raises(VistError, match="RANDOM weights"):
        from_spec(rnd.spec, weights=folder)
    with pytest.raises(VistError, match="unknown extractor kind"):
        from_spec({"kind": "clip"})
    tampered = {**rnd.spec, "weights_sha256": "0" * 64}  # e.g. timm initialises differently now
    with pytest.raises(VistError, match=r"cannot rebuild the extractor this spec describes.*weights_sha256"):
        from_spec(tampered)
    incomplete = {k: v for k, v in rnd.spec.items() if k != "weights"}
    with pytest.raises(VistError, match="incomplete or malformed"):
        from_spec(incomplete)


def test_patches_are_the_normalised_pixels(frames):
    p = PatchesExtractor(image_size=56)
    out = p(frames)
    assert out.shape == (2, 16, 588) and p.dim == 588 and p.spec["dinov2"] is False
    pix = p.preprocess(frames)
    # token (row 1, col 2) = pixels [:, 14:28, 28:42] flattened channel-major
    np.testing.assert_array_equal(out[1, 1 * 4 + 2], pix[1, :, 14:28, 28:42].reshape(-1))
    grey = PatchesExtractor(image_size=56, channels="grey")
    assert grey(frames).shape == (2, 16, 196)
    np.testing.assert_allclose(from_spec(grey.spec)(frames), grey(frames))
    assert "NOT DINOv2" in grey.describe()
    with pytest.raises(VistError, match="multiple of 14"):
        PatchesExtractor(image_size=100)
