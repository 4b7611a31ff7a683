"""`vist-rt train|eval|features`: outputs and caches checked before the work, nothing lost silently, one line each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.train.test_evaluate import _checkpoint
from vist_rt.cli import main
from vist_rt.data.simulate import write_simulation
from vist_rt.errors import VistError
from vist_rt.features import PatchesExtractor
from vist_rt.tensorfile import read_tensor_file
from vist_rt.train import trainer
from vist_rt.train.schedule import Recipe
from vist_rt.train.trainer import cached_features, feature_cache_path, recipe_from_toml, state_path

FAST = "window = 16\nbatch = 2\nbatches_per_epoch = 1\nepochs = 1\nwarmup_epochs = 0\nswa_start = 1\n"


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vist-rt") and "error" in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_simulation(tmp_path / "s.h5", n_cells=3, n_movies=2, n_frames=40, n_trials=2, seed=0,
                            size=(20, 24)).write(tmp_path / "d.h5")  # fmt: skip


def _train_args(tmp_path: Path, data: Path, out: Path, *more: str) -> list[str]:
    recipe = tmp_path / "fast.toml"
    recipe.write_text(FAST)
    return ["train", str(data), "--train-movie", "movie1", "--out", str(out), "--recipe", str(recipe),
            "--image-size", "140", *more]  # fmt: skip


def _no_features(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("features computed before the outputs were checked")

    monkeypatch.setattr(trainer, "movie_features", boom)


def test_train_refuses_an_earlier_runs_outputs_unless_resume_or_force(tmp_path: Path, data: Path, capsys,
                                                                       monkeypatch) -> None:  # fmt: skip
    out = tmp_path / "m.safetensors"
    assert main(_train_args(tmp_path, data, out)) == 0
    saved = {p: p.read_bytes() for p in (out, out.with_name("m.last.safetensors"), state_path(out))}
    with monkeypatch.context() as m:
        _no_features(m)
        assert main(_train_args(tmp_path, data, out, "--seed", "1")) == 2
        _one_line_error(capsys, "m.safetensors", "m.state.pt", "already exist", "--resume", "--force")
        assert {p: p.read_bytes() for p in saved} == saved  # nothing replaced
        for name in ("m.safetensors", "m.last.safetensors", "m.state.pt"):  # any one of them is enough
            other = tmp_path / f"o{name[1:]}"
            other.write_bytes(b"x")
            assert main(_train_args(tmp_path, data, tmp_path / "o.safetensors")) == 2
            _one_line_error(capsys, str(other), "already exist")
            other.unlink()
    assert main(_train_args(tmp_path, data, out, "--resume")) == 0  # uses them
    assert main(_train_args(tmp_path, data, out, "--seed", "1", "--force")) == 0  # replaces them
    assert torch.load(state_path(out), weights_only=True)["identity"] != ""


def test_train_checks_out_and_cache_before_any_work(tmp_path: Path, data: Path, capsys, monkeypatch) -> None:
    _no_features(monkeypatch)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--out", str(tmp_path / "adir")], "is a folder"),
        (["--out", str(tmp_path / "adir"), "--force"], "is a folder"),
        (["--cache", str(tmp_path / "afile")], "is not a folder"),
        (["--cache", str(tmp_path / "afile" / "c")], "is not a folder"),
        (["--cache", "/proc/vist-rt-cache"], "cannot write --cache"),
    ]
    for flags, needle in cases:
        out = flags[1] if flags[0] == "--out" else str(tmp_path / "m.safetensors")
        rest = flags[2:] if flags[0] == "--out" else flags
        assert main(_train_args(tmp_path, data, Path(out), *rest)) == 2
        _one_line_error(capsys, needle)


def test_resume_refuses_a_state_that_is_not_a_dict(tmp_path: Path, data: Path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    torch.save([1, 2, 3], state_path(out))
    assert main(_train_args(tmp_path, data, out, "--resume")) == 2
    _one_line_error(capsys, "--resume", "holds a list")
    torch.save({"identity": "x", "model": 1}, state_path(out))
    assert main(_train_args(tmp_path, data, out, "--resume")) == 2
    _one_line_error(capsys, "different run")


@pytest.mark.parametrize(
    ("text", "message"),
    [("lr = -1.0", "lr must be a finite number > 0"), ("lr = 0.0", "lr must be"), ("lr_start = nan", "lr_start"),
     ("lr_end = inf", "lr_end"), ("weight_decay = -1.0", "weight_decay must be a finite number >= 0"),
     ("swa_lr = -0.5", "swa_lr"), ("swa_anneal_epochs = -1", "swa_anneal_epochs")],
)  # fmt: skip
def test_recipe_rates_must_be_finite_and_not_negative(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text + "\n")
    with pytest.raises(VistError, match=message):
        recipe_from_toml(path)
    assert Recipe(lr_start=0.0, weight_decay=0.0, swa_lr=0.0).lr_start == 0.0  # zero is fine where it means off


def test_a_damaged_cache_entry_is_recomputed(tmp_path: Path, data: Path) -> None:
    ext = PatchesExtractor(140, channels="grey")
    stim = np.zeros((20, 20, 24), np.uint8)
    path = feature_cache_path(data, "movie1", ext, tmp_path / "c")
    good = cached_features(data, "movie1", stim, ext, tmp_path / "c")
    for damage in (lambda: path.write_bytes(path.read_bytes()[:100]),  # truncated
                   lambda: path.write_bytes(b"garbage"),
                   lambda: np.save(path, np.zeros((3, 4), np.float32)),  # wrong shape
                   lambda: np.save(path, good.astype(np.float64))):  # fmt: skip
        damage()
        lines: list[str] = []
        again = cached_features(data, "movie1", stim, ext, tmp_path / "c", log=lines.append)
        np.testing.assert_array_equal(again, good)
        assert len(lines) == 1 and str(path) in lines[0] and "recomputing" in lines[0]
        np.testing.assert_array_equal(np.load(path), good)  # repaired
    lines = []
    cached_features(data, "movie1", stim, ext, tmp_path / "c", log=lines.append)
    assert lines == []


def test_features_command_recomputes_damaged_entries(tmp_path: Path, data: Path, capsys) -> None:
    args = ["features", str(data), "--cache", str(tmp_path / "c"), "--extractor", "patches", "--image-size", "140"]
    assert main(args) == 0
    first, second = sorted((tmp_path / "c").glob("features-*.npy"))
    want = np.load(first)
    first.write_bytes(first.read_bytes()[:60])
    np.save(second, np.zeros((2, 2), np.float32))
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("recomputing") == 2 and "movie1: cached" not in out and "movie2: cached" not in out
    np.testing.assert_array_equal(np.load(first), want)
    assert np.load(second).shape == want.shape
    (tmp_path / "afile").write_text("x")
    assert main([*args[:2], "--cache", str(tmp_path / "afile"), *args[4:]]) == 2
    _one_line_error(capsys, "is not a folder")


def test_eval_checks_outputs_first_and_never_truncates_the_json(tmp_path: Path, data: Path, capsys) -> None:
    ckpt = _checkpoint(tmp_path / "m.safetensors", 3)
    report = tmp_path / "e.json"
    report.write_text('{"earlier": true}\n')
    base = ["eval", str(ckpt), str(data), "--movie"]
    assert main([*base, "nope", "--json", str(report)]) == 2  # fails after the checks: the JSON is untouched
    _one_line_error(capsys, "no movie 'nope'")
    assert json.loads(report.read_text()) == {"earlier": True}
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    for flags, needle in ((["--json", str(tmp_path / "adir")], "is a folder"),
                          (["--json", "/proc/vist-rt/e.json"], "cannot write --json"),
                          (["--plots", str(tmp_path / "afile")], "is not a folder"),
                          (["--plots", "/proc/vist-rt-plots"], "cannot write --plots"),
                          (["--cache", str(tmp_path / "afile")], "is not a folder"),
                          (["--cache", "/proc/vist-rt-cache"], "cannot write --cache")):  # fmt: skip
        assert main([*base, "movie2", *flags, "--json", str(report)] if flags[0] != "--json" else
                    [*base, "movie2", *flags]) == 2  # fmt: skip
        _one_line_error(capsys, needle)
        assert json.loads(report.read_text()) == {"earlier": True}
    for alpha in ("nan", "inf", "1e308", "0", "-1"):
        with pytest.raises(SystemExit) as stop:
            main([*base, "movie2", "--alpha", alpha])
        assert stop.value.code == 2 and "--alpha" in capsys.readouterr().err
    assert main([*base, "movie2", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["movie"] == "movie2"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_text_file_as_torch_weights_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_text("hello world\nthis is not a tensor file\n")
    with pytest.raises(VistError, match=r"w\.pth is not a readable PyTorch file"):
        read_tensor_file(path, "weights")
    path.write_bytes(b"\x80\x02}q\x00X")  # a pickle cut short
    with pytest.raises(VistError, match=r"w\.pth"):
        read_tensor_file(path, "weights")
