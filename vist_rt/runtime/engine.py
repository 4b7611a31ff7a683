"""The model side of the pipeline: a checkpoint's feature extractor and streaming temporal model."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vist_rt.choices import TEMPORAL
from vist_rt.errors import VistError
from vist_rt.features import Extractor, from_spec
from vist_rt.features.extractor import with_random_weights
from vist_rt.files import read_npy
from vist_rt.model.checkpoint import Checkpoint, load_checkpoint
from vist_rt.model.config import ViSTConfig
from vist_rt.model.inputs import check_rf


def rf_centres(rf: torch.Tensor) -> list[list[float] | None]:
    """Per cell, the centroid of its RF mask `[C, g, g]` as (x, y) in 0..1 of the model's square input."""
    c, g, _ = rf.shape
    w = rf.clamp(min=0).double()
    total = w.sum(dim=(1, 2))
    coords = (torch.arange(g, dtype=torch.float64) + 0.5) / g
    x = (w.sum(dim=1) * coords).sum(dim=1) / total.clamp(min=1e-12)
    y = (w.sum(dim=2) * coords).sum(dim=1) / total.clamp(min=1e-12)
    return [[round(float(x[i]), 4), round(float(y[i]), 4)] if total[i] > 0 else None for i in range(c)]


def read_rf(path: str | Path, cfg: ViSTConfig, *, where: str = "") -> torch.Tensor:
    """An RF set for a checkpoint of config `cfg`: a .npy file [C, g, g] (C cells on the g x g token grid) ->
    float32 tensor; one VistError line (prefixed by `where`) for a missing file, another format or shape."""
    data = read_npy(path, "RF set", "[C, g, g]", where)
    if data.dtype.kind not in "fiu":
        raise VistError(f"{where}RF set {path} must hold one numeric array [C, g, g]")
    g, c = cfg.grid, cfg.cells
    if data.shape != (c, g, g):
        raise VistError(f"{where}RF set {path} has shape {list(data.shape)}; the checkpoint needs [{c}, {g}, {g}] "
                        f"({c} cells on its {g}x{g} token grid)")  # fmt: skip
    if not np.isfinite(data).all():
        raise VistError(f"{where}RF set {path} holds NaN/inf values")
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


