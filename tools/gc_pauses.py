"""Garbage-collector pauses in a live run under a burst of malformed control requests, heap frozen or not.

    python tools/gc_pauses.py [--requests 4000] [--rounds 3] [--json OUT.json]

One process, two arms run one after the other in each round (same machine, same minute): a live run of the
demo model on the synthetic movie with `frozen_heap()` as every run has it, and the same run with it replaced
by nothing. A rig in another process sends `--requests` malformed control requests (vist_rt.bench.fuzz) as
fast as the run answers. Reported per arm: the collector's passes on the run's threads (count, full passes,
longest), the run's missed ticks and ticks served during the burst. docs/runtime.md, "Garbage collection".
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from vist_rt.bench.pipeline import free_port
from vist_rt.demo import demo_checkpoint
from vist_rt.runtime import lowlatency
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.pipeline import Runtime

RIG = r"""
import json, sys, zmq, numpy as np
from vist_rt.bench.fuzz import malformed_request
ctx = zmq.Context(); sock = ctx.socket(zmq.REQ); sock.setsockopt(zmq.LINGER, 0); sock.connect(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[3]))
print("ready", flush=True); sys.stdin.readline()
for _ in range(int(sys.argv[2])):
    sock.send_multipart(malformed_request(rng)[1])
    assert sock.poll(10_000) and json.loads(sock.recv_multipart()[0])["ok"] is False
"""


FROZEN = lowlatency.frozen_heap  # what every run enters


@contextlib.contextmanager
def not_frozen() -> Iterator[int]:
    yield 0


def one_arm(freeze: bool, requests: int, seed: int) -> dict[str, Any]:
    cfg = RunConfig(checkpoint=str(demo_checkpoint()), source="synthetic", dashboard=False, status_every_s=1e6,
                    pub=f"tcp://127.0.0.1:{free_port()}", control=f"tcp://127.0.0.1:{free_port()}")  # fmt: skip
    rt = Runtime.from_config(cfg, log=lambda _: None)
    worker = threading.Thread(target=rt.run, name="run")
    lowlatency.frozen_heap = FROZEN if freeze else not_frozen  # the run looks it up as it starts
    pauses: list[tuple[float, int]] = []
    started: dict[int, float] = {}
    run_threads: set[int] = set()

    def on_gc(phase: str, info: dict[str, int]) -> None:
        me = threading.get_ident()
        if me not in run_threads:
            return
        if phase == "start":
            started[me] = time.perf_counter()
        elif me in started:
            pauses.append(((time.perf_counter() - started.pop(me)) * 1e3, info["generation"]))

    rig = subprocess.Popen([sys.executable, "-c", RIG, cfg.control, str(requests), str(seed)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert rig.stdout is not None and rig.stdin is not None
    rig.stdout.readline()  # the rig has imported everything
    worker.start()
    while rt.stats.ticks < 30 and worker.is_alive():
        time.sleep(0.01)
    run_threads.update(t.ident for t in threading.enumerate() if t is not threading.current_thread() and t.ident)
    heap = len(gc.get_objects())
    gc.callbacks.append(on_gc)
    ticks, missed, start = rt.stats.ticks, rt.stats.missed, time.perf_counter()
    rig.stdin.write("go\n")
    rig.stdin.flush()
    rc = rig.wait(timeout=600)
    elapsed = time.perf_counter() - start
    gc.callbacks.remove(on_gc)
    served, missed = rt.stats.ticks - ticks, rt.stats.missed - missed
    rt.stop()
    worker.join(30)
    full = [ms for ms, generation in pauses if generation == 2]
    return {
        "frozen": freeze, "rig_rc": rc, "burst_s": round(elapsed, 3), "ticks_served": served, "missed": missed,
        "objects_tracked": heap, "frozen_objects": rt.frozen_objects, "gc_passes": len(pauses),
        "full_passes": len(full), "longest_ms": round(max((ms for ms, _ in pauses), default=0.0), 3),
        "longest_full_ms": round(max(full, default=0.0), 3),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    try:
        arms = [one_arm(freeze, args.requests, seed=r) for r in range(args.rounds) for freeze in (True, False)]
    finally:
        lowlatency.frozen_heap = FROZEN  # as every run has it
    for arm in arms:
        print(json.dumps(arm))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "arms": arms}, f, indent=1)


if __name__ == "__main__":
    main()
