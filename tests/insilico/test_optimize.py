"""In-silico stimuli: the differentiable path equals a run's, objectives really rise, regularizers really bound."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.runtime.helpers import IMAGE, RUN_CFG
from vist_rt.errors import VistError
from vist_rt.features import DINOv2Extractor, from_spec
from vist_rt.insilico import Objective, PixelsToRates, Regularizers, Settings, optimize_stimulus
from vist_rt.model import load_checkpoint, save_checkpoint
from vist_rt.model.vist import ViST


@pytest.fixture(scope="module")
def net(run_checkpoint: Path) -> PixelsToRates:
    ckpt = load_checkpoint(run_checkpoint)
    return PixelsToRates(ckpt, from_spec(ckpt.extractor), (IMAGE, IMAGE))


def offline(ckpt_path: Path, frames: np.ndarray) -> np.ndarray:
    """A run's path: the extractor on uint8 frames (numpy), then the offline model."""
    ckpt = load_checkpoint(ckpt_path)
    ext = from_spec(ckpt.extractor)
    with torch.no_grad():
        return ckpt.model(torch.from_numpy(ext(frames))[None], ckpt.rf[None])[0].T.numpy()


def test_at_the_models_resolution_it_is_exactly_the_runs_path(net: PixelsToRates, run_checkpoint: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (12, IMAGE, IMAGE), dtype=np.uint8)
    with torch.no_grad():
        got = net(torch.from_numpy(frames).float()).numpy()
    np.testing.assert_array_equal(got, offline(run_checkpoint, frames))


def test_other_frame_sizes_go_through_the_same_crop_and_resize(run_checkpoint: Path) -> None:
    ckpt = load_checkpoint(run_checkpoint)
    net = PixelsToRates(ckpt, from_spec(ckpt.extractor), (100, 180))  # centre 100x100, enlarged to 140
    frames = np.random.default_rng(1).integers(0, 256, (12, 100, 180), dtype=np.uint8)
    frames = np.repeat(np.repeat(frames[:, ::4, ::4], 4, axis=1), 4, axis=2)[:, :100, :180]  # smooth-ish
    with torch.no_grad():
        got = net(torch.from_numpy(frames).float()).numpy()
    want = offline(run_checkpoint, frames)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # torch's float bicubic vs OpenCV's on uint8
    frames[:, :, :40] = 0  # outside the centre crop: the model does not see it
    with torch.no_grad():
        np.testing.assert_array_equal(net(torch.from_numpy(frames).float()).numpy(), got)


def test_the_mei_objective_really_rises_and_the_clip_is_displayable(net: PixelsToRates) -> None:
    goal = Objective("mei", (2,), frames=3)
    found = optimize_stimulus(net, goal, Regularizers(), frames=5, settings=Settings(steps=10, lr=0.2, seed=3))
    assert found.stimulus.dtype == np.uint8 and found.stimulus.shape == (5, IMAGE, IMAGE)
    assert found.history[-1] > found.history[0] + 0.5  # it rose, and by a lot on unit-scale rates
    grey = np.full((5, IMAGE, IMAGE), 128.0, np.float32)
    with torch.no_grad():
        start = float(goal(net(torch.from_numpy(grey))))
    assert found.score > start + 0.5  # the uint8 clip itself drives the cell beyond grey


def test_mds_raises_the_target_against_the_others(net: PixelsToRates) -> None:
    goal = Objective("mds", (1,), frames=3)
    found = optimize_stimulus(net, goal, Regularizers(), frames=6, settings=Settings(steps=25, lr=0.1))
    with torch.no_grad():
        rates = net(torch.from_numpy(found.stimulus).float())
    assert found.history[-1] > found.history[0]
    assert float(rates[-3:, 1].mean()) > float(rates[-3:, [0, 2, 3, 4]].mean())


def test_a_target_time_course_is_approached(net: PixelsToRates) -> None:
    trace = tuple(float(v) for v in np.linspace(-1, 2, 6))
    goal = Objective("target", (0,), trace=trace)
    found = optimize_stimulus(net, goal, Regularizers(), frames=6, settings=Settings(steps=30, lr=0.1))
    assert found.history[-1] > found.history[0]  # minus the squared error: the error fell


