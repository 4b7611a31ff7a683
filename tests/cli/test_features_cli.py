"""`vist-rt export onnx features|temporal` and `vist-rt bench features`: flags reach the work, mistakes are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vist_rt.cli import main
from vist_rt.export.onnx import read_meta

TINY_VIT = ["--extractor", "dinov2", "--backbone", "vits14", "--block", "0", "--image-size", "28"]


def test_export_features_writes_the_asked_graph(tmp_path: Path, capsys) -> None:
    out = tmp_path / "vit.onnx"
    assert main(["export", "onnx", "features", *TINY_VIT, "--random-vit", "4", "--norm", "--crop", "letterbox",
                 "--opset", "18", "--out", str(out)]) == 0  # fmt: skip
    meta = read_meta(out, kind="features")
    spec = meta["spec"]
    assert (spec["backbone"], spec["block"], spec["image_size"], spec["norm"]) == ("vits14", 0, 28, True)
    assert spec["weights"] == {"kind": "random", "seed": 4, "init": "scaled"}
    assert spec["preprocess"]["crop"] == "letterbox"
    assert meta["opset"] == 18 and meta["inputs"] == {"pixels": ["batch", 3, 28, 28]}
    assert "NOT DINOv2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "onnx", "features", *TINY_VIT, "--out", "x.onnx"], "no weights for DINOv2 ViT-S/14"),
        (["export", "onnx", "features", "--out", "x.onnx"], "only the dinov2 extractor"),  # the default: patches
        (["features", "d.h5", "--cache", "c", "--backbone", "vitb14"], "--backbone only apply to --extractor dinov2"),
        (["export", "onnx", "features", *TINY_VIT, "--vit-weights", "nope.pth", "--out", "x.onnx"], "not found"),
        (["export", "onnx", "features", "--extractor", "dinov2", "--backbone", "vits14", "--random-vit", "0",
          "--block", "12", "--out", "x"], "out of range"),
        (["export", "onnx", "temporal", "--checkpoint", "nope.safetensors", "--out", "x.onnx"], "not found"),
        (["bench", "features", *TINY_VIT, "--frame-size", "64by48"], "--frame-size must look like"),
        (["bench", "features", *TINY_VIT, "--backends", "torch,openvino"], "--backends must list"),
        (["bench", "features", *TINY_VIT, "--extractor", "patches"], "measures a ViT"),
        (["bench", "features", *TINY_VIT, "--backends", "tensorrt"], "not available"),
        (["bench", "features", *TINY_VIT, "--backends", "torch,torch"], "twice"),
        (["bench", "features", *TINY_VIT, "--backends", "torch,onnxruntime", "--precision", "bf16"],
         "onnxruntime backend runs fp32, int8 on cpu, not bf16"),
        (["bench", "features", *TINY_VIT, "--paths", "torch:fp32,torch:int8"], "torch backend runs fp32, bf16"),
        (["bench", "features", *TINY_VIT, "--paths", "torch"], "--paths items look like torch:fp32"),
        (["bench", "features", *TINY_VIT, "--paths", "torch:fp32,torch:fp32"], "a path twice"),
        (["bench", "features", *TINY_VIT, "--backends", "onnxruntime", "--engines", "afile"], "cannot write"),
        (["export", "onnx", "features", *TINY_VIT, "--random-vit", "0", "--out", "."], "is a folder"),
        (["export", "onnx", "features", *TINY_VIT, "--random-vit", "0", "--out", "afile/x.onnx"], "cannot write"),
        (["export", "onnx", "features", *TINY_VIT, "--random-vit", "0", "--opset", "30", "--out", "x"], "opset"),
        (["export", "onnx", "features", *TINY_VIT, "--random-vit", str(2**70), "--out", "x"], "random seed"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line(tmp_path: Path, monkeypatch, capsys, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file where a folder is expected")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vist-rt: error:") and message in err and "\n" not in err


def test_bench_features_every_flag_is_used(tmp_path: Path, capsys) -> None:
    before = torch.get_num_threads()
    out = tmp_path / "f.json"
    try:
        args = ["bench", "features", *TINY_VIT, "--random-vit", "2", "--frames", "5", "--warmup", "1",
                "--frame-size", "64x48", "--seed", "1", "--threads", "1", "--engines", str(tmp_path / "eng"),
                "--backends", "onnxruntime,torch", "--precision", "fp32", "--accuracy-frames", "20",
                "--json", str(out)]  # fmt: skip
        assert main(args) == 0
        assert torch.get_num_threads() == 1  # --threads
    finally:
        torch.set_num_threads(before)
    r = json.loads(out.read_text())
    assert list(r["backends"]) == ["onnxruntime", "torch"] and "onnxruntime/torch" in r["ratio_p50"]
    assert r["extractor"]["weights"] == {"kind": "random", "seed": 2, "init": "scaled"}
    assert r["extractor"]["image_size"] == 28
    assert r["frame_shape"] == [48, 64] and r["frames"] == 5 and r["warmup"] == 1
    assert all(b["vit_ms"]["n"] == 5 for b in r["backends"].values())
    assert r["max_rel_diff_vs_first"]["torch"] <= 1e-4 and r["floor_ms"]["fp32"] > 0 and r["flops_per_frame"] > 0
    assert r["backends"]["torch"]["accuracy"]["min_cos"] > 0.99999 and r["reference"] == "onnxruntime"
    assert r["backends"]["torch"]["accuracy"]["rates"]["frames"] == 20  # --accuracy-frames
    assert r["accuracy_set"].startswith("the first 20 frames")
    assert any((tmp_path / "eng" / "onnx").glob("*.onnx"))  # --engines
    assert r["command"].startswith("vist-rt bench features")
    assert "ratio onnxruntime/torch" in capsys.readouterr().out


def test_export_temporal_step_of_a_checkpoint(tmp_path: Path, make_model, tiny, capsys) -> None:
    from vist_rt.model import OnnxStreamingViST, StreamingViST, save_checkpoint

    model = make_model()
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, model, rf=rf, fps=30.0, extractor={"kind": "patches"})
    out = tmp_path / "step.onnx"
    assert main(["export", "onnx", "temporal", "--checkpoint", str(ckpt), "--batch", "2", "--out", str(out)]) == 0
    meta = read_meta(out, kind="temporal-step")
    assert meta["spec"]["batch"] == 2 and meta["spec"]["config"] == tiny.to_dict()
    assert meta["inputs"]["features"] == [2, tiny.tokens, tiny.feature_dim] and "rates" in meta["outputs"]
    assert "temporal-step" in capsys.readouterr().out
    # the exported file runs under ONNX Runtime and equals the torch stream
    host = OnnxStreamingViST.open(out, model, rf.expand(2, -1, -1, -1))
    ref = StreamingViST.from_model(model, rf.expand(2, -1, -1, -1))
    feats = torch.randn(40, 2, tiny.tokens, tiny.feature_dim)
    err = max(float((host.step(f) - ref.step(f)).abs().max()) for f in feats)
    assert err <= 1e-4


@pytest.mark.slow
def test_bench_features_with_a_weights_file(tmp_path: Path) -> None:
    from tests.features.replicas import hf_model, write_hf_folder

    folder = write_hf_folder(hf_model(), tmp_path / "hf")
    out = tmp_path / "w.json"
    args = ["bench", "features", *TINY_VIT, "--vit-weights", str(folder), "--frames", "2", "--warmup", "0",
            "--backends", "torch", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["extractor"]["weights"]["kind"] == "file" and r["extractor"]["dinov2"] is True


def test_bench_features_compares_every_native_cpu_path(tmp_path: Path, capsys) -> None:
    from vist_rt.bench.features import native_cpu_paths
    from vist_rt.features.backends import resolve

    out = tmp_path / "p.json"
    args = ["bench", "features", *TINY_VIT, "--frames", "3", "--warmup", "1", "--frame-size", "64x48",
            "--engines", str(tmp_path / "eng"), "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    labels = [p.label for p in native_cpu_paths()]
    assert list(r["backends"]) == labels and labels[0] == "torch:fp32" == r["reference"]
    for label in labels:
        backend, precision = label.split(":")
        b = r["backends"][label]
        assert b["runtime"]["backend"] == backend and b["runtime"]["precision"] == precision
        assert b["floor_ms"] == r["floor_ms"][precision] > 0 and b["accuracy"]["within"]
    assert set(r["matmul_gflops"]) == {label.split(":")[1] for label in labels}
    auto = resolve("auto", "cpu", "auto")
    assert r["auto"]["path"] == f"{auto.backend}:{auto.precision}"
    assert f"precision auto here: {auto.backend}:{auto.precision}" in capsys.readouterr().out
