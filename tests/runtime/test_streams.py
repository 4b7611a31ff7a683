"""Several streams in one run: exactness against one-stream runs, stream-level control and failures, the
config's one-line errors before any model loads."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zmq

from tests.runtime.helpers import RUN_CFG, make_run_checkpoint, wait_for, write_video
from tests.runtime.run_thread import RunThread, request, run_config
from tests.runtime.test_pipeline import smooth_frames
from vist_rt.errors import VistError
from vist_rt.runtime.config import RunConfig, StreamConfig
from vist_rt.runtime.pipeline import Runtime, record_paths
from vist_rt.runtime.record import read_recording


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three clips of different lengths (the longest beyond the 183-frame receptive field), a second checkpoint
    and an RF set that differs from the checkpoint's."""
    d = tmp_path_factory.mktemp("streams")
    rng = np.random.default_rng(5)
    rf = rng.random((RUN_CFG.cells, RUN_CFG.grid, RUN_CFG.grid)).astype(np.float32)
    np.save(d / "rf_b.npy", rf)
    return {
        "a": write_video(d / "a.avi", smooth_frames(200, seed=1, size=(48, 64)), fps=30.0),
        "b": write_video(d / "b.avi", smooth_frames(120, seed=2, size=(40, 72)), fps=30.0),
        "c": write_video(d / "c.avi", smooth_frames(90, seed=3, size=(48, 64)), fps=15.0),
        "rf_b": d / "rf_b.npy",
        "other": make_run_checkpoint(d / "other.safetensors", seed=7),
    }


def _replay(cfg: RunConfig) -> dict[str, Any]:
    lines: list[str] = []
    rt = Runtime.from_config(cfg, log=lines.append)
    summary = rt.run()
    return {"summary": summary, "lines": lines, "recordings": {k: read_recording(p) for k, p in
                                                                record_paths(cfg).items()}}  # fmt: skip


@pytest.mark.slow
def test_each_stream_equals_its_one_stream_run_bit_for_bit(tmp_path: Path, run_checkpoint: Path, media) -> None:
    """Replay, 3 streams: a and b share a checkpoint (b with its own RF set: one batch of 2), c has its own."""
    streams = (
        StreamConfig(name="a", source=f"video:{media['a']}"),
        StreamConfig(name="b", source=f"video:{media['b']}", rf=str(media["rf_b"])),
        StreamConfig(name="c", source=f"video:{media['c']}", checkpoint=str(media["other"])),
    )
    many = _replay(run_config(run_checkpoint, source=None, streams=streams, replay=True,
                              record=str(tmp_path / "many.h5")))  # fmt: skip
    assert sorted(many["recordings"]) == ["a", "b", "c"]
    singles = {
        "a": run_config(run_checkpoint, source=f"video:{media['a']}", replay=True, record=str(tmp_path / "a.h5")),
        "b": run_config(run_checkpoint, source=f"video:{media['b']}", replay=True, rf=str(media["rf_b"]),
                        record=str(tmp_path / "b.h5")),
        "c": run_config(media["other"], source=f"video:{media['c']}", replay=True, record=str(tmp_path / "c.h5")),
    }  # fmt: skip
    for name, cfg in singles.items():
        one = _replay(cfg)["recordings"][None]
        got = many["recordings"][name]
        assert got["rates"].shape == one["rates"].shape and len(one["rates"]) > 0, name
        assert np.array_equal(got["rates"], one["rates"]), f"stream {name} differs from its one-stream run"
        assert np.array_equal(got["frame"], one["frame"]) and np.array_equal(got["tick"], one["tick"])
        headers = got["headers"]
        assert {h["stream"] for h in headers} == {name}
        assert all("stream" not in h for h in one["headers"])  # one stream: the v1 topics as before
    # 200 frames at 30 Hz outlast the others: b (120 frames) and c (90 frames at 15 Hz = 180 ticks) stop alone
    assert len(many["recordings"]["a"]["rates"]) == 200
    assert len(many["recordings"]["b"]["rates"]) == 120
    assert len(many["recordings"]["c"]["rates"]) == 180
    stops = [line for line in many["lines"] if "it stops, the other streams go on" in line]
    assert len(stops) == 2 and stops[0].startswith("stream b") and stops[1].startswith("stream c"), stops
    assert "stream a: the replay is complete; it was the last stream: the run ends" in many["lines"]
    # different RF sets give different rates on the same frames: b's are its own, not the checkpoint's
    b_default = _replay(run_config(run_checkpoint, source=f"video:{media['b']}", replay=True,
                                   record=str(tmp_path / "b0.h5")))["recordings"][None]  # fmt: skip
    assert not np.array_equal(b_default["rates"], many["recordings"]["b"]["rates"])


