"""`--tick-cpu` / `--io-cpu`: the tick thread, the run's other threads and ZeroMQ's I/O thread where they belong."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from tests.runtime.helpers import free_port, wait_for
from vist_rt.errors import VistError
from vist_rt.runtime import affinity
from vist_rt.runtime.affinity import PinnedThread, check_cpus, format_cpus, io_context
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.engine import Engine
from vist_rt.runtime.pipeline import Runtime

pytestmark = pytest.mark.skipif(not affinity.supported(), reason="thread affinity is Linux-only")

CPUS = sorted(os.sched_getaffinity(0)) if affinity.supported() else [0]
LAST = CPUS[-1]
NOT_ALLOWED = max(CPUS) + 1000


def in_thread(fn: Any) -> Any:
    """fn() run in a fresh thread (pinning there leaves the test's own thread alone); its result."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    return out[0]


def test_format_and_check() -> None:
    assert format_cpus({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8" and format_cpus([3]) == "3"
    check_cpus(tick_cpu=LAST, io_cpu=None)  # allowed: no error
    with pytest.raises(VistError, match=rf"--io-cpu {NOT_ALLOWED}: this process may run on CPUs [0-9,-]+ only") as e:
        check_cpus(tick_cpu=LAST, io_cpu=NOT_ALLOWED)
    assert "\n" not in str(e.value)


def test_isolated_cpus_are_read_from_the_kernels_list(tmp_path: Path) -> None:
    listing = tmp_path / "isolated"
    for text, want in (("2-3,6\n", {2, 3, 6}), ("\n", set()), ("garbage", set())):
        listing.write_text(text)
        assert affinity.isolated_cpus(str(listing)) == want
    assert affinity.isolated_cpus(str(tmp_path / "absent")) == frozenset()


def test_where_threads_cannot_be_pinned_the_error_says_so(monkeypatch) -> None:
    monkeypatch.setattr(affinity, "supported", lambda: False)
    with pytest.raises(VistError, match="needs Linux"):
        check_cpus(tick_cpu=0)
    check_cpus(tick_cpu=None, io_cpu=None)  # nothing asked: nothing checked


two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="moving threads off a CPU needs another CPU")


def parked(cpus: set[int] | None = None) -> tuple[threading.Thread, threading.Event]:
    """A started thread that waits for its event (pinned to `cpus` first, if given)."""
    stop, ready = threading.Event(), threading.Event()

    def body() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        ready.set()
        stop.wait(10)

    t = threading.Thread(target=body)
    t.start()
    ready.wait(5)
    return t, stop


@two_cpus
def test_pinned_thread_moves_the_others_off_and_puts_everything_back() -> None:
    elsewhere, stop1 = parked()  # may run anywhere: moved off, then back
    pool_worker, stop2 = parked({LAST})  # pinned to the tick's CPU alone (as ONNX Runtime pins its workers)
    ids = {"elsewhere": elsewhere.native_id, "worker": pool_worker.native_id}

    def body() -> dict[str, set[int]]:
        seen = {f"{k} before": os.sched_getaffinity(t) for k, t in ids.items()}  # type: ignore[arg-type]
        seen["before"] = os.sched_getaffinity(0)
        with PinnedThread(LAST) as pin:
            seen["inside"] = os.sched_getaffinity(0)
            seen.update({f"{k} inside": os.sched_getaffinity(t) for k, t in ids.items()})  # type: ignore[arg-type]
            with pin.away():
                child, stop3 = parked()  # born off the tick's CPU, outlives the run
            seen["child inside"] = os.sched_getaffinity(child.native_id)  # type: ignore[arg-type]
            seen["back"] = os.sched_getaffinity(0)
        seen["after"] = os.sched_getaffinity(0)
        seen.update({f"{k} after": os.sched_getaffinity(t) for k, t in ids.items()})  # type: ignore[arg-type]
        seen["child after"] = os.sched_getaffinity(child.native_id)  # type: ignore[arg-type]
        stop3.set()
        child.join(5)
        return seen

    try:
        seen = in_thread(body)
    finally:
        for stop in (stop1, stop2):
            stop.set()
    others = seen["before"] - {LAST}
    assert seen["inside"] == seen["back"] == {LAST} and seen["after"] == seen["before"]
    assert seen["elsewhere inside"] == seen["elsewhere before"] - {LAST}  # moved off while pinned
    assert seen["worker inside"] == others  # pinned there alone: moved to the other CPUs
    assert seen["child inside"] == others  # born off the tick's CPU
    assert seen["elsewhere after"] == seen["elsewhere before"] and seen["worker after"] == {LAST}  # put back
    assert seen["child after"] == seen["before"]  # born during the run: the process's CPUs afterwards


@two_cpus
def test_threads_kept_there_on_purpose_stay() -> None:
    keeper, stop = parked({LAST})

    def body() -> set[int]:
        with PinnedThread(LAST, stay=frozenset({keeper.native_id})):  # type: ignore[arg-type]
            return os.sched_getaffinity(keeper.native_id)  # type: ignore[arg-type]

    try:
        assert in_thread(body) == {LAST}
    finally:
        stop.set()


@two_cpus
def test_an_interrupted_pinning_leaves_nothing_pinned_or_moved(monkeypatch) -> None:
    elsewhere, stop = parked()
    real, calls = affinity.thread_ids, []

    def interrupted() -> list[int]:
        calls.append(1)
        if len(calls) > 1:  # after the first pass has moved the others
            raise KeyboardInterrupt
        return [*real(), 2**22 + 12345]  # an id no thread has: the next pass runs

    monkeypatch.setattr(affinity, "thread_ids", interrupted)

    def body() -> tuple[set[int], set[int], set[int]]:
        before = os.sched_getaffinity(0), os.sched_getaffinity(elsewhere.native_id)  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            PinnedThread(LAST).__enter__()
        return before[0], os.sched_getaffinity(0), before[1]

    try:
        before, after, other_before = in_thread(body)
        assert after == before and os.sched_getaffinity(elsewhere.native_id) == other_before  # type: ignore[arg-type]
    finally:
        stop.set()


def test_io_context_pins_zeromqs_io_thread() -> None:
    before = affinity.zmq_io_threads()
    with io_context(LAST) as ctx:
        sock = ctx.socket(zmq.PUB)  # the first socket starts the I/O thread
        try:
            assert wait_for(lambda: bool(affinity.zmq_io_threads() - before))  # the thread names itself once running
            new = affinity.zmq_io_threads() - before
            assert all(os.sched_getaffinity(tid) == {LAST} for tid in new)
        finally:
            sock.close(0)
    with pytest.raises(VistError, match="--io-cpu"), io_context(NOT_ALLOWED):
        pass


@two_cpus
def test_the_io_thread_on_the_tick_cpu_stays_there() -> None:
    with io_context(LAST) as ctx:
        sock = ctx.socket(zmq.PUB)
        try:
            assert wait_for(lambda: bool(affinity.zmq_io_threads(LAST)))

            def body() -> tuple[set[int], set[int]]:
                io = affinity.zmq_io_threads(LAST)
                with affinity.pin_tick(LAST, io_cpu=LAST):
                    kept = set().union(*(os.sched_getaffinity(t) for t in io))
                with affinity.pin_tick(LAST, io_cpu=None):  # not asked for: moved like any other
                    moved = set().union(*(os.sched_getaffinity(t) for t in io))
                return kept, moved

            kept, moved = in_thread(body)
            assert kept == {LAST} and LAST not in moved
        finally:
            sock.close(0)


def test_a_run_checks_its_cpus_before_loading_the_model(run_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setattr(Engine, "from_files", lambda *a, **k: pytest.fail("the model was loaded first"))
    cfg = RunConfig(checkpoint=str(run_checkpoint), tick_cpu=NOT_ALLOWED, dashboard=False)
    with pytest.raises(VistError, match=f"--tick-cpu {NOT_ALLOWED}: this process may run on CPUs"):
        Runtime.from_config(cfg, log=lambda _: None)
    with pytest.raises(VistError, match="tick_cpu must be a CPU number >= 0"):
        RunConfig(tick_cpu=-1)


@two_cpus
def test_a_live_run_pins_its_threads(run_checkpoint: Path) -> None:
    cfg = RunConfig(checkpoint=str(run_checkpoint), source="synthetic", max_frames=8, dashboard=False,
                    pub=f"tcp://127.0.0.1:{free_port()}", control=f"tcp://127.0.0.1:{free_port()}",
                    tick_cpu=LAST, io_cpu=CPUS[0], status_every_s=100.0, threads=2)  # fmt: skip
    logs: list[str] = []
    rt = Runtime.from_config(cfg, log=logs.append)
    seen: dict[str, set[int]] = {}
    features, step = rt.engine.features, rt.engine.step

    def features_seen(image: np.ndarray, color: str = "bgr") -> Any:
        seen["features"] = os.sched_getaffinity(0)
        return features(image, color)

    def step_seen(tokens: np.ndarray) -> Any:
        seen["tick"] = os.sched_getaffinity(0)
        seen["io"] = set().union(*(os.sched_getaffinity(t) for t in affinity.zmq_io_threads() - io_before))
        capture = [t.native_id for t in threading.enumerate() if t.name.startswith("capture:")]
        seen["capture"] = set().union(*(os.sched_getaffinity(t) for t in capture if t is not None))
        me = threading.get_native_id()
        others = [os.sched_getaffinity(t) for t in affinity.thread_ids() if t != me]
        seen["on the tick cpu"] = {i for i, cpus in enumerate(others) if LAST in cpus}
        return step(tokens)

    rt.engine.features, rt.engine.step = features_seen, step_seen  # type: ignore[method-assign]
    io_before = affinity.zmq_io_threads()

    def run() -> tuple[dict[str, Any], set[int], set[int]]:
        before = os.sched_getaffinity(0)
        return rt.run(), before, os.sched_getaffinity(0)

    summary, before, after = in_thread(run)
    assert summary["ticks"] == 8 and summary["tick_cpu"] == LAST and summary["io_cpu"] == CPUS[0]
    assert summary["torch_threads"] == 1  # despite threads=2: the tick thread has one CPU
    assert seen["tick"] == {LAST} and after == before  # pinned while running, as before afterwards
    assert seen["features"] == seen["capture"] == before - {LAST}  # the run's threads keep off the tick's CPU
    assert seen["on the tick cpu"] == set()  # and so does every other thread of the process
    assert seen["io"] == {CPUS[0]}  # the run's own ZeroMQ context: its I/O thread on --io-cpu
    assert any(f"tick thread on CPU {LAST}, ZeroMQ I/O on CPU {CPUS[0]}" in line for line in logs)
