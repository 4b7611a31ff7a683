"""`vist-rt run` flags and TOML settings reach the run's configuration; mistakes are one line."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vist_rt.cli import build_parser, main
from vist_rt.cli.run import settings
from vist_rt.runtime.config import RunConfig

FLAGS = {
    "--source": ("images:/data/movie", "source", "images:/data/movie"),
    "--checkpoint": ("m.safetensors", "checkpoint", "m.safetensors"),
    "--vit-weights": ("w.pth", "vit_weights", "w.pth"),
    "--random-vit": ("7", "random_vit", 7),
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
    "--rt-priority": ("20", "rt_priority", 20),
    "--io-cpu": ("0", "io_cpu", 0),
    "--rf": ("off.npy", "rf", "off.npy"),
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
    # every RunConfig field has a flag (or is covered above; streams come from [[stream]] tables only)
    covered = {f for _, f, _ in FLAGS.values()} | {f for f, _ in SWITCHES.values()} | {"realtime", "lockstep"}
    covered.add("streams")
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
        ("width = 0", "width must be 1 to 16384 pixels, got 0"),
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


def test_source_mistakes_are_said_before_any_model_loads(run_checkpoint: Path, monkeypatch, capsys, tmp_path: Path):
    """Finding 6: `video:/nope.mp4` said "is a file: play it with --replay", after the model had loaded."""

    def no_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the model was loaded before the source was checked")

    monkeypatch.setattr("vist_rt.runtime.engine.Engine.from_files", no_load)
    (tmp_path / "folder").mkdir()
    cases = [
        (["--source", "video:/nope.mp4"], "cannot open video /nope.mp4: no such file"),
        (["--source", "video:/nope.mp4", "--replay"], "cannot open video /nope.mp4: no such file"),
        (["--source", "/nope.mp4"], "no such file or folder, and not a source form: '/nope.mp4'"),
        (["--source", f"video:{tmp_path / 'folder'}", "--replay"], "a folder (images:PATH plays its images)"),
        (["--source", "images:/nope", "--replay"], "images: /nope: no such folder"),
        (["--width", "5000", "--height", "100"], "synthetic movie size must be 8 to 4096 pixels each way"),
    ]
    for argv, message in cases:
        assert main(["run", "--checkpoint", str(run_checkpoint), "--no-dashboard", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vist-rt: error:") and message in err[0], (argv, err)


def test_a_huge_frame_size_is_one_line(capsys) -> None:
    """Finding 6: `--width/--height 100000` gave a 40-line traceback (the synthetic movie's allocation)."""
    assert main(["run", "--width", "100000", "--height", "100000", "--no-dashboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vist-rt: error: width must be 1 to 16384 pixels, got 100000"]


def test_a_bad_toml_value_is_refused_even_when_a_flag_overrides_it(tmp_path: Path) -> None:
    """Finding 6: a bad `max-frames` in the TOML passed silently when the flag was also given."""
    path = tmp_path / "run.toml"
    path.write_text("[run]\nmax-frames = 0\n")
    with pytest.raises(Exception, match=r"run\.toml: max_frames must be >= 1, got 0"):
        parse("--config", str(path), "--max-frames", "5")
    path.write_text('[run]\nmax-frames = "many"\n')
    with pytest.raises(Exception, match="run setting max_frames must be int or None, got 'many'"):
        parse("--config", str(path), "--max-frames", "5")
    path.write_text("[run]\nrealtime = true\n")  # a combination the flags complete is fine
    assert parse("--config", str(path), "--source", "video:x.avi", "--replay").realtime


def _recording_run(tmp_path: Path, checkpoint: Path, *extra: str) -> tuple[Any, str, str, Path]:
    from tests.runtime.helpers import free_port

    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "rec.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vist_rt", "run", "--no-dashboard", "--checkpoint", str(checkpoint), "--width", "80",
         "--height", "60", "--pub", pub, "--control", ctl, "--record", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, pub, ctl, out


def _received_rates(pub: str, proc: Any, until: int) -> tuple[Any, Any, list[dict]]:
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"rates")
    sub.connect(pub)
    got: list[dict] = []
    deadline = time.monotonic() + 60
    while len(got) < until and time.monotonic() < deadline and proc.poll() is None:
        if sub.poll(100):
            got.append(json.loads(sub.recv_multipart()[1]))
    assert len(got) >= until, proc.stderr.read() if proc.poll() is not None else "too few messages"
    return ctx, sub, got


def _drain(sub: Any, got: list[dict]) -> None:
    while sub.poll(500):
        got.append(json.loads(sub.recv_multipart()[1]))


@pytest.mark.slow
def test_sighup_stops_a_recording_run_with_every_row_kept(tmp_path: Path, run_checkpoint: Path) -> None:
    """Finding 5: SIGHUP (a closed terminal) killed `vist-rt run --record` and lost ~1 s of rows."""
    import signal

    from vist_rt.runtime.record import read_recording

    proc, pub, _, out = _recording_run(tmp_path, run_checkpoint)
    ctx, sub, got = _received_rates(pub, proc, until=20)
    try:
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        _drain(sub, got)
    finally:
        proc.kill()
        sub.close()
        ctx.term()
    rec = read_recording(out)  # closed cleanly: no journal left
    ticks = int(re.search(r"vist-rt run \(live\): (\d+) ticks", proc.stdout.read()).group(1))
    assert len(rec["rates"]) == ticks and rec["tick"].tolist() == list(range(ticks))  # every published row
    assert {h["seq"] for h in got} <= set(rec["seq"].tolist())


@pytest.mark.slow
def test_sigkill_loses_at_most_the_last_100_ms(tmp_path: Path, run_checkpoint: Path, capsys) -> None:
    """Finding 5: SIGKILL lost up to the last ~1 s of rows; now `vist-rt recover` restores all but < 100 ms."""
    import signal

    from vist_rt.errors import VistError
    from vist_rt.runtime.record import journal_path, read_recording

    proc, pub, _, out = _recording_run(tmp_path, run_checkpoint)
    ctx, sub, got = _received_rates(pub, proc, until=45)
    try:
        killed_ns = time.time_ns()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _drain(sub, got)
    finally:
        proc.kill()
        sub.close()
        ctx.term()
    assert journal_path(out).exists()
    with pytest.raises(VistError, match="has a journal"):
        read_recording(out)  # never silently short
    assert main(["recover", str(out)]) == 0
    assert "recovered" in capsys.readouterr().out and not journal_path(out).exists()
    rec = read_recording(out)
    kept = set(rec["seq"].tolist())
    before = [h for h in got if h["t_pub_ns"] <= killed_ns - 100_000_000]
    assert len(before) >= 30 and all(h["seq"] in kept for h in before)  # nothing older than 100 ms is lost
    assert rec["tick"].tolist() == list(range(len(rec["tick"])))  # whole rows, in order


def test_recover_without_a_journal_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["recover", str(tmp_path / "none.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read" in err[0] and "none.h5.journal" in err[0]
