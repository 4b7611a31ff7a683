"""The model clock holds its schedule: late ticks are served, wholly missed ticks are counted, no drift."""

from __future__ import annotations

import pytest

from vist_rt.errors import VistError
from vist_rt.runtime.clock import ModelClock


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_ticks_follow_the_schedule_without_drift():
    ft = FakeTime()
    clock = ModelClock(30.0, now=ft.now, sleep=ft.sleep)
    ticks = []
    for _ in range(90):
        k = clock.wait()
        ticks.append((k, ft.t))
        ft.t += 0.004  # work of each tick, shorter than the period
    assert [k for k, _ in ticks] == list(range(90))
    assert all(abs(t - (100.0 + k / 30.0)) < 1e-9 for k, t in ticks)  # no accumulated delay
    assert clock.missed == 0


def test_a_slow_tick_skips_and_counts_missed_ticks_but_the_schedule_stays():
    ft = FakeTime()
    clock = ModelClock(10.0, now=ft.now, sleep=ft.sleep)
    assert clock.wait() == 0
    ft.t += 0.35  # a stall of 3.5 periods
    k = clock.wait()
    assert k == 3 and clock.missed == 2  # ticks 1 and 2 passed entirely; tick 3 is served late
    assert clock.late_s == pytest.approx(0.05)
    assert clock.wait() == 4 and ft.t == pytest.approx(100.4)  # back on the original grid


def test_poll_replaces_sleep():
    ft = FakeTime()
    polled = []
    clock = ModelClock(20.0, now=ft.now, sleep=ft.sleep)
    clock.wait()

    def poll(s: float) -> None:
        polled.append(s)
        ft.t += s

    assert clock.wait(poll) == 1 and polled and max(polled) <= 0.05


def test_bad_rate():
    with pytest.raises(VistError, match="frame rate must be > 0"):
        ModelClock(0)
