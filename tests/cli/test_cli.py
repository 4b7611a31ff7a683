"""The `vist-rt` command: flags reach the work, mistakes are one line, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vist_rt.cli import main
from vist_rt.model import save_checkpoint

SMALL_TOML = "[model]\nfeature_dim = 12\nvideo_dim = 8\ncells = 5\ngrid = 10\n"


@pytest.fixture
def small_toml(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL_TOML)
    return path


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def bench(args: list[str], tmp_path: Path, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["bench", "temporal", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_bench_temporal_every_flag_is_used(tmp_path: Path, small_toml: Path, restore_threads, capsys) -> None:
    args = ["--config", str(small_toml), "--steps", "7", "--windows", "2", "--window-frames", "16"]
    a = bench([*args, "--warmup", "1", "--batch", "2", "--threads", "1", "--seed", "3"], tmp_path, "a")
    assert a["config"]["cells"] == 5 and a["config"]["feature_dim"] == 12  # --config
    assert a["step_ms"]["n"] == 7  # --steps
    assert a["window_ms"]["n"] == 2  # --windows
    assert a["window_frames"] == 16  # --window-frames
    assert a["warmup"] == 1  # --warmup
    assert a["batch"] == 2 and a["macs_per_step"] % 2 == 0  # --batch
    assert a["machine"]["torch_threads"] == 1  # --threads
    assert a["ratio_p50"] > 0 and a["floor_ms"] > 0 and a["step_over_floor"] > 0
    assert set(a["met"]) == {"ratio", "floor"}
    assert a["command"].startswith("vist-rt bench temporal --config ") and "--seed 3" in a["command"]
    out = capsys.readouterr().out
    assert "streaming step" in out and "floor" in out
    b = bench([*args, "--warmup", "1", "--batch", "2", "--seed", "3"], tmp_path, "b")
    c = bench([*args, "--warmup", "1", "--batch", "2", "--seed", "4"], tmp_path, "c")
    assert b["last_rates_sum"] == a["last_rates_sum"] != c["last_rates_sum"]  # --seed
    d = bench(args, tmp_path, "d")
    assert d["batch"] == 1 and d["warmup"] == 30 and d["backend"] == "torch"  # defaults when the flags are absent
    e = bench([*args, "--warmup", "1", "--batch", "2", "--seed", "3", "--backend", "onnxruntime"], tmp_path, "e")
    assert e["backend"] == "onnxruntime" and "onnxruntime" in e["machine"]  # --backend
    assert abs(e["last_rates_sum"] - a["last_rates_sum"]) <= 1e-4 * max(1.0, abs(a["last_rates_sum"]))


def test_bench_json_path_is_checked_before_measuring(tmp_path: Path, small_toml: Path, capsys) -> None:
    rc = main(["bench", "temporal", "--config", str(small_toml), "--json", str(tmp_path / "no" / "x.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("vist-rt: error: cannot write") and err.count("\n") == 1


def test_bench_bad_config_and_bad_numbers(tmp_path: Path, capsys) -> None:
    assert main(["bench", "temporal", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "temporal", "--steps", "0"])
    assert exit_.value.code == 2
    assert "expected an integer >= 1, got '0'" in capsys.readouterr().err


@pytest.fixture
def checkpoint(tmp_path: Path, make_model, tiny) -> Path:
    return save_checkpoint(
        tmp_path / "m.safetensors", make_model(), rf=torch.rand(5, 10, 10), fps=30, extractor={"kind": "patches"}
    )


def test_checkpoint_info(checkpoint: Path, capsys) -> None:
    assert main(["checkpoint", "info", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "fps" in out and "30.0" in out
    assert main(["checkpoint", "info", str(checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cells"] == 5 and info["extractor"] == {"kind": "patches"} and info["receptive_field_frames"] == 183


def test_user_mistakes_are_one_line_without_traceback(tmp_path: Path, checkpoint: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(checkpoint.read_bytes()[:100])
    for target in (bad, tmp_path / "missing.safetensors"):
        proc = subprocess.run(
            [sys.executable, "-m", "vist_rt", "checkpoint", "info", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("vist-rt: error: ") and proc.stderr.count("\n") == 1


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("vist-rt: error:") and not any("Traceback" in line for line in err)
    return err[-1]


def test_export_refuses_an_existing_out_unless_forced(tmp_path: Path, checkpoint: Path, capsys) -> None:
    out = tmp_path / "victim.onnx"
    out.write_text("not an ONNX file, and not to be lost")
    assert main(["export", "onnx", "temporal", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "exists" in _error(capsys) and out.read_text() == "not an ONNX file, and not to be lost"
    assert main(["export", "onnx", "temporal", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    assert "is a folder" in _error(capsys)
    assert main(["export", "onnx", "temporal", "--checkpoint", str(checkpoint), "--out", str(out), "--force"]) == 0
    assert out.read_bytes()[:2] != b"no"


def test_keys_refuse_to_replace_unless_forced(tmp_path: Path, capsys) -> None:
    pytest.importorskip("zmq.auth")
    keys = tmp_path / "keys"
    assert main(["keys", str(keys)]) == 0
    first = (keys / "server.key").read_bytes()
    assert main(["keys", str(keys)]) == 2
    assert "vist-rt keys --force" in _error(capsys) and (keys / "server.key").read_bytes() == first
    assert main(["keys", str(keys), "--force"]) == 0
    assert (keys / "server.key").read_bytes() != first


def test_path_mistakes_name_the_path(tmp_path: Path, capsys) -> None:
    assert main(["checkpoint", "info", str(tmp_path)]) == 2
    assert "is a folder, not a checkpoint file" in _error(capsys)
    assert main(["listen", "tcp://127.0.0.1:1", "--server-key", str(tmp_path / "nope.key"), "--timeout", "0.1"]) == 2
    assert "server key file not found" in _error(capsys)
