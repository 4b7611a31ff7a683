"""`vist-rt engine key|list|build` on CPU: output, cache status, and one-line errors (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trt.conftest import IDENTITY
from vist_rt.cli import main
from vist_rt.trt.cache import EngineCache, engine_key

OVERRIDES = ["--trt-version", "10.3.0", "--gpu-name", "NVIDIA GeForce RTX 4090", "--compute-capability", "8.9"]
NO_TRT_OR_GPU = importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available()


def key_json(args: list[str], capsys) -> dict:
    assert main(["engine", "key", *args, *OVERRIDES, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_engine_key_without_tensorrt(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    engines = tmp_path / "engines"
    out = key_json([str(tiny_onnx), "--engines", str(engines)], capsys)
    key = engine_key(tiny_onnx, precision="fp16", **IDENTITY)
    assert out["key"] == key.to_dict() and out["digest"] == key.digest and out["filename"] == key.filename
    assert out["status"] == "miss" and out["path"] == str(engines / key.filename)

    EngineCache(engines).store(key, b"engine")
    assert key_json([str(tiny_onnx), "--engines", str(engines)], capsys)["status"] == "hit"
    fp32 = key_json([str(tiny_onnx), "--engines", str(engines), "--precision", "fp32"], capsys)
    assert fp32["status"] == "stale" and fp32["reason"] == "precision fp16 -> fp32"

    other_gpu = [*OVERRIDES[:2], "--gpu-name", "X", "--compute-capability", "9.0"]
    assert main(["engine", "key", str(tiny_onnx), "--engines", str(engines), *other_gpu]) == 0
    text = capsys.readouterr().out
    assert "trt_version" in text and key.digest not in text
    assert "status               stale (GPU NVIDIA GeForce RTX 4090 -> X, compute capability 8.9 -> 9.0)" in text


def test_engine_key_shape_option(tiny_dynamic_onnx: Path, tmp_path: Path, capsys) -> None:
    out = key_json([str(tiny_dynamic_onnx), "--engines", str(tmp_path), "--shape", "pixels=4x3x8x8"], capsys)
    assert out["key"]["profile"] == {"pixels": [[1, 3, 8, 8], [4, 3, 8, 8], [4, 3, 8, 8]]}
    out = key_json(
        [str(tiny_dynamic_onnx), "--engines", str(tmp_path), "--shape", "pixels=1x3x8x8:2x3x8x8:8x3x8x8"], capsys
    )
    assert out["key"]["profile"]["pixels"][2] == [8, 3, 8, 8]


def test_engine_list(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    assert main(["engine", "list", "--engines", str(tmp_path)]) == 0
    assert "no engines in" in capsys.readouterr().out
    key = engine_key(tiny_onnx, precision="fp16", **IDENTITY)
    EngineCache(tmp_path).store(key, b"x" * 2048)
    (tmp_path / "stray[1].engine").write_bytes(b"y")
    assert main(["engine", "list", "--engines", str(tmp_path), "--json"]) == 0
    rows = {r["engine"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[key.filename]["gpu"] == "NVIDIA GeForce RTX 4090" and rows[key.filename]["compute_capability"] == "8.9"
    assert rows[key.filename]["precision"] == "fp16" and rows[key.filename]["problem"] == ""
    assert "no sidecar" in rows["stray[1].engine"]["problem"]
    assert main(["engine", "list", "--engines", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert key.filename in out and "stray[1].engine (unusable" in out and "10.3.0" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["engine", "key", "{tmp}/missing.onnx", *OVERRIDES], "ONNX file not found"),
        (["engine", "key", "{foreign}", *OVERRIDES], "not a readable ONNX file"),
        (["engine", "key", "{onnx}", "--shape", "pixels", *OVERRIDES], "bad --shape 'pixels'"),
        (["engine", "key", "{onnx}", "--shape", "pixels=1x3x9x9", *OVERRIDES], "does not fit the graph's 1x3x8x8"),
        (["engine", "key", "{onnx}", "--shape", "image=1x3x8x8", *OVERRIDES], "not an input of the graph"),
        (
            ["engine", "key", "{onnx}", "--trt-version", "10", "--gpu-name", "A", "--compute-capability", "89"],
            "--compute-capability must be MAJOR.MINOR",
        ),
        (["engine", "build", "{tmp}/missing.onnx"], "ONNX file not found"),
        (["engine", "build", "{foreign}"], "not a readable ONNX file"),
        (["engine", "build", "{onnx}", "--shape", "pixels=1x3x8"], "has 3 dims"),
        (["engine", "build", "{onnx}", "--workspace-gib", "0"], "--workspace-gib must be > 0"),
        (["engine", "list", "--engines", "{tmp}/nowhere"], "engine directory not found"),
    ],
)
def test_mistakes_are_one_line(argv: list[str], message: str, tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"\x00junk")
    argv = [a.format(tmp=tmp_path, foreign=foreign, onnx=tiny_onnx) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vist-rt: error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.skipif(not NO_TRT_OR_GPU, reason="this machine has TensorRT and a GPU; checks the message without them")
def test_build_without_tensorrt_or_gpu_is_one_line(tiny_onnx: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vist_rt", "engine", "build", str(tiny_onnx), "--engines", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("vist-rt: error: ") and proc.stderr.count("\n") == 1
    assert "no CUDA device" in proc.stderr or "vist-rt[tensorrt]" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_engine_build_prints_path_and_whether_built(
    tiny_onnx: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vist_rt.cli.engine as cli_engine
    import vist_rt.trt.build as trt_build

    calls = []

    def fake_build_engine(onnx_path, *, precision, input_shapes, timing_cache_path, workspace_gib, progress):
        calls.append(workspace_gib)
        progress.phase_start("Building engine", None, 2)
        progress.phase_start("Tactic timing", "Building engine", 3)
        assert progress.step_complete("Tactic timing", 2) is True
        progress.phase_finish("Tactic timing")
        progress.phase_finish("Building engine")
        return b"fake engine"

    monkeypatch.setattr(cli_engine, "_identity", lambda args: ("10.3.0", "NVIDIA GeForce RTX 4090", (8, 9)))
    monkeypatch.setattr(trt_build, "build_engine", fake_build_engine)
    argv = ["engine", "build", str(tiny_onnx), "--engines", str(tmp_path), "--workspace-gib", "2"]
    assert main(argv) == 0
    path = tmp_path / engine_key(tiny_onnx, precision="fp16", **IDENTITY).filename
    captured = capsys.readouterr()
    assert captured.out == f"{path}\tbuilt\n" and "building " in captured.err and calls == [2.0]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{path}\treused\n" and f"reusing {path}" in captured.err and len(calls) == 1
    assert main([*argv, "--force"]) == 0
    assert capsys.readouterr().out == f"{path}\tbuilt\n" and len(calls) == 2
