"""The LSL outlet: one channel per cell with labels and units; samples stamped at capture time."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from vist_rt.runtime.lsl import LslOutlet

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pylsl") is None, reason="pylsl (the lsl extra) missing")

META = {
    "n": 3,
    "fps": 30.0,
    "cell_ids": ["a", "b", "c"],
    "units": "spikes/s",
    "model": {"checkpoint": "tiny.safetensors", "sha256": "abc"},
    "extractor": {"described": "raw grey pixel patches"},
}


def test_outlet_describes_cells_and_stamps_capture_time():
    import pylsl

    with LslOutlet(META, name="vist-rt-test") as outlet:
        found = pylsl.resolve_byprop("name", "vist-rt-test", timeout=5.0)
        if not found:
            pytest.skip("LSL stream discovery does not work on this machine's network")
        inlet = pylsl.StreamInlet(found[0])
        info = inlet.info(timeout=5.0)
        assert info.source_id().startswith("vist-rt-test-")  # the stream's name in it: one id per stream
        ch = info.desc().child("channels").child("channel")
        labels, units = [], []
        for _ in range(3):
            labels.append(ch.child_value("label"))
            units.append(ch.child_value("unit"))
            ch = ch.next_sibling()
        assert labels == ["a", "b", "c"] and units == ["spikes/s"] * 3
        inlet.open_stream(timeout=5.0)
        now = pylsl.local_clock()
        for _ in range(20):  # the first samples may go out before the inlet is connected
            outlet.push(np.array([1.0, 2.0, 3.0], np.float32), age_s=0.25)
        sample, ts = inlet.pull_sample(timeout=5.0)
        # the inlet goes first: liblsl once crashed (SIGSEGV in the outlet's destructor) tearing down an outlet
        # with an inlet of the same process still connected
        inlet.close_stream()
        del inlet
        assert sample == [1.0, 2.0, 3.0]
        assert abs(ts - (now - 0.25)) < 0.2  # stamped at capture time, not at send time
