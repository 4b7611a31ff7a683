"""`vist-rt run` flags and TOML settings reach the run's configuration; mistakes are one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vist_rt.cli import build_parser, main
from vist_rt.cli.run import settings
from vist_rt.runtime.config import RunConfig

FLAGS = {
    "--source": ("images:/data/movie", "source", "images:/data/movie"),
    "--checkpoint": ("m.safetensors", "checkpoint", "m.safetensors"),
    "--vit-weights": ("w.pth", "vit_weights", "w.pth"),
    "--backend": ("onnxruntime", "backend", "onnxruntime"),
    "--device": ("cuda", "device", "cuda"),
    "--precision": ("fp16", "precision", "fp16"),
    "--temporal": ("native", "temporal", "native"),
    "--pub": ("ipc:///tmp/x", "pub", "ipc:///tmp/x"),
    "--control": ("tcp://127.0.0.1:6000", "control", "tcp://127.0.0.1:6000"),
    "--max-frames": ("12", "max_frames", 12),
    "--record": ("out.h5", "record", "out.h5"),
    "--curve-keys": ("keys", "curve_keys", "keys"),
    "--fps": ("25", "fps", 25.0),
    "--width": ("640", "width", 640),
    "--height": ("480", "height", 480),
    "--engines": ("eng", "engines", "eng"),
    "--threads": ("1", "threads", 1),
    "--hwm": ("50", "hwm", 50),
    "--meta-every": ("2.5", "meta_every_s", 2.5),
    "--status-every": ("0.5", "status_every_s", 0.5),
    "--tick-cpu": ("1", "tick_cpu", 1),
    "--io-cpu": ("0", "io_cpu", 0),
}
SWITCHES = {
    "--replay": ("replay", True),
    "--lsl": ("lsl", True),
    "--no-dashboard": ("dashboard", False),
    "--allow-remote": ("allow_remote", True),
    "--paused": ("paused", True),
    "--low-latency": ("low_latency", True),
}


def parse(*argv: str) -> RunConfig:
    args = build_parser().parse_args(["run", *argv])
    args.argv = ["run", *argv]
    return settings(args)


def test_every_flag_reaches_the_configuration():
    default = RunConfig()
    for flag, (value, field, want) in FLAGS.items():
        cfg = parse(flag, value)
        assert getattr(cfg, field) == want != getattr(default, field), flag
    for flag, (field, want) in SWITCHES.items():
        cfg = parse(flag, *(("--source", "video:x.avi") if flag == "--replay" else ()))
        assert getattr(cfg, field) == want != getattr(default, field), flag
    cfg = parse("--source", "video:x.avi", "--replay", "--realtime")
    assert cfg.realtime and cfg.mode == "replay"
    cfg = parse("--lockstep")
    assert cfg.lockstep and cfg.source is None and cfg.mode == "lockstep"
    # every RunConfig field has a flag (or is covered above)
    covered = {f for _, f, _ in FLAGS.values()} | {f for f, _ in SWITCHES.values()} | {"realtime", "lockstep"}
    assert covered == {f.name for f in dataclasses.fields(RunConfig)}


def test_toml_then_flags(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text('[run]\nsource = "video:a.avi"\nreplay = true\nmax-frames = 7\nhwm = 10\n')
    cfg = parse("--config", str(toml), "--hwm", "20")
    assert (cfg.source, cfg.replay, cfg.max_frames, cfg.hwm) == ("video:a.avi", True, 7, 20)
    toml.write_text("[run]\nspeed = 3\n")
    with pytest.raises(Exception, match="unknown run setting"):
        parse("--config", str(toml))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--replay", "--lockstep"], "exclude each other"),
        (["--realtime"], "--realtime paces a --replay"),
        (["--temporal", "native", "--device", "cuda"], "--temporal native runs on the CPU"),
        (["--config", "missing.toml"], "cannot read config"),
        (["--checkpoint", "nope.safetensors", "--no-dashboard"], "not found"),
        (["--no-dashboard"], "the demo model is missing"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, monkeypatch, capsys, argv: list[str], message: str):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vist_rt.demo.DEMO_CHECKPOINT", tmp_path / "absent.safetensors")
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vist-rt: error:") and message in err


def test_source_and_lockstep_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--source", "synthetic", "--lockstep"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_replay_needs_a_file_source(run_checkpoint: Path, capsys):
    assert main(["run", "--checkpoint", str(run_checkpoint), "--replay", "--no-dashboard",
                 "--pub", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*"]) == 2  # fmt: skip
    assert "synthetic:replay" in capsys.readouterr().err


def test_without_a_terminal_the_dashboard_falls_back_to_status_lines(run_checkpoint: Path, capsys) -> None:
    from tests.runtime.helpers import free_port

    argv = ["run", "--checkpoint", str(run_checkpoint), "--max-frames", "3", "--status-every", "0.01",
            "--pub", f"tcp://127.0.0.1:{free_port()}", "--control", f"tcp://127.0.0.1:{free_port()}"]  # fmt: skip
    assert main(argv) == 0  # dashboard asked for (the default), stdout is not a TTY under pytest
    out, err = capsys.readouterr()
    assert "no terminal on stdout: running headless" in err
    assert "model: tiny.safetensors: 5 cells at 30 Hz; features: raw grey pixel patches" in out
    assert "[live] tick" in out and "vist-rt run (live): 3 ticks" in out


def test_toml_keys_are_the_flags_names(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        "[run]\nmeta-every = 2\nstatus-every = 0.5\nno-dashboard = true\nlow-latency = true\ntick-cpu = 1\n"
    )
    cfg = parse("--config", str(toml))
    assert (cfg.meta_every_s, cfg.status_every_s, cfg.dashboard, cfg.low_latency) == (2.0, 0.5, False, True)
    assert cfg.tick_cpu == 1 and cfg.io_cpu is None
    toml.write_text("[run]\nno-dashboard = 1\n")
    with pytest.raises(Exception, match="no-dashboard must be true or false"):
        parse("--config", str(toml))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("fps = inf", "fps must be between 0.01 and 1000"),
        ("fps = 1e308", "fps must be between 0.01 and 1000"),
        ("fps = 1e-300", "fps must be between 0.01 and 1000"),
        ("threads = -1", "threads must be >= 1"),
        ("threads = 0", "threads must be >= 1"),
        ("width = 0", "width must be >= 1"),
        ("hwm = 99999999999999", "hwm must be between 1 and 2147483647"),
        ("meta-every = inf", "meta_every_s must be a number of seconds > 0"),
    ],
)
def test_out_of_range_settings_are_refused(tmp_path: Path, toml: str, message: str):
    path = tmp_path / "run.toml"
    path.write_text(f"[run]\n{toml}\n")
    with pytest.raises(Exception, match=message):
        parse("--config", str(path))


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
def test_non_finite_rates_are_refused_by_the_flags(capsys, value: str):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--fps", value])
    assert exc.value.code == 2 and "expected a finite number > 0" in capsys.readouterr().err


def test_device_cuda_without_a_gpu_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    assert main(["run", "--device", "cuda", "--no-dashboard", "--max-frames", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vist-rt: error:") and "no CUDA device is visible" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_sigterm_while_the_model_loads_exits_0_without_running(monkeypatch, capsys):
    import os
    import signal

    class Never:
        def run(self) -> None:
            raise AssertionError("the run must not start after SIGTERM")

        def stop(self) -> None:
            pass

    def slow_load(cfg, log):  # SIGTERM arrives while the model (or an engine) is loading
        os.kill(os.getpid(), signal.SIGTERM)
        return Never()

    monkeypatch.setattr("vist_rt.runtime.pipeline.Runtime.from_config", staticmethod(slow_load))
    old = signal.getsignal(signal.SIGTERM)
    assert main(["run", "--no-dashboard"]) == 0
    assert signal.getsignal(signal.SIGTERM) is old
    assert "stopped by SIGTERM before the run started" in capsys.readouterr().out