def test_a_row_reset_makes_that_row_fresh_and_leaves_the_others(run_checkpoint: Path) -> None:
    """RowStreams (the torch temporal model of a several-stream group): exact. The native batched step: the other
    row exact, the reset row to float rounding (its frames sit at another ring phase). The torch batched step:
    to float rounding (a row's rounding depends on B)."""
    from vist_rt.model import load_checkpoint
    from vist_rt.model.native import NativeStreamingViST
    from vist_rt.model.streaming import RowStreams, StreamingViST

    ckpt = load_checkpoint(run_checkpoint)
    rf2 = torch.stack([ckpt.rf, ckpt.rf.flip(-1)])
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(260, 2, RUN_CFG.grid**2, RUN_CFG.feature_dim, generator=gen)
    for cls, exact_reset, exact_other in ((RowStreams, True, True), (NativeStreamingViST, False, True),
                                          (StreamingViST, False, False)):  # fmt: skip
        one = StreamingViST if cls is RowStreams else cls
        both = cls.from_model(ckpt.model, rf2)
        row1, fresh = one.from_model(ckpt.model, rf2[1:]), one.from_model(ckpt.model, rf2[:1])
        for t in range(37):
            both.step(xs[t])
            row1.step(xs[t, 1:])
        both.reset(0)
        worst = [0.0, 0.0]
        for t in range(37, 260):  # beyond the receptive field
            out = both.step(xs[t])
            for k, ref in enumerate((fresh.step(xs[t, :1])[0], row1.step(xs[t, 1:])[0])):
                if (exact_reset, exact_other)[k]:
                    assert torch.equal(out[k], ref), (cls.__name__, k, t)
                worst[k] = max(worst[k], float((out[k] - ref).abs().max()))
        assert max(worst) < 1e-5, (cls.__name__, worst)
        with pytest.raises(VistError, match="stream row 2"):
            both.reset(2)


def _ctl(ctx: zmq.Context, endpoint: str, req: dict[str, Any]) -> dict[str, Any]:
    reply = request(ctx, endpoint, [json.dumps(req).encode()])
    assert reply is not None
    return json.loads(reply[0])


