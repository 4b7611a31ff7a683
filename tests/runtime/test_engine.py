"""The engine rebuilds a checkpoint's extractor; `random_vit` swaps in random, seeded ViT weights (for timing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vist_rt.cli import main
from vist_rt.errors import VistError
from vist_rt.features import DINOv2Extractor
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.engine import Engine


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def test_a_dinov2_checkpoint_needs_its_weights_or_an_explicit_random_vit(
    dinov2_checkpoint, frame, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ONNX graphs go to ./engines
    ckpt, weights = dinov2_checkpoint
    with pytest.raises(VistError, match="give that file"):
        Engine.from_files(ckpt, precision="fp32", log=lambda _: None)
    own = Engine.from_files(ckpt, vit_weights=str(weights), precision="fp32", log=lambda _: None)
    said: list[str] = []
    rnd = Engine.from_files(ckpt, random_vit=5, precision="fp32", log=said.append)
    try:
        spec = rnd.meta()["extractor"]["spec"]
        assert spec["weights"] == {"kind": "random", "seed": 5, "init": "scaled"} and spec["dinov2"] is False
        assert {k: spec[k] for k in ("backbone", "block", "image_size", "grid", "dim", "preprocess")} == {
            k: own.extractor.spec[k] for k in ("backbone", "block", "image_size", "grid", "dim", "preprocess")
        }  # the same ViT, so the same cost
        assert "RANDOM" in rnd.extractor.describe()
        assert any("RANDOM (seed 5)" in line and "dinov2-small" in line and "NOT" in line for line in said)
        tokens, _, _ = rnd.features(frame)
        seeded = DINOv2Extractor("vits14", seed=5, block=0, image_size=spec["image_size"])
        np.testing.assert_allclose(tokens, seeded(frame), atol=1e-4)  # the seed asked for, not the checkpoint's
        # weights (on the run's backend, auto: within float rounding of torch's)
        assert not np.allclose(tokens, own.features(frame)[0])
        rates, _ = rnd.step(tokens)
        assert rates.shape == (1, 5) and np.isfinite(rates).all()
    finally:
        own.close()
        rnd.close()


def test_random_vit_is_refused_where_it_cannot_apply(dinov2_checkpoint, run_checkpoint: Path) -> None:
    ckpt, weights = dinov2_checkpoint
    with pytest.raises(VistError, match="either --vit-weights or --random-vit"):
        Engine.from_files(ckpt, vit_weights=str(weights), random_vit=1, log=lambda _: None)
    with pytest.raises(VistError, match="patches, no ViT"):
        Engine.from_files(run_checkpoint, random_vit=1, log=lambda _: None)
    with pytest.raises(VistError, match="either vit_weights or random_vit"):
        RunConfig(vit_weights="w.pth", random_vit=1)
    with pytest.raises(VistError, match="random_vit must be a seed"):
        RunConfig(random_vit=-1)


def test_run_flags_random_vit_and_vit_weights_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--vit-weights", "w.pth", "--random-vit", "1"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_the_vit_leaves_the_tick_thread_a_cpu_unless_threads_are_given(monkeypatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert RunConfig().feature_threads == 3  # the tick thread keeps one CPU for its temporal step
    assert RunConfig(threads=4).feature_threads == 4
    assert RunConfig(device="cuda").feature_threads is None  # the backend's own choice
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {2})
    assert RunConfig().feature_threads == 1


def test_a_live_vit_run_gives_its_backend_the_planned_threads(dinov2_checkpoint, tmp_path: Path, monkeypatch):
    from tests.runtime.run_thread import run_config
    from vist_rt.runtime.pipeline import Runtime

    monkeypatch.chdir(tmp_path)  # ONNX graphs go to ./engines
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2})
    ckpt, _ = dinov2_checkpoint
    said: list[str] = []
    cfg = run_config(ckpt, random_vit=1, backend="onnxruntime", precision="fp32", max_frames=2, source="synthetic")
    runtime = Runtime.from_config(cfg, log=said.append)
    try:
        assert runtime.engine.extractor.backend.session.get_session_options().intra_op_num_threads == 2
        summary = runtime.run()
    finally:
        runtime.engine.close()
    assert summary["vit_threads"] == 2 and summary["torch_threads"] == 1
    assert any("ViT threads 2" in line for line in said)
