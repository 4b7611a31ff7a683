"""The published learning-rate schedule and window sampling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vist_rt.errors import VistError
from vist_rt.train.schedule import PRESETS, Recipe, learning_rate, window_starts


def test_published_schedule_points():
    r = PRESETS["paper"]
    per = r.batches_per_epoch
    assert learning_rate(0, r) == pytest.approx(5e-5)
    assert learning_rate(5 * per, r) == pytest.approx(8e-4)  # end of the 5-epoch warm-up
    assert learning_rate(int(2.5 * per), r) == pytest.approx((5e-5 + 8e-4) / 2)
    lrs = [learning_rate(s, r) for s in range(5 * per, 20 * per)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))  # cosine decay is monotone
    assert learning_rate(25 * per, r) == pytest.approx(1e-4)  # SWA lr reached after 5 annealing epochs
    assert learning_rate(30 * per - 1, r) == pytest.approx(1e-4)
    assert r.steps == 30 * 48 and (r.window, r.batch, r.weight_decay) == (128, 16, 0.1)


def test_windows_lie_inside_the_movie():
    r = Recipe(window=10, batch=1000)
    starts = window_starts(25, r, np.random.default_rng(0))
    assert starts.min() == 0 and starts.max() == 15  # all 16 starts occur
    with pytest.raises(VistError, match="fewer than one 10-frame window"):
        window_starts(9, r, np.random.default_rng(0))
    with pytest.raises(VistError):
        Recipe(epochs=0)


def test_windows_of_several_movies_never_span_two():
    r = Recipe(window=10, batch=4000)
    lengths = (25, 12, 40)  # 16 + 3 + 31 windows
    starts = window_starts(lengths, r, np.random.default_rng(1))
    edges = np.cumsum((0, *lengths))
    movie = np.searchsorted(edges, starts, side="right") - 1
    assert ((starts + r.window) <= edges[movie + 1]).all()  # each window ends inside the movie it starts in
    assert len(set(starts.tolist())) == 16 + 3 + 31  # and every such window is drawn
    share = np.bincount(movie, minlength=3) / len(starts)
    np.testing.assert_allclose(share, np.array([16, 3, 31]) / 50, atol=0.03)  # uniform over windows, not movies
    one = window_starts((25,), r, np.random.default_rng(1))  # one movie draws as it always has
    np.testing.assert_array_equal(one, window_starts(25, r, np.random.default_rng(1)))
    with pytest.raises(VistError, match="movie 2 of 3 has 9 frames, fewer than one 10-frame window"):
        window_starts((25, 9, 40), r, np.random.default_rng(0))