@pytest.mark.slow
def test_live_streams_publish_apart_pause_alone_and_a_failing_source_stops_alone(run_checkpoint: Path, ctx) -> None:
    streams = tuple(StreamConfig(name=name, source=f"synthetic:{i}", width=64, height=48)
                    for i, name in enumerate(("left", "right")))  # fmt: skip
    cfg = run_config(run_checkpoint, source=None, streams=streams)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"rates")  # a v1 reader's prefix: it gets every stream
    sub.connect(cfg.pub)
    run = RunThread(cfg)
    lines: list[str] = []
    run.runtime.log = lines.append
    run.thread.start()
    try:
        assert wait_for(lambda: run.ticks() >= 10, timeout=30.0)
        seen: dict[bytes, int] = {}
        end = time.monotonic() + 5
        while time.monotonic() < end and len(seen) < 2:
            if sub.poll(100):
                parts = sub.recv_multipart()
                seen[parts[0]] = seen.get(parts[0], 0) + 1
        assert set(seen) == {b"rates/left", b"rates/right"}
        assert _ctl(ctx, cfg.control, {"cmd": "pause", "stream": "left"}) == {"ok": True, "paused": True,
                                                                              "stream": "left"}  # fmt: skip
        bad = _ctl(ctx, cfg.control, {"cmd": "pause", "stream": "nope"})
        assert bad["ok"] is False and "no stream 'nope'" in bad["error"]
        before = {s.name: s.ticks for s in run.runtime.streams}
        start = run.ticks()
        assert wait_for(lambda: run.ticks() >= start + 10, timeout=30.0)
        after = {s.name: s.ticks for s in run.runtime.streams}
        assert after["left"] <= before["left"] + 1 and after["right"] >= before["right"] + 9
        st = _ctl(ctx, cfg.control, {"cmd": "status", "stream": "left"})
        assert st["paused"] is True and st["paused_ticks"] >= 9 and st["name"] == "left"
        _ctl(ctx, cfg.control, {"cmd": "resume", "stream": "left"})
        run.runtime.streams[0].capture.failure = "a test's broken camera"  # the left source fails
        assert wait_for(lambda: run.runtime.streams[0].stopped is not None, timeout=10.0)
        start = run.ticks()
        assert wait_for(lambda: run.ticks() >= start + 10, timeout=30.0), "the other stream keeps the clock"
        assert run.thread.is_alive()
        said = "stream left: the source failed: a test's broken camera; it stops"
        assert any(line.startswith(said) for line in lines)
    finally:
        run.runtime.stop()
    summary = run.join()
    assert [s["name"] for s in summary["streams"]] == ["left", "right"]
    # every rates message of the run went out from its stream's template (no header field the general encoder needs)
    assert run.runtime.publisher.templated == sum(s.ticks for s in run.runtime.streams) > 0
    assert summary["streams"][0]["stopped"] and summary["streams"][1]["stopped"] is None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('[[stream]]\nname = "a"\nsource = "synthetic"\ncolour = "rgb"\n', "unknown stream a setting(s): colour"),
        (
            '[[stream]]\nname = "a"\nsource = "synthetic:1"\n[[stream]]\nname = "a"\nsource = "synthetic:2"\n',
            "two streams are named a",
        ),
        (
            '[[stream]]\nname = "a"\nsource = "camera:0"\n[[stream]]\nname = "b"\nsource = "0"\n',
            "streams a and b both read camera 0",
        ),
        ('[[stream]]\nname = "a b"\nsource = "synthetic"\n', "stream name"),
        ('[[stream]]\nname = "a"\n', "stream a has no source"),
        ('[run]\nsource = "synthetic"\n[[stream]]\nname = "a"\nsource = "synthetic"\n', "give each its source"),
    ],
)
def test_bad_stream_tables_are_one_line_errors(tmp_path: Path, body: str, error: str) -> None:
    with pytest.raises(VistError, match=re.escape(error)) as err:
        RunConfig.from_toml(_write(tmp_path, body))
    assert "\n" not in str(err.value)


