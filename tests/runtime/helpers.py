"""Helpers for run-time tests; a tiny checkpoint `vist-rt run` loads (grey patches, 10x10 grid, random Vi-ST)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from tests.conftest import randomize
from vist_rt.bench.pipeline import free_port  # noqa: F401  (re-exported for the tests)
from vist_rt.features import PatchesExtractor
from vist_rt.model import ViST, ViSTConfig, save_checkpoint

RUN_CFG = ViSTConfig(feature_dim=196, video_dim=8, cells=5, grid=10)
IMAGE = 140  # 10 x 14 px


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `cond` until it holds (True) or `timeout` s pass (its last value)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def make_run_checkpoint(path: Path, channels: str = "grey", seed: int = 1) -> Path:
    """Write the tiny run checkpoint to `path` (`channels="rgb"`: colour patches, where channel order matters;
    `seed`: of its random weights)."""
    torch.manual_seed(0)
    cfg = RUN_CFG if channels == "grey" else dataclasses.replace(RUN_CFG, feature_dim=3 * 196)
    model = randomize(ViST(cfg), seed=seed)
    rf = torch.rand(cfg.cells, cfg.grid, cfg.grid, generator=torch.Generator().manual_seed(2))
    extractor = PatchesExtractor(image_size=IMAGE, channels=channels).spec
    save_checkpoint(path, model, rf=rf, fps=30.0, extractor=extractor, cell_ids=[f"c{i}" for i in range(5)])
    return path


def make_dinov2_checkpoint(folder: Path) -> tuple[Path, Path]:
    """A tiny run checkpoint on DINOv2 ViT-S/14 features (block 0 at 140 px: a 10x10 grid) made with a weights
    file (a replica's Hugging Face folder): (checkpoint, weights folder)."""
    from tests.features.replicas import hf_model, write_hf_folder
    from vist_rt.features import DINOv2Extractor

    weights = write_hf_folder(hf_model(seed=3), folder / "dinov2-small")
    spec = DINOv2Extractor("vits14", weights, block=0, image_size=IMAGE).spec
    cfg = dataclasses.replace(RUN_CFG, feature_dim=384)
    model = randomize(ViST(cfg), seed=4)
    rf = torch.rand(cfg.cells, cfg.grid, cfg.grid, generator=torch.Generator().manual_seed(2))
    path = folder / "dinov2.safetensors"
    save_checkpoint(path, model, rf=rf, fps=30.0, extractor=spec, cell_ids=[f"c{i}" for i in range(5)])
    return path, weights


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """uint8 BGR frames [N,H,W,3] -> an MJPG .avi."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def read_video(path: Path) -> np.ndarray:
    """Every frame of a video as OpenCV decodes it."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return np.stack(out)


def offline_rates(checkpoint: Path, frames: np.ndarray) -> np.ndarray:
    """The offline model on these frames: [T, C]."""
    from vist_rt.features import from_spec
    from vist_rt.model import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    ext = from_spec(ckpt.extractor)
    feats = torch.from_numpy(ext(frames))[None]  # [1, T, N, D]
    with torch.no_grad():
        return ckpt.model(feats, ckpt.rf[None])[0].T.numpy()
