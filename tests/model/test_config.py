from pathlib import Path

import pytest

from vist_rt.errors import VistError
from vist_rt.model import ViSTConfig


def test_defaults_are_the_published_configuration() -> None:
    cfg = ViSTConfig()
    assert (cfg.feature_dim, cfg.video_layers, cfg.video_dim, cfg.cells, cfg.grid) == (1024, 6, 256, 90, 16)
    assert cfg.windows == ((1, 25), (1, 13, 21), (1, 7, 9), (1, 3, 5))
    assert cfg.dropout == 0.25
    assert cfg.receptive_field == 183
    assert cfg.readout_grid == 8


def test_dict_round_trip_and_frozen() -> None:
    cfg = ViSTConfig(cells=7, windows=[[1, 3], [1, 2], [1, 2], [1, 2]])
    assert ViSTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AttributeError):
        cfg.cells = 3  # type: ignore[misc]


def test_toml(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[model]\ncells = 12\nwindows = [[1, 5], [1, 3], [1, 3], [1, 2]]\n")
    cfg = ViSTConfig.from_toml(path)
    assert cfg.cells == 12 and cfg.windows[0] == (1, 5)
    path.write_text("cells = 3\n")
    assert ViSTConfig.from_toml(path).cells == 3


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"cells": 0}, "cells"),
        ({"grid": 8}, "grid=8"),
        ({"dropout": 1.0}, "dropout"),
        ({"windows": ((1, 0),)}, "windows"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs: dict, needle: str) -> None:
    with pytest.raises(VistError, match=needle) as err:
        ViSTConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_unknown_key_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(VistError, match="celss"):
        ViSTConfig.from_dict({"celss": 3})
    bad = tmp_path / "bad.toml"
    bad.write_text("cells = \n")
    with pytest.raises(VistError, match="not valid TOML"):
        ViSTConfig.from_toml(bad)
    with pytest.raises(VistError, match="cannot read"):
        ViSTConfig.from_toml(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "data",
    [{"windows": 5}, {"windows": [5]}, {"windows": [["a"]]}, {"windows": [[1.5]]}, {"dropout": "x"}, {"cells": True}],
)
def test_malformed_values_are_vist_errors(data: dict) -> None:
    with pytest.raises(VistError):
        ViSTConfig.from_dict(data)


def test_config_must_be_a_table() -> None:
    with pytest.raises(VistError, match="table of settings, got list"):
        ViSTConfig.from_dict([["cells", 3]])  # type: ignore[arg-type]
