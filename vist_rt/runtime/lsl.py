"""Optional Lab Streaming Layer outlet: one channel per cell, stamped with the frame's capture time."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from vist_rt.errors import VistError


def _pylsl():  # type: ignore[no-untyped-def]
    try:
        import pylsl
    except ImportError:
        raise VistError('--lsl needs pylsl: pip install "vist-rt[lsl]"') from None
    return pylsl


class LslOutlet:
    """An LSL stream `name` ("vist-rt", or "vist-rt-<stream>" per stream of a several-stream run) of type "Rates":
    channel i = cell i (label = cell id, unit = rate units). Its source id is the name and the checkpoint's hash,
    so that two streams of one checkpoint are two LSL streams to a reader (and a restart resumes each).

    Sample timestamps are the capture time of the frame each tick used, on LSL's clock.
    """

    def __init__(self, meta: dict[str, Any], name: str = "vist-rt") -> None:
        lsl = _pylsl()
        self._clock = lsl.local_clock
        n = int(meta["n"])
        source_id = f"{name}-{meta['model'].get('sha256') or meta['model'].get('checkpoint')}"
        info = lsl.StreamInfo(name, "Rates", n, float(meta["fps"]), "float32", source_id)
        desc = info.desc()
        channels = desc.append_child("channels")
        for cell in meta["cell_ids"]:
            ch = channels.append_child("channel")
            ch.append_child_value("label", str(cell))
            ch.append_child_value("unit", str(meta["units"]))
            ch.append_child_value("type", "FiringRate")
        desc.append_child_value("model", json.dumps(meta["model"]))
        desc.append_child_value("features", str(meta["extractor"]["described"]))
        self.outlet = lsl.StreamOutlet(info)
        self.n = n

    def push(self, rates: np.ndarray, age_s: float) -> None:
        """rates [C]; age_s = seconds since the frame was captured (the sample is stamped then)."""
        self.outlet.push_sample(rates.tolist(), self._clock() - age_s)

    def close(self) -> None:
        """Drop the outlet."""
        self.outlet = None

    def __enter__(self) -> LslOutlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