def test_the_contrast_bound_holds_and_penalties_really_bind(net: PixelsToRates) -> None:
    goal = Objective("mei", (2,), frames=3)
    opts = Settings(steps=12, lr=0.3, seed=1)
    bounded = optimize_stimulus(net, goal, Regularizers(contrast=20), frames=4, settings=opts)
    assert bounded.stimulus.min() >= 128 - 20 and bounded.stimulus.max() <= 128 + 20
    free = optimize_stimulus(net, goal, Regularizers(), frames=4, settings=opts)
    smooth = optimize_stimulus(net, goal, Regularizers(smooth=200.0), frames=4, settings=opts)
    energy = optimize_stimulus(net, goal, Regularizers(energy=2000.0), frames=4, settings=opts)

    def change(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x.astype(np.float32), axis=0)).mean())

    def contrast(x: np.ndarray) -> float:
        return float(np.abs(x.astype(np.float32) - 128).mean())

    assert change(smooth.stimulus) < 0.5 * change(free.stimulus)
    assert contrast(energy.stimulus) < 0.5 * contrast(free.stimulus)


def test_the_stopper_ends_a_run_that_no_longer_improves(net: PixelsToRates) -> None:
    goal = Objective("mei", (2,), frames=3)
    found = optimize_stimulus(net, goal, Regularizers(), frames=4, settings=Settings(steps=500, lr=1e-6, patience=5))
    assert found.stopped == "converged" and found.steps < 500


def test_seeded(net: PixelsToRates) -> None:
    goal, regs = Objective("mei", (0,), frames=2), Regularizers()
    runs = [optimize_stimulus(net, goal, regs, frames=4, settings=Settings(steps=5, seed=s)) for s in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0].stimulus, runs[1].stimulus)
    assert not np.array_equal(runs[0].stimulus, runs[2].stimulus)


def test_rgb_clips(colour_checkpoint: Path) -> None:
    ckpt = load_checkpoint(colour_checkpoint)
    net = PixelsToRates(ckpt, from_spec(ckpt.extractor), (IMAGE, IMAGE))
    frames = np.random.default_rng(2).integers(0, 256, (5, IMAGE, IMAGE, 3), dtype=np.uint8)
    with torch.no_grad():
        got = net(torch.from_numpy(frames).float()).numpy()
    ext = from_spec(ckpt.extractor)
    tokens = ext.tokens_from_pixels(ext.preprocess(frames, color="rgb"))  # the clip is RGB
    with torch.no_grad():
        want = ckpt.model(torch.from_numpy(tokens)[None], ckpt.rf[None])[0].T.numpy()
    np.testing.assert_array_equal(got, want)
    found = optimize_stimulus(net, Objective("mei", (0,), 2), Regularizers(), frames=3, color=True,
                              settings=Settings(steps=4))  # fmt: skip
    assert found.stimulus.shape == (3, IMAGE, IMAGE, 3)


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])
def test_gradients_flow_through_dinov2(tmp_path: Path, precision: str) -> None:
    ext = DINOv2Extractor("vits14", seed=0, block=1, image_size=IMAGE)
    cfg = dataclasses.replace(RUN_CFG, feature_dim=ext.dim)
    torch.manual_seed(0)
    path = tmp_path / "dino.safetensors"
    save_checkpoint(path, ViST(cfg).eval(), rf=torch.rand(cfg.cells, cfg.grid, cfg.grid), fps=30.0,
                    extractor=ext.spec, cell_ids=[f"c{i}" for i in range(cfg.cells)])  # fmt: skip
    ckpt = load_checkpoint(path)
    net = PixelsToRates(ckpt, from_spec(ckpt.extractor, backend="torch"), (IMAGE, IMAGE), precision)
    found = optimize_stimulus(net, Objective("mei", (0,), 2), Regularizers(), frames=2, settings=Settings(steps=3))
    assert found.history[-1] > found.history[0]


def test_bad_requests_are_one_line(net: PixelsToRates, run_checkpoint: Path) -> None:
    with pytest.raises(VistError, match="at least 1 frame"):
        optimize_stimulus(net, Objective("mei", (0,)), Regularizers(), frames=0)
    with pytest.raises(VistError, match=r"needs about .* GiB .* use fewer --frames"):
        optimize_stimulus(net, Objective("mei", (0,)), Regularizers(), frames=10**9)
    with pytest.raises(VistError, match="objective must be one of"):
        Objective("most", (0,))
    with pytest.raises(VistError, match="contrast must be in"):
        Regularizers(contrast=200)
    with pytest.raises(VistError, match="precision must be one of"):
        ckpt = load_checkpoint(run_checkpoint)
        PixelsToRates(ckpt, from_spec(ckpt.extractor), (IMAGE, IMAGE), "fp16")


def test_an_extractor_without_gradients_is_one_line(run_checkpoint: Path) -> None:
    from vist_rt.features import Extractor

    class Frozen(Extractor):  # e.g. features from another program: no torch graph to differentiate
        preprocess = from_spec(load_checkpoint(run_checkpoint).extractor).preprocess

    with pytest.raises(VistError, match="no gradients through the Frozen"):
        PixelsToRates(load_checkpoint(run_checkpoint), Frozen(), (IMAGE, IMAGE))
