"""`vist-rt run` end to end on CPU with a tiny model: replay, lock-step, live with a slow feature stage, control."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from tests.runtime.helpers import free_port, offline_rates, read_video, write_video
from vist_rt.errors import VistError
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.engine import Engine
from vist_rt.runtime.pipeline import Runtime


def smooth_frames(n: int, seed: int = 0, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Moving blurred noise, BGR uint8 [n, H, W, 3] (survives MJPG compression with structure)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0] + n, size[1], 3), dtype=np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (9, 9), 3)
    return np.stack([base[i : i + size[0]] for i in range(n)])


def start_run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vist_rt", "run", "--no-dashboard", "--meta-every", "0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def recv_all(sub: zmq.Socket, until: callable, timeout_s: float) -> list[list[bytes]]:
    """Multipart messages until `until(messages)` or the timeout."""
    out: list[list[bytes]] = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not until(out):
        if sub.poll(100):
            out.append(sub.recv_multipart())
    return out


def control(ctx: zmq.Context, endpoint: str, request: dict) -> dict:
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    req.send_json(request)
    assert req.poll(10_000), "no reply from the control socket"
    reply = req.recv_json()
    req.close()
    return reply


@pytest.mark.slow
def test_replay_arrives_whole_in_order_and_equals_the_offline_model(tmp_path: Path, run_checkpoint: Path) -> None:
    video = write_video(tmp_path / "clip.avi", smooth_frames(45), fps=30.0)
    frames = read_video(video)
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)  # a plain pyzmq subscriber, as a rig would have
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub)
    proc = start_run("--source", f"video:{video}", "--replay", "--paused", "--checkpoint", str(run_checkpoint),
                     "--pub", pub, "--control", ctl, "--record", str(tmp_path / "rec.h5"))  # fmt: skip
    try:
        first = recv_all(sub, lambda m: len(m) > 0, 60.0)  # a meta message: we are connected
        assert first and first[0][0] == b"meta", proc.stderr.read() if proc.poll() is not None else "no meta"
        assert control(ctx, ctl, {"cmd": "resume"})["ok"]
        msgs = first + recv_all(sub, lambda m: sum(x[0] == b"rates" for x in m) >= 45, 60.0)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        msgs += recv_all(sub, lambda m: False, 0.3)
    finally:
        proc.kill()
        sub.close()
        ctx.term()
    headers = [json.loads(m[1]) for m in msgs]
    seqs = [h["seq"] for h in headers]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # publisher-wide seq, no gap
    rates = [(json.loads(m[1]), np.frombuffer(m[2], "<f4")) for m in msgs if m[0] == b"rates"]
    assert [h["tick"] for h, _ in rates] == list(range(45))  # every tick once, in order
    assert [h["frame"] for h, _ in rates] == list(range(45))  # 30 fps video at a 30 Hz model: frame k at tick k
    got = np.stack([r for _, r in rates])
    np.testing.assert_allclose(got, offline_rates(run_checkpoint, frames), rtol=0, atol=1e-4)
    from vist_rt.runtime.record import read_recording

    rec = read_recording(tmp_path / "rec.h5")
    np.testing.assert_array_equal(rec["rates"], got)  # the recorder kept what was published, losslessly
    assert (rec["t_recv_ns"] == -1).all()  # recorded by the run itself: never received from a socket


@pytest.mark.slow
def test_replay_resamples_a_faster_video_to_the_model_rate(tmp_path: Path, run_checkpoint: Path) -> None:
    """A 60 fps video at a 30 Hz model: tick k uses frame 2k (the newest at or before k/30 s)."""
    video = write_video(tmp_path / "fast.avi", smooth_frames(40, seed=1), fps=60.0)
    cfg = RunConfig(source=f"video:{video}", replay=True, checkpoint=str(run_checkpoint), dashboard=False,
                    pub=f"tcp://127.0.0.1:{free_port()}", control=f"tcp://127.0.0.1:{free_port()}",
                    record=str(tmp_path / "r.h5"), status_every_s=100.0)  # fmt: skip
    summary = Runtime.from_config(cfg, log=lambda _: None).run()
    from vist_rt.runtime.record import read_recording

    rec = read_recording(tmp_path / "r.h5")
    assert list(rec["frame"]) == list(range(0, 40, 2)) and summary["ticks"] == 20
    frames = read_video(video)[::2]
    np.testing.assert_allclose(rec["rates"], offline_rates(run_checkpoint, frames), rtol=0, atol=1e-4)


def test_lockstep_predict_equals_offline_and_control_commands(tmp_path: Path, run_checkpoint: Path) -> None:
    from vist_rt.client import LockstepClient

    frames = smooth_frames(30, seed=2)
    want = offline_rates(run_checkpoint, frames)
    ctl = f"tcp://127.0.0.1:{free_port()}"
    proc = start_run("--lockstep", "--checkpoint", str(run_checkpoint), "--control", ctl,
                     "--pub", f"tcp://127.0.0.1:{free_port()}", "--record", str(tmp_path / "ls.h5"))  # fmt: skip
    try:
        with LockstepClient(ctl, timeout_ms=60_000) as client:
            got = np.stack([client.predict(f, color="bgr")[1] for f in frames])  # OpenCV's order, as offline
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
            assert client.status()["ticks"] == 30
            client.reset()  # the next outputs equal a fresh stream's
            again = np.stack([client.predict(f, color="bgr")[1] for f in frames[:10]])
            np.testing.assert_allclose(again, want[:10], rtol=0, atol=1e-4)
            client.pause()
            with pytest.raises(VistError, match="paused"):
                client.predict(frames[0])
            client.resume()
            meta = client.meta()
            assert meta["cell_ids"] == [f"c{i}" for i in range(5)] and meta["dinov2"] is False
            with pytest.raises(VistError, match="unknown cmd 'dance'"):
                client.request("dance")  # an error reply; the socket stays usable
            assert client.status()["ticks"] == 40
        ctx = zmq.Context()
        req = ctx.socket(zmq.REQ)  # a plain pyzmq rig sending a malformed predict
        req.setsockopt(zmq.LINGER, 0)
        req.connect(ctl)
        req.send_multipart([json.dumps({"cmd": "predict", "shape": [4, 4], "dtype": "float32"}).encode(), bytes(64)])
        assert req.poll(10_000)
        bad = json.loads(req.recv_multipart()[0])
        assert bad["ok"] is False and "uint8" in bad["error"]
        req.close()
        ctx.term()
    finally:
        proc.terminate()  # SIGTERM: a clean stop, exit 0
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    from vist_rt.runtime.record import read_recording

    rec = read_recording(tmp_path / "ls.h5")  # what was published equals what predict answered
    np.testing.assert_array_equal(rec["rates"][:30], got)
    assert list(rec["tick"]) == list(range(40))


def test_live_with_a_slow_feature_stage_holds_the_clock(tmp_path: Path, run_checkpoint: Path) -> None:
    engine = Engine.from_files(run_checkpoint, log=lambda _: None)
    fast = engine.features

    def slow(image, color="bgr"):  # type: ignore[no-untyped-def]
        time.sleep(0.1)  # a ViT three times slower than the 30 Hz clock
        return fast(image, color)

    engine.features = slow  # type: ignore[method-assign]
    cfg = RunConfig(source="synthetic", checkpoint=str(run_checkpoint), max_frames=60, dashboard=False,
                    pub=f"tcp://127.0.0.1:{free_port()}", control=f"tcp://127.0.0.1:{free_port()}",
                    status_every_s=100.0, record=str(tmp_path / "live.h5"))  # fmt: skip
    rt = Runtime.from_engine(cfg, engine, log=lambda _: None)
    summary = rt.run()
    from vist_rt.runtime.record import read_recording

    rec = read_recording(tmp_path / "live.h5")
    ticks = list(rec["tick"])  # the model clock's ticks: a missed tick is a gap a subscriber can see
    assert ticks == sorted(set(ticks)) and ticks[-1] + 1 == summary["ticks"] + summary["missed"]
    assert list(rec["stale"]).count(True) == summary["stale"]
    assert summary["ticks"] == 60
    # the schedule held 30 Hz: every due tick was served or (on a starved machine) counted as missed
    due_rate = (summary["ticks"] + summary["missed"]) / summary["elapsed_s"]
    assert 27.0 <= due_rate <= 31.0, summary
    # a tick without new features since the last one is stale: only one tick per feature result is fresh
    assert summary["stale"] >= summary["ticks"] - summary["features"] and summary["stale"] >= 10
    assert summary["features"] <= summary["elapsed_s"] * 10 + 2  # the slow stage ran at its own pace


def _live(run_checkpoint: Path, **kw) -> RunConfig:
    return RunConfig(checkpoint=str(run_checkpoint), dashboard=False, pub=f"tcp://127.0.0.1:{free_port()}",
                     control=f"tcp://127.0.0.1:{free_port()}", status_every_s=100.0, **kw)  # fmt: skip


def test_live_stops_when_its_source_ends(run_checkpoint: Path, monkeypatch) -> None:
    from vist_rt.runtime import sources

    monkeypatch.setattr(sources, "make_source", lambda *a, **k: sources.SyntheticSource(max_frames=12, size=(60, 80)))
    logs: list[str] = []
    runtime = Runtime.from_config(_live(run_checkpoint, source="synthetic"), log=logs.append)
    summary = runtime.run()
    assert any("the source ended" in line for line in logs)
    assert 1 <= summary["features"] <= 12 and summary["ticks"] >= 1
    assert runtime.publisher is not None and runtime.publisher.templated == runtime.streams[0].ticks > 0  # rates sent


def failing_engine(checkpoint: Path, message: str, after: int = 3) -> Engine:
    """An engine whose feature stage raises RuntimeError(message) from its (after+1)-th frame on (a dying GPU)."""
    engine = Engine.from_files(checkpoint, log=lambda _: None)
    fast, calls = engine.features, []

    def failing(image, color="bgr"):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > after:
            raise RuntimeError(message)
        return fast(image)

    engine.features = failing  # type: ignore[method-assign]
    return engine


def test_live_stops_with_one_line_when_the_feature_stage_fails(run_checkpoint: Path) -> None:
    engine = failing_engine(run_checkpoint, "CUDA out of memory (simulated)")
    with pytest.raises(VistError, match="the feature stage failed: RuntimeError: CUDA out of memory"):
        Runtime.from_engine(_live(run_checkpoint, source="synthetic"), engine, log=lambda _: None).run()


def test_file_sources_need_replay_and_a_failed_start_leaves_no_recording(tmp_path: Path, run_checkpoint: Path):
    video = write_video(tmp_path / "v.avi", smooth_frames(5), fps=30.0)
    with pytest.raises(VistError, match="play it with --replay"):
        Runtime.from_config(_live(run_checkpoint, source=f"video:{video}"), log=lambda _: None).run()
    rec = tmp_path / "new.h5"
    cfg = _live(run_checkpoint, source=f"video:{tmp_path / 'missing.avi'}", replay=True, record=str(rec))
    with pytest.raises(VistError):
        Runtime.from_config(cfg, log=lambda _: None).run()
    assert not rec.exists()
    rec.write_bytes(b"an earlier experiment")
    with pytest.raises(VistError, match="exists: choose another path"):
        Runtime.from_config(_live(run_checkpoint, record=str(rec)), log=lambda _: None)
    assert rec.read_bytes() == b"an earlier experiment"


@pytest.mark.slow
def test_realtime_replay_is_paced_after_a_pause(tmp_path: Path, run_checkpoint: Path) -> None:
    import threading

    video = write_video(tmp_path / "p.avi", smooth_frames(30, seed=4), fps=30.0)
    cfg = _live(run_checkpoint, source=f"video:{video}", replay=True, realtime=True, paused=True,
                record=str(tmp_path / "p.h5"))  # fmt: skip
    rt = Runtime.from_config(cfg, log=lambda _: None)
    threading.Timer(1.0, lambda: rt.request("resume")).start()  # as a control `resume` (or the p key) would
    rt.run()
    from vist_rt.runtime.record import read_recording

    t_pub = read_recording(tmp_path / "p.h5")["t_pub_ns"] / 1e9
    assert len(t_pub) == 30 and 0.85 <= t_pub[-1] - t_pub[0] <= 1.3  # 29 periods of 1/30 s after the resume


@pytest.mark.slow
def test_golden_replay_is_deterministic_and_lockstep_equals_replay_in_either_colour_order(
    tmp_path: Path, colour_checkpoint: Path
) -> None:
    """Two replays of one colour video give identical numbers; lock-step on the frames each tick used gives them
    too, whether the rig holds them as BGR or as RGB, as long as it says which (a model on colour patches)."""
    import threading

    from vist_rt.client import LockstepClient
    from vist_rt.runtime.record import read_recording

    video = write_video(tmp_path / "g.avi", smooth_frames(40, seed=5), fps=20.0)  # 20 fps at a 30 Hz model
    runs = []
    for name in ("a.h5", "b.h5"):
        cfg = _live(colour_checkpoint, source=f"video:{video}", replay=True, record=str(tmp_path / name))
        Runtime.from_config(cfg, log=lambda _: None).run()
        runs.append(read_recording(tmp_path / name))
    a, b = runs
    np.testing.assert_array_equal(a["rates"], b["rates"])  # replay determinism, bit for bit
    assert list(a["frame"]) == list(b["frame"]) and len(set(a["frame"])) == 40  # upsampled: frames repeat
    frames = read_video(video)[a["frame"]]  # the frame each tick used, BGR as OpenCV decodes it
    cfg = _live(colour_checkpoint, source=None, lockstep=True)
    rt = Runtime.from_config(cfg, log=lambda _: None)
    worker = threading.Thread(target=rt.run)
    worker.start()
    try:
        with LockstepClient(cfg.control, timeout_ms=30_000) as client:
            bgr = np.stack([client.predict(f, color="bgr")[1] for f in frames])
            client.reset()
            rgb = np.stack([client.predict(np.ascontiguousarray(f[..., ::-1]))[1] for f in frames])  # RGB: default
            client.reset()
            swapped = np.stack([client.predict(f)[1] for f in frames[:20]])  # BGR pixels said to be RGB
    finally:
        rt.stop()
        worker.join(timeout=30)
    np.testing.assert_allclose(bgr, a["rates"], rtol=0, atol=1e-6)  # lock-step equals replay
    np.testing.assert_allclose(rgb, a["rates"], rtol=0, atol=1e-6)  # whichever order the rig declares
    assert np.abs(swapped - a["rates"][:20]).max() > 1e-2  # the channel order matters to this model


def test_curve_keys_encrypt_the_stream(tmp_path: Path, run_checkpoint: Path) -> None:
    import threading

    import zmq as _zmq

    from vist_rt.client import Subscriber
    from vist_rt.runtime.publish import make_curve_keys

    if not _zmq.has("curve"):
        pytest.skip("this libzmq has no CurveZMQ")
    public, _ = make_curve_keys(tmp_path / "keys")
    video = write_video(tmp_path / "c.avi", smooth_frames(20, seed=6), fps=30.0)
    cfg = _live(run_checkpoint, source=f"video:{video}", replay=True, paused=True, curve_keys=str(tmp_path / "keys"),
                meta_every_s=0.1)  # fmt: skip
    rt = Runtime.from_config(cfg, log=lambda _: None)
    worker = threading.Thread(target=rt.run)
    worker.start()
    try:
        with Subscriber(cfg.pub, curve_server_key=public, timeout_ms=10_000) as sub:
            first = sub.recv()
            assert first is not None and first.topic == "meta"  # the key holder hears the stream
            rt.request("resume")
            got: list = []
            while len(got) < 20 and (m := sub.recv(5_000)) is not None:
                got += [m] if m.topic == "rates" else []
            assert len(got) == 20 and [m.header["tick"] for m in got] == list(range(20))
        plain = _zmq.Context.instance().socket(_zmq.SUB)  # a client without the key hears nothing
        plain.setsockopt(_zmq.LINGER, 0)
        plain.setsockopt(_zmq.SUBSCRIBE, b"")
        plain.connect(cfg.pub)
        assert plain.poll(500) == 0
        plain.close()
    finally:
        rt.stop()
        worker.join(timeout=30)


def test_replay_on_the_native_temporal_model_equals_torch(tmp_path: Path, run_checkpoint: Path, monkeypatch) -> None:
    """`--temporal native` publishes what the torch temporal model does, and says which one ran."""
    from vist_rt.runtime.record import read_recording

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the kernels get compiled
    video = write_video(tmp_path / "n.avi", smooth_frames(30, seed=7), fps=30.0)
    recs, metas = {}, {}
    for temporal in ("torch", "native"):
        cfg = _live(run_checkpoint, source=f"video:{video}", replay=True, record=str(tmp_path / f"{temporal}.h5"),
                    temporal=temporal)  # fmt: skip
        rt = Runtime.from_config(cfg, log=lambda _: None)
        metas[temporal] = rt.meta["temporal"]
        rt.run()
        recs[temporal] = read_recording(tmp_path / f"{temporal}.h5")["rates"]
    assert metas == {"torch": "torch", "native": "native"}
    assert recs["native"].shape == recs["torch"].shape == (30, 5)
    np.testing.assert_allclose(recs["native"], recs["torch"], rtol=0, atol=1e-5)
    assert list((tmp_path / "cache" / "vist-rt" / "native").glob("vist_native-*.so"))


@pytest.mark.parametrize("waits", ["sleeping", "working"])
def test_live_off_cpu_is_the_part_of_the_tick_its_thread_did_not_run(run_checkpoint: Path, monkeypatch, waits) -> None:
    from vist_rt.runtime.publish import Publisher

    send = Publisher.publish_rates

    def slow(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if waits == "sleeping":  # 8 ms off the CPU inside the wake-up-to-send window
            time.sleep(0.008)
        else:  # 8 ms of the thread's own CPU time there, however long that takes on a busy machine
            end = time.thread_time() + 0.008
            while time.thread_time() < end:
                pass
        return send(self, *args, **kwargs)

    monkeypatch.setattr(Publisher, "publish_rates", slow)
    rt = Runtime.from_config(_live(run_checkpoint, source="synthetic", max_frames=20), log=lambda _: None)
    rt.run()
    overhead, own, off_cpu = (rt.stats.latency[k].values[:20] for k in ("overhead", "overhead_cpu", "off_cpu"))
    assert np.all(overhead >= 8.0)
    if waits == "sleeping":
        assert np.median(off_cpu) >= 7.5 and np.median(own) < 4.0  # asleep: not running, and no CPU time spent
    else:
        assert np.all(own >= 8.0)  # its own CPU time, model compute's excluded
        assert np.median(overhead - off_cpu) >= 7.0  # = CPU time in the window minus the model's wall time