class Engine:
    """One checkpoint's model for B streams: `features(image)` / `features_many(frames)` then `step(tokens)`.

    Each stream (row b of the batch) has its own RF set (`rf` [B, C, g, g]; default: the checkpoint's for one
    stream) and its own temporal state; a row's rates equal those of a one-stream engine fed the same tokens.
    """

    def __init__(
        self, ckpt: Checkpoint, extractor: Extractor, *, device: str = "cpu", temporal: str = "torch",
        kernel_cache: str | Path | None = None, rf: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        cfg = ckpt.config
        spec = extractor.spec
        if spec.get("grid") != cfg.grid or spec.get("dim") != cfg.feature_dim:
            raise VistError(
                f"the checkpoint's model reads a {cfg.grid}x{cfg.grid} grid of {cfg.feature_dim}-dim tokens, "
                f"but its extractor gives {spec.get('grid')}x{spec.get('grid')} of {spec.get('dim')}"
            )
        if temporal not in TEMPORAL:
            raise VistError(f"temporal must be one of {', '.join(TEMPORAL)}, got {temporal!r}")
        if temporal == "native" and device != "cpu":
            raise VistError("the native temporal model runs on the CPU; with --device cuda the GPU runs it")
        self.ckpt, self.extractor, self.device, self.temporal = ckpt, extractor, device, temporal
        model = ckpt.model.to(device)
        rf = check_rf(ckpt.rf if rf is None else rf, cfg).to(device)  # [B, C, g, g]
        self.rf = rf.cpu()
        self.streams = int(rf.shape[0])
        if device == "cuda":
            from vist_rt.model.device_stream import DeviceStreamingViST

            self.stream: Any = DeviceStreamingViST.from_model(model, rf)
        elif temporal == "native":
            from vist_rt.model.native import NativeStreamingViST

            self.stream = NativeStreamingViST.from_model(model, rf, cache_dir=kernel_cache)
        elif rf.shape[0] > 1:  # rows one by one: each bit for bit a one-stream run (see RowStreams)
            from vist_rt.model.streaming import RowStreams

            self.stream = RowStreams.from_model(model, rf)
        else:
            from vist_rt.model.streaming import StreamingViST

            self.stream = StreamingViST.from_model(model, rf)
        self.identity = self._identity()
        self._batch: dict[int, np.ndarray] = {}  # preprocessed pixels of n frames [n, 3, S, S], made once per n

    @classmethod
    def from_files(
        cls,
        checkpoint: str | Path,
        *,
        vit_weights: str | None = None,
        random_vit: int | None = None,
        backend: str = "auto",
        device: str = "cpu",
        precision: str = "auto",
        engines: str = "engines",
        threads: int | None = None,
        temporal: str = "torch",
        rf: Sequence[torch.Tensor | None] | None = None,
        log: Callable[[str], None] = print,
    ) -> Engine:
        """Load a checkpoint and rebuild the extractor it was trained with, on the chosen backend; `rf`: one RF
        set [C, g, g] per stream, None for the checkpoint's own (default: one stream, the checkpoint's).

        `random_vit`: the checkpoint's ViT with random weights of this seed instead of its own (for timing where
        the weights are not at hand: the same cost, but the rates are NOT the model's; said in `log` and meta)."""
        from vist_rt.features.backends import require_device

        require_device(device)  # whatever the extractor: the temporal model runs there too
        if threads:
            torch.set_num_threads(threads)  # the temporal stage (and a torch feature backend) run with these
        ckpt = load_checkpoint(checkpoint)
        rfs = None if rf is None else torch.stack([ckpt.rf if r is None else check_rf(r, ckpt.config)[0] for r in rf])
        runtime: dict[str, Any] = {}
        if ckpt.extractor.get("kind") == "dinov2":
            runtime = dict(backend=backend, device=device, precision=precision, cache_dir=engines,
                           threads=threads, log=log)  # fmt: skip
        elif backend not in ("auto", "torch") or precision not in ("auto", "fp32"):
            raise VistError(f"the checkpoint's {ckpt.extractor.get('kind')} extractor has no backend or precision")
        spec = ckpt.extractor
        if random_vit is not None:
            if vit_weights is not None:
                raise VistError("give either --vit-weights or --random-vit, not both")
            spec = with_random_weights(spec, random_vit)
            own = ckpt.extractor["weights"]
            own_name = own.get("name") if own.get("kind") == "file" else f"random seed {own.get('seed')}"
            log(f"ViT weights: RANDOM (seed {random_vit}) in place of the checkpoint's ({own_name}): "
                "the same cost, but the rates are NOT the model's")  # fmt: skip
        extractor = from_spec(spec, weights=vit_weights, **runtime)
        try:
            return cls(ckpt, extractor, device=device, temporal=temporal, rf=rfs)
        except BaseException:
            extractor.close()
            raise

    def _identity(self) -> dict[str, Any]:
        path = self.ckpt.path
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path and path.is_file() else None
        from vist_rt.demo import is_demo

        return {"checkpoint": path.name if path else None, "sha256": digest, "config": self.ckpt.config.to_dict(),
                "demo": is_demo(path)}  # fmt: skip

    def meta(self, row: int = 0) -> dict[str, Any]:
        """What a `meta` message says of the model for stream `row` (see docs/protocol.md)."""
        ext = self.extractor
        return {
            "model": self.identity,
            "cell_ids": self.ckpt.cell_ids,
            "units": self.ckpt.units,
            "fps": self.ckpt.fps,
            "n": self.ckpt.config.cells,
            "rf_centres": rf_centres(self.rf[row]),
            "extractor": {"spec": ext.spec, "described": ext.describe(), "runtime": ext.runtime},
            "dinov2": bool(ext.spec.get("dinov2", False)),
            "device": self.device,
            "temporal": "cuda" if self.device == "cuda" else self.temporal,
        }

    def features(self, image: np.ndarray, color: str = "bgr") -> tuple[np.ndarray, float, float]:
        """uint8 frame (3-channel: in `color` order, "bgr" or "rgb") -> (tokens [1, T, D], preprocess ms, ViT ms)."""
        t0 = time.perf_counter()
        pixels = self.extractor.preprocess(image, color)
        t1 = time.perf_counter()
        tokens = self.extractor.tokens_from_pixels(pixels)
        t2 = time.perf_counter()
        return tokens, (t1 - t0) * 1e3, (t2 - t1) * 1e3

    def features_many(self, frames: Sequence[tuple[np.ndarray, str]]) -> tuple[np.ndarray, float, float]:
        """Several (uint8 frame, colour order) -> (tokens [n, T, D], preprocess ms, ViT ms): one ViT call for all."""
        if len(frames) == 1:
            return self.features(*frames[0])
        t0 = time.perf_counter()
        pixels = self._batch.get(len(frames))
        for i, (image, color) in enumerate(frames):
            one = self.extractor.preprocess(image, color)  # [1, 3, S, S], maybe the extractor's reused buffer
            if pixels is None:
                pixels = self._batch[len(frames)] = np.empty((len(frames), *one.shape[1:]), one.dtype)
            pixels[i] = one[0]
        assert pixels is not None
        t1 = time.perf_counter()
        tokens = self.extractor.tokens_from_pixels(pixels)
        t2 = time.perf_counter()
        return tokens, (t1 - t0) * 1e3, (t2 - t1) * 1e3

    def step(self, tokens: np.ndarray) -> tuple[np.ndarray, float]:
        """One model tick on tokens [B, T, D] (row b: stream b's newest frame) -> (rates [B, C] float32, ms).

        The rates are a new array each tick: ZeroMQ sends its rows without copying, after this returns."""
        t0 = time.perf_counter()
        out = self.stream.step(tokens)
        rates = out.detach().to("cpu", torch.float32).numpy()
        return rates, (time.perf_counter() - t0) * 1e3

    def reset(self, row: int | None = None) -> None:
        """Every stream's temporal state (or stream `row`'s only) back to zero: the next outputs equal a fresh
        stream's."""
        self.stream.reset(None if self.streams == 1 else row)  # one row: exactly a fresh stream (t = 0)

    def close(self) -> None:
        """Release the extractor's backend."""
        self.extractor.close()