def test_a_wrong_rf_set_is_refused_before_any_model_loads(tmp_path: Path, run_checkpoint: Path, monkeypatch) -> None:
    import vist_rt.runtime.engine as engine_module

    def no_load(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(engine_module.Engine, "from_files", no_load)
    np.save(tmp_path / "small.npy", np.ones((RUN_CFG.cells, 8, 8), np.float32))
    cfg = RunConfig.from_toml(_write(tmp_path, f'[run]\ncheckpoint = "{run_checkpoint}"\n[[stream]]\nname = "a"\n'
                                               f'source = "synthetic"\nrf = "{tmp_path / "small.npy"}"\n'))  # fmt: skip
    with pytest.raises(VistError, match=r"stream a: RF set .* shape \[5, 8, 8\]; the checkpoint needs \[5, 10, 10\]"):
        Runtime.from_config(cfg, log=lambda _: None)
    cfg = RunConfig.from_toml(_write(tmp_path, f'[run]\ncheckpoint = "{run_checkpoint}"\n[[stream]]\nname = "a"\n'
                                               f'source = "synthetic"\nrf = "{tmp_path / "none.npy"}"\n'))  # fmt: skip
    with pytest.raises(VistError, match="stream a: cannot read RF set"):
        Runtime.from_config(cfg, log=lambda _: None)


def test_cli_refuses_a_bad_rig_config_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    rig = '[[stream]]\nname = "a"\nsource = "camera:1"\n[[stream]]\nname = "b"\nsource = "camera:1"\n'
    path = _write(tmp_path, rig)
    out = subprocess.run([sys.executable, "-m", "vist_rt", "run", "--config", str(path), "--no-dashboard"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "streams a and b both read camera 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_record_paths_name_each_stream(tmp_path: Path) -> None:
    streams = (StreamConfig(name="a", source="synthetic:1"), StreamConfig(name="b", source="synthetic:2"))
    cfg = RunConfig(source=None, streams=streams, record=str(tmp_path / "run.h5"))
    assert record_paths(cfg) == {"a": str(tmp_path / "run.a.h5"), "b": str(tmp_path / "run.b.h5")}
    assert record_paths(RunConfig(record="x.h5")) == {None: "x.h5"}


def _two_streams(run_checkpoint: Path, tmp_path: Path, rig: str, **kw: Any) -> RunConfig:
    streams = (
        StreamConfig(name="cam", source="synthetic:1", width=64, height=48),
        StreamConfig(name="rig", source=rig),
    )
    return run_config(run_checkpoint, source=None, streams=streams, record=str(tmp_path / "run.h5"), meta_every_s=1e3,
                      **kw)  # fmt: skip


@pytest.mark.slow
def test_a_stream_without_frames_does_not_hold_the_clock_and_joins_fresh(
    tmp_path: Path, run_checkpoint: Path, ctx, monkeypatch
) -> None:
    from tests.runtime.helpers import free_port
    from vist_rt.runtime import drivers
    from vist_rt.runtime.frames import encode_frame

    monkeypatch.setattr(drivers, "START_GRACE_S", 0.3)
    port = free_port()
    cfg = _two_streams(run_checkpoint, tmp_path, f"zmq:tcp://127.0.0.1:{port}")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"meta")
    sub.connect(cfg.pub)
    run = RunThread(cfg)
    lines: list[str] = []
    run.runtime.log = lines.append
    resets: list[int | None] = []
    engine = run.runtime.engine
    reset = engine.reset
    monkeypatch.setattr(engine, "reset", lambda row=None: (resets.append(row), reset(row))[1])
    run.thread.start()
    try:
        assert wait_for(lambda: run.ticks() >= 10, timeout=30.0), (
            f"the camera's stream keeps the clock alone (ticks {run.ticks()}, error {run.error!r}, log {lines})"
        )
        assert "stream rig: no frame yet; the clock starts without it (each joins at its first frame)" in lines
        cam, rig = run.runtime.streams
        assert rig.ticks == 0 and cam.ticks >= 10 and resets == []
        time.sleep(0.3)  # the subscriber is connected
        while sub.poll(0):
            sub.recv_multipart()
        assert _ctl(ctx, cfg.control, {"cmd": "meta", "stream": "rig"})["stream"] == "rig"
        topics = []
        while sub.poll(500):
            topics.append(sub.recv_multipart()[0])
        assert topics == [b"meta/rig"], "a stream's meta request publishes that stream's meta only"
        with ctx.socket(zmq.PUSH) as push:
            push.setsockopt(zmq.LINGER, 0)
            push.connect(f"tcp://127.0.0.1:{port}")
            for i in range(5):
                push.send_multipart(encode_frame(np.full((48, 64), 40 * i, np.uint8), index=i))
                time.sleep(0.05)
            assert wait_for(lambda: rig.ticks >= 3, timeout=10.0), "the late stream joins at its first frame"
        assert resets == [1], "its row starts fresh at its first features (the zeros stepped before are forgotten)"
        st = _ctl(ctx, cfg.control, {"cmd": "status"})
        assert [s["record"] for s in st["streams"]] == [str(tmp_path / "run.cam.h5"), str(tmp_path / "run.rig.h5")]
    finally:
        run.runtime.stop()
    run.join()
    rec = read_recording(tmp_path / "run.rig.h5")
    assert rec["frame"][0] == 0 and len(rec["rates"]) >= 3


def _failing(group: Any, bad: Callable[[np.ndarray], bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `group`'s extractor refuse the frames that `bad` picks (a batch with one fails as a whole)."""
    many = group.engine.features_many

    def features_many(frames: list[tuple[np.ndarray, str]]) -> Any:
        if any(bad(image) for image, _ in frames):
            raise VistError("a test's unreadable frame")
        return many(frames)

    monkeypatch.setattr(group.engine, "features_many", features_many)


@pytest.mark.slow
def test_replay_a_bad_frame_stops_its_stream_alone_and_every_stream_failing_fails_the_run(
    tmp_path: Path, run_checkpoint: Path, media, monkeypatch
) -> None:
    streams = (
        StreamConfig(name="a", source=f"video:{media['a']}"),
        StreamConfig(name="b", source=f"video:{media['b']}"),
    )
    cfg = run_config(run_checkpoint, source=None, streams=streams, replay=True, record=str(tmp_path / "r.h5"))
    lines: list[str] = []
    rt = Runtime.from_config(cfg, log=lines.append)
    calls = iter(range(10**6))
    _failing(rt.groups[0], lambda image: image.shape[1] == 72 and next(calls) >= 30, monkeypatch)  # b's 31st frame
    summary = rt.run()
    assert "stream b: frame 30: a test's unreadable frame; it stops, the other streams go on" in lines
    a, b = (read_recording(tmp_path / f"r.{n}.h5") for n in "ab")
    assert len(a["rates"]) == 200 and len(b["rates"]) == 30
    assert summary["streams"][1]["stopped"].startswith("frame 30") and summary["streams"][0]["stopped"]

    cfg = run_config(run_checkpoint, source=None, streams=streams, replay=True, record=str(tmp_path / "f.h5"))
    rt = Runtime.from_config(cfg, log=lines.append)
    calls = iter(range(10**6))
    # b fails at once; a from its 50th call (frame 49: its frame 0 went in twice, in the batch with b's and alone)
    _failing(rt.groups[0], lambda image: image.shape[1] == 72 or next(calls) >= 50, monkeypatch)
    with pytest.raises(VistError, match=r"every stream failed: a: frame 49: .*; b: frame 0: a test's unreadable"):
        rt.run()
    assert len(read_recording(tmp_path / "f.a.h5")["rates"]) == 49  # what was recorded is kept
    assert not (tmp_path / "f.b.h5").exists()  # nothing recorded: no empty file


def test_streams_keep_the_config_order_and_one_checkpoint_file_is_one_group(
    tmp_path: Path, run_checkpoint: Path, media
) -> None:
    again = str(run_checkpoint.parent / "." / run_checkpoint.name)  # the same file, spelt another way
    streams = (
        StreamConfig(name="a", source="synthetic:1"),
        StreamConfig(name="c", source="synthetic:2", checkpoint=str(media["other"])),
        StreamConfig(name="b", source="synthetic:3", checkpoint=again),
    )
    rt = Runtime.from_config(run_config(run_checkpoint, source=None, streams=streams), log=lambda _: None)
    assert [s.name for s in rt.streams] == ["a", "c", "b"]
    assert [[s.name for s in g.streams] for g in rt.groups] == [["a", "b"], ["c"]]
    assert [s["name"] for s in rt.status()["streams"]] == ["a", "c", "b"]


class _EndedCapture:
    """A capture whose source ended after frame seq 5."""

    ended, failure, newest_seq, state = True, None, 5, "ended"


def test_a_paused_stream_whose_source_ended_stops_once_its_frames_are_through(run_checkpoint: Path) -> None:
    streams = (StreamConfig(name="a", source="synthetic:1"), StreamConfig(name="b", source="synthetic:2"))
    lines: list[str] = []
    rt = Runtime.from_config(run_config(run_checkpoint, source=None, streams=streams), log=lines.append)
    a, b = rt.streams
    a.capture = _EndedCapture()
    b.capture = type("Running", (), {"ended": False, "failure": None, "newest_seq": 0, "state": "running"})()
    a.paused = True
    a.processed = 4  # its last frame is still in the feature stage
    assert rt.check_streams() and a.active
    a.processed = 5
    assert rt.check_streams() and not a.active and not a.failed
    assert lines == ["stream a: the source ended (synthetic:1); it stops, the other streams go on"]
    rt.groups[0].failure = "out of memory"  # the shared feature stage fails: one line for the group's streams
    assert not rt.check_streams()
    assert lines[1:] == ["stream b: the feature stage failed: out of memory; it was the last stream: the run ends"]
    assert b.failed


def test_a_recording_that_cannot_be_made_leaves_no_other_file(tmp_path: Path, run_checkpoint: Path, media,
                                                              monkeypatch) -> None:  # fmt: skip
    import vist_rt.runtime.record as record

    made = record.Recorder

    def recorder(path: Any, **kw: Any) -> Any:
        if str(path).endswith(".b.h5"):
            raise VistError("a test's full disk")
        return made(path, **kw)

    monkeypatch.setattr(record, "Recorder", recorder)
    streams = (
        StreamConfig(name="a", source=f"video:{media['a']}"),
        StreamConfig(name="b", source=f"video:{media['b']}"),
    )
    cfg = run_config(run_checkpoint, source=None, streams=streams, replay=True, record=str(tmp_path / "r.h5"))
    with pytest.raises(VistError, match="full disk"):
        Runtime.from_config(cfg, log=lambda _: None).run()
    assert list(tmp_path.iterdir()) == []
