"""Configuration of the Vi-ST spikes alignment module."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vist_rt.errors import VistError
from vist_rt.tomlfile import read_toml


def _whole(value: object) -> int:
    """An int (not a bool, not a float), else TypeError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


PUBLISHED_WINDOWS: tuple[tuple[int, ...], ...] = ((1, 25), (1, 13, 21), (1, 7, 9), (1, 3, 5))


@dataclasses.dataclass(frozen=True)
class ViSTConfig:
    """Sizes of the Vi-ST model; the defaults are the published configuration.

    feature_dim: token dimension D of the video features.
    video_layers: number of dilated C3TCN layers (layer i has time dilation 2**i); 0: no C3TCN (its input and
        output projections only: the "without C3TCN" ablation).
    video_dim: channels inside the C3TCN.
    cells: number of ganglion cells C predicted.
    grid: side of the token grid (16 for a 224x224 input to a /14 ViT).
    windows: one tuple of causal time windows per CMST block.
    dropout: dropout probability (training only).
    rf_conditioning: the AdaLN-Zero modulation by the RF masks (False: no such module, the "without RF
        conditioning" ablation).
    """

    feature_dim: int = 1024
    video_layers: int = 6
    video_dim: int = 256
    cells: int = 90
    grid: int = 16
    windows: tuple[tuple[int, ...], ...] = PUBLISHED_WINDOWS
    dropout: float = 0.25
    rf_conditioning: bool = True

    def __post_init__(self) -> None:
        try:
            windows = tuple(tuple(_whole(w) for w in ws) for ws in self.windows)
        except (TypeError, ValueError):
            raise VistError(f"ViSTConfig.windows must be lists of integers, got {self.windows!r}") from None
        object.__setattr__(self, "windows", windows)
        for name in ("feature_dim", "video_layers", "video_dim", "cells", "grid"):
            value = getattr(self, name)
            low = 0 if name == "video_layers" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise VistError(f"ViSTConfig.{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.rf_conditioning, bool):
            raise VistError(f"ViSTConfig.rf_conditioning must be true or false, got {self.rf_conditioning!r}")
        if not windows or any(not ws or min(ws) < 1 for ws in windows):
            raise VistError(f"ViSTConfig.windows must be non-empty lists of windows >= 1, got {windows!r}")
        if self.readout_grid < 1:
            raise VistError(
                f"ViSTConfig.grid={self.grid} is too small for {len(windows)} CMST blocks "
                f"(each removes 2 from the side; need grid > {2 * len(windows)})"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise VistError(f"ViSTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def tokens(self) -> int:
        """Tokens per frame (grid * grid)."""
        return self.grid * self.grid

    @property
    def readout_grid(self) -> int:
        """Side of the spatial map entering the readout."""
        return self.grid - 2 * len(self.windows)

    @property
    def dilations(self) -> tuple[int, ...]:
        """Time dilation of each C3TCN layer."""
        return tuple(2**i for i in range(self.video_layers))

    @property
    def receptive_field(self) -> int:
        """Frames that influence one output (183 for the published configuration)."""
        return 1 + sum(2 * d for d in self.dilations) + sum(max(ws) - 1 for ws in self.windows)

    def ablate(self, *names: str) -> ViSTConfig:
        """This configuration without the modules `names` (each one of ABLATIONS): `no-c3tcn` (no dilated temporal
        layers), `single-window` (one CMST window per block, its longest), `no-rf` (no AdaLN-Zero modulation)."""
        cfg = self
        for name in names:
            if name not in ABLATIONS:
                raise VistError(f"unknown ablation {name!r}; one of {', '.join(ABLATIONS)}")
            cfg = dataclasses.replace(cfg, **ABLATIONS[name](cfg))
        return cfg

    @property
    def ablations(self) -> tuple[str, ...]:
        """The ablations this configuration has (ABLATIONS' names)."""
        found = []
        if self.video_layers == 0:
            found.append("no-c3tcn")
        if all(len(ws) == 1 for ws in self.windows):
            found.append("single-window")
        if not self.rf_conditioning:
            found.append("no-rf")
        return tuple(found)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-friendly dict."""
        out = dataclasses.asdict(self)
        out["windows"] = [list(ws) for ws in self.windows]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViSTConfig:
        """Build from a dict; unknown keys are an error (a typo must not pass silently)."""
        if not isinstance(data, Mapping):
            raise VistError(f"a model config must be a table of settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VistError(f"unknown ViSTConfig keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = "model") -> ViSTConfig:
        """Load from a TOML file, from `[table]` when it exists, else from the top level."""
        data = read_toml(path, table)
        return cls.from_dict(data)


# the model's ablation switches (the paper's ablations; the no-ViT-prior one is the pixel-patches extractor)
ABLATIONS = {
    "no-c3tcn": lambda cfg: {"video_layers": 0},
    "single-window": lambda cfg: {"windows": tuple((max(ws),) for ws in cfg.windows)},
    "no-rf": lambda cfg: {"rf_conditioning": False},
}
