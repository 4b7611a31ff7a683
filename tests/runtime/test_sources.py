"""Frame sources: frames, time stamps, errors that are counted, errors that stop at open, spec parsing."""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from vist_rt.errors import VistError
from vist_rt.movie import SyntheticMovie
from vist_rt.runtime.sources import (
    CameraSource,
    Frame,
    ImagesSource,
    SyntheticSource,
    VideoSource,
    ZmqFrameSource,
    make_source,
    natural_key,
)

H, W = 48, 64


def write_video(path: Path, n: int = 10, fps: float = 25.0, noise: bool = False) -> Path:
    """An MJPG .avi of n frames; frame i is uniform grey 20*i (or random pixels with noise=True)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    if not writer.isOpened():
        pytest.skip("no MJPG/AVI writer in this OpenCV build")
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8) if noise else np.full((H, W, 3), 20 * i, np.uint8)
        writer.write(img)
    writer.release()
    cap = cv2.VideoCapture(str(path))
    ok = cap.isOpened() and cap.read()[0]
    cap.release()
    if not ok:
        pytest.skip("this OpenCV build cannot read back the MJPG .avi it wrote")
    return path


def drain(source, limit: int = 1000) -> list[Frame]:
    """All frames of a file source, copied."""
    out = []
    for _ in range(limit):
        f = source.read()
        if f is None:
            break
        out.append(Frame(f.index, f.t_ns, f.image.copy()))
    return out


# -- video ---------------------------------------------------------------------------------------


def test_video_frames_and_media_time(tmp_path: Path):
    path = write_video(tmp_path / "clip.avi")
    with VideoSource(path) as src:
        assert src.shape == (H, W, 3) and src.fps == pytest.approx(25.0) and not src.live
        frames = drain(src)
        assert src.ended and src.read() is None and src.errors == 0
        assert "clip.avi" in src.describe()
    assert [f.index for f in frames] == list(range(10))
    assert [f.t_ns for f in frames] == [i * 40_000_000 for i in range(10)]
    assert [round(float(f.image.mean()) / 20) for f in frames] == list(range(10))
    assert not src.is_open


def test_video_unreadable_file_is_one_line_error(tmp_path: Path):
    bad = tmp_path / "notavideo.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VistError, match=r"cannot open video .*notavideo.mp4: not a video or unsupported codec"):
        VideoSource(bad).open()
    with pytest.raises(VistError, match="no such file"):
        VideoSource(tmp_path / "missing.avi").open()


def test_video_decode_failure_mid_file_ends_cleanly_and_is_counted(tmp_path: Path):
    path = write_video(tmp_path / "noise.avi", n=20, noise=True)
    data = bytearray(path.read_bytes())
    a = len(data) // 3
    data[a : a + 30000] = np.random.default_rng(1).integers(0, 256, 30000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with VideoSource(path) as src:
        frames = drain(src)
        assert src.ended
    if len(frames) == 20:
        pytest.skip("this decoder got through the corrupted stretch")
    assert src.errors == 1 and "decoding failed" in src.last_error


def test_video_without_container_time_falls_back_to_index_over_fps(tmp_path: Path, monkeypatch):
    class NoStamps(FakeCapture):
        def get(self, prop: int) -> float:
            return {cv2.CAP_PROP_FPS: 20.0, cv2.CAP_PROP_FRAME_COUNT: 3.0}.get(prop, 0.0)  # POS_MSEC: 0

    monkeypatch.setattr(cv2, "VideoCapture", lambda path: NoStamps(True, 3))
    path = tmp_path / "x.avi"
    path.write_bytes(b"x")
    with VideoSource(path) as src:
        frames = drain(src)
    assert [f.t_ns for f in frames] == [0, 50_000_000, 100_000_000] and src.errors == 0


# -- image folder --------------------------------------------------------------------------------


def test_natural_sort():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame2b.png"]
    assert sorted(names, key=natural_key) == ["Frame1.png", "frame2.png", "frame2b.png", "frame10.png"]


def test_images_in_natural_order_with_bad_files_skipped_and_counted(tmp_path: Path):
    for i in (1, 2, 10, 11):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((H, W), 10 * i, np.uint8))
    (tmp_path / "frame3.png").write_bytes(b"garbage")  # corrupt
    cv2.imwrite(str(tmp_path / "frame4.jpg"), np.zeros((H + 1, W), np.uint8))  # another size
    (tmp_path / "notes.txt").write_text("ignored")
    with ImagesSource(tmp_path, fps=10.0) as src:
        assert src.shape == (H, W) and src.fps == 10.0
        frames = drain(src)
        assert src.ended
        assert src.errors == 2 and "frame4.jpg" in src.last_error and "differs" in src.last_error
    # index = position in the sorted list: frame1, frame2, frame3 (bad), frame4 (bad), frame10, frame11
    assert [f.index for f in frames] == [0, 1, 4, 5]
    assert [f.t_ns for f in frames] == [0, 100_000_000, 400_000_000, 500_000_000]
    assert [int(f.image[0, 0]) for f in frames] == [10, 20, 100, 110]


def test_images_colour_and_errors(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "a.bmp"), np.zeros((H, W, 3), np.uint8))
    with ImagesSource(tmp_path) as src:
        assert src.shape == (H, W, 3)
        assert src.read().image.shape == (H, W, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VistError, match="no png/jpg"):
        ImagesSource(empty).open()
    with pytest.raises(VistError, match=r"nope: no such folder$"):
        ImagesSource(tmp_path / "nope").open()
    with pytest.raises(VistError, match="is a file, not a folder"):
        ImagesSource(tmp_path / "a.bmp").open()
    (empty / "x.png").write_bytes(b"bad")
    with pytest.raises(VistError, match="none of the 1"):
        ImagesSource(empty).open()
    with pytest.raises(VistError):
        ImagesSource(tmp_path, fps=0)


# -- synthetic -----------------------------------------------------------------------------------


def test_synthetic_replay_is_the_movie_with_media_time():
    with SyntheticSource(seed=2, fps=20.0, size=(H, W), live=False, max_frames=5) as src:
        frames = drain(src)
        assert src.ended and not src.live
    movie = SyntheticMovie(seed=2, size=(H, W), fps=20.0)
    assert [f.index for f in frames] == list(range(5))
    assert [f.t_ns for f in frames] == [i * 50_000_000 for i in range(5)]
    for f in frames:
        np.testing.assert_array_equal(f.image, movie.frame(f.index))


def test_synthetic_live_is_paced_with_wall_clock_stamps():
    fps = 100.0
    with SyntheticSource(fps=fps, size=(H, W), live=True, max_frames=8) as src:
        t0 = time.perf_counter()
        before = time.time_ns()
        frames = drain(src)
        elapsed = time.perf_counter() - t0
    assert [f.index for f in frames] == list(range(8))
    assert elapsed >= 6.5 / fps  # frame 7 is due 70 ms after open
    assert all(before - 50_000_000 <= f.t_ns <= time.time_ns() for f in frames)
    assert all(b.t_ns > a.t_ns for a, b in itertools.pairwise(frames))


def test_synthetic_live_timeout_and_late_reader_skips():
    with SyntheticSource(fps=2.0, size=(H, W), live=True) as src:
        assert src.read().index == 0  # due at once
        t0 = time.perf_counter()
        assert src.read(timeout=0.05) is None and not src.ended  # frame 1 is due in 0.5 s
        assert time.perf_counter() - t0 < 0.4
    with SyntheticSource(fps=100.0, size=(H, W), live=True) as src:
        time.sleep(0.1)  # ~10 frames late
        f = src.read()
        assert f.index >= 5 and src.skipped == f.index


# -- camera --------------------------------------------------------------------------------------


class FakeCapture:
    """A cv2.VideoCapture stand-in: opens or not, then gives `frames` frames and fails."""

    def __init__(self, opens: bool, frames: int, shape=(H, W, 3)) -> None:
        self.opens, self.left, self.shape = opens, frames, shape
        self.released = False
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return self.opens

    def read(self, image=None):
        if not self.opens or self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full(self.shape, self.left, np.uint8)

    def release(self) -> None:
        self.released = True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(round(s, 6))
        self.now += s


def test_camera_invalid_index_is_one_line_error():
    with pytest.raises(VistError, match=r"^camera 99 not available$"):
        CameraSource(99).open()


def test_camera_reconnects_with_exponential_backoff():
    script = [FakeCapture(True, 4)] + [FakeCapture(False, 0) for _ in range(6)] + [FakeCapture(True, 100)]
    made: list[FakeCapture] = []

    def factory(target):
        assert target == 0
        made.append(script[len(made)])
        return made[-1]

    t = FakeTime()
    cam = CameraSource(0, width=320, height=240, fps=60, capture_factory=factory, clock=t.clock, sleep=t.sleep)
    with cam:
        assert cam.live and cam.shape == (H, W, 3) and cam.fps == 60
        assert made[0].props[cv2.CAP_PROP_FRAME_WIDTH] == 320 and made[0].props[cv2.CAP_PROP_FRAME_HEIGHT] == 240
        assert [cam.read().index for _ in range(4)] == [0, 1, 2, 3]
        assert cam.read() is None  # unplugged
        assert cam.state == "reconnecting (attempt 1)" and cam.errors == 1 and made[0].released
        assert cam.read(timeout=0.1) is None and t.sleeps == [0.1]  # waits at most the timeout
        got = None
        for _ in range(20):
            got = cam.read(timeout=10.0)
            if got is not None:
                break
        assert got is not None and got.index == 4 and cam.state == "running" and cam.reconnects == 1
        # 0.5 (first wait, 0.1 already spent), 1, 2, 4, 5, 5, 5: doubling, capped at 5 s
        assert t.sleeps == [0.1, 0.4, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
        assert cam.errors == 7 and "camera 0" in cam.last_error
        assert cam.read().index == 5
    assert made[-1].released and cam.state == "closed"


def test_camera_that_opens_but_gives_nothing_is_not_available():
    with pytest.raises(VistError, match="camera rtsp://x/y not available"):
        CameraSource("rtsp://x/y", capture_factory=lambda t: FakeCapture(True, 0)).open()


# -- zmq -----------------------------------------------------------------------------------------


def read_frames(src: ZmqFrameSource, n: int, deadline_s: float = 5.0) -> list[Frame]:
    out: list[Frame] = []
    end = time.monotonic() + deadline_s
    while len(out) < n and time.monotonic() < end:
        f = src.read(timeout=0.2)
        if f is not None:
            out.append(f)
    return out


def test_zmq_good_and_malformed_messages():
    ctx = zmq.Context()
    try:
        with ZmqFrameSource("tcp://127.0.0.1:0", context=ctx) as src, ctx.socket(zmq.PUSH) as push:
            assert src.endpoint.startswith("tcp://127.0.0.1:") and not src.endpoint.endswith(":0")
            assert src.shape is None and src.live
            push.setsockopt(zmq.LINGER, 0)
            push.connect(src.endpoint)
            img = np.arange(H * W, dtype=np.uint8).reshape(H, W)

            def good(**extra) -> list[bytes]:
                return [json.dumps({"shape": [H, W], "dtype": "uint8", **extra}).encode(), img.tobytes()]

            push.send_multipart(good(t_ns=123, index=7))
            for bad in (
                [b"only one part"],
                [b"{not json", img.tobytes()],
                [b"[1, 2]", img.tobytes()],
                [json.dumps({"shape": [H], "dtype": "uint8"}).encode(), img.tobytes()],
                [json.dumps({"shape": [H, W], "dtype": "float32"}).encode(), img.tobytes()],
                [json.dumps({"shape": [H, W]}).encode(), img.tobytes()[:-1]],
                [json.dumps({"shape": [H, W], "t_ns": "soon"}).encode(), img.tobytes()],
                [json.dumps({"shape": [H + 1, W]}).encode(), bytes((H + 1) * W)],  # another shape than the stream
                [b"a", b"b", b"c"],
            ):
                push.send_multipart(bad)
            push.send_multipart(good())
            push.send_multipart([json.dumps({"shape": [H, W, 1]}).encode(), img.tobytes()])
            before = time.time_ns()
            frames = read_frames(src, 3)
            assert len(frames) == 3
            assert (frames[0].index, frames[0].t_ns) == (7, 123)
            assert frames[1].index == 1 and frames[1].t_ns >= before  # default stamp: time of receipt
            for f in frames:
                np.testing.assert_array_equal(f.image, img)
            assert src.shape == (H, W)
            assert src.errors == 9 and src.received == 12
            assert "dropped" in src.last_error
            assert src.read(timeout=0.05) is None and not src.ended  # live: nothing yet, not the end
    finally:
        ctx.term()


def test_zmq_refuses_remote_bind_unless_allowed():
    with pytest.raises(VistError, match="not a loopback address"):
        ZmqFrameSource("tcp://0.0.0.0:5999")
    with pytest.raises(VistError, match="not a loopback"):
        ZmqFrameSource("tcp://*:0")
    ZmqFrameSource("tcp://0.0.0.0:5999", allow_remote=True)  # constructed; not bound
    ZmqFrameSource("tcp://[::1]:0")
    ZmqFrameSource("tcp://localhost:0")
    ZmqFrameSource("ipc:///tmp/x")


def test_zmq_bind_failure_is_one_line_error():
    ctx = zmq.Context()
    try:
        with ZmqFrameSource("tcp://127.0.0.1:0", context=ctx) as first, pytest.raises(VistError, match="cannot bind"):
            ZmqFrameSource(first.endpoint, context=ctx).open()
    finally:
        ctx.term()


# -- spec strings --------------------------------------------------------------------------------


def test_make_source_every_form(tmp_path: Path):
    cam = make_source("camera:2", width=640, height=480, fps=60)
    assert isinstance(cam, CameraSource) and cam.target == 2 and (cam.width, cam.height) == (640, 480)
    assert make_source("camera").target == 0 and make_source("3").target == 3
    for url in ("rtsp://10.0.0.2/stream", "http://cam/x.mjpg", "https://cam/x", "udp://@:1234"):
        src = make_source(url)
        assert isinstance(src, CameraSource) and src.target == url and src.live
    video = make_source("video:" + str(tmp_path / "a.avi"))
    assert isinstance(video, VideoSource) and video.path == tmp_path / "a.avi"
    images = make_source(f"images:{tmp_path}")
    assert isinstance(images, ImagesSource) and images.fps == 30.0
    assert make_source(f"images:{tmp_path}", fps=12.5).fps == 12.5
    syn = make_source("synthetic")
    assert isinstance(syn, SyntheticSource) and syn.live and syn.seed == 0 and syn.size == (480, 640)
    syn = make_source("synthetic:7", fps=60, width=320, height=240, seed=1)
    assert syn.seed == 7 and syn.fps == 60 and syn.size == (240, 320)
    assert make_source("synthetic", seed=4).seed == 4
    replay = make_source("synthetic:5:replay")
    assert not replay.live and replay.seed == 5 and not make_source("synthetic:replay").live
    z = make_source("zmq:tcp://127.0.0.1:0")
    assert isinstance(z, ZmqFrameSource) and z.live
    assert make_source("zmq").endpoint == "tcp://127.0.0.1:5558"
    with pytest.raises(VistError, match="loopback"):
        make_source("zmq:tcp://0.0.0.0:0")
    assert isinstance(make_source("zmq:tcp://0.0.0.0:0", allow_remote=True), ZmqFrameSource)
    # bare existing paths
    assert isinstance(make_source(str(tmp_path)), ImagesSource)
    f = tmp_path / "clip.avi"
    f.write_bytes(b"x")
    assert isinstance(make_source(str(f)), VideoSource)


@pytest.mark.parametrize(
    "spec", ["webcam", "camera:front", "video:", "images:", "synthetic:fast", "file.mp4", "", "tcp://127.0.0.1:1"]
)
def test_make_source_errors_list_the_accepted_forms(spec: str):
    with pytest.raises(VistError) as err:
        make_source(spec)
    msg = str(err.value)
    assert "\n" not in msg and "camera:N" in msg and "images:DIR" in msg and "zmq:ENDPOINT" in msg


def test_read_before_open_is_an_error():
    with pytest.raises(VistError, match="before open"):
        SyntheticSource(size=(H, W)).read()


def test_zmq_source_reports_the_port_it_bound_and_binds_ipv6_loopback() -> None:
    import socket

    src = make_source("zmq:tcp://127.0.0.1:0")
    src._open()
    try:
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", src.endpoint) and not src.endpoint.endswith(":0")
        assert src.endpoint in src.describe()
    finally:
        src._close()
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    src6 = make_source("zmq:tcp://[::1]:0")
    src6._open()
    try:
        assert src6.endpoint.startswith("tcp://[::1]:") and not src6.endpoint.endswith(":0")
    finally:
        src6._close()
