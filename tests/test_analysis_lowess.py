"""LOWESS, its bootstrap band and the headline crossing: numbers checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.fd_error import abs_sin, eps_grid_with
from analysis.lowess import lowess, lowess_with_band
from analysis.summary import find_crossing


def test_lowess_reproduces_a_line_and_never_extrapolates() -> None:
    x = np.array([0.2, 0.35, 0.4, 0.55, 0.7, 0.9])
    y = 0.1 + 0.3 * x
    at = np.array([0.1, 0.2, 0.33, 0.61, 0.9, 0.95])
    fit = lowess(x, y, at)
    assert np.isnan(fit[0]) and np.isnan(fit[-1])
    np.testing.assert_allclose(fit[1:-1], 0.1 + 0.3 * at[1:-1], atol=1e-12)


def test_lowess_follows_a_curve_and_its_band_covers_the_truth() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 60)
    y = np.sin(3 * x) + rng.normal(0, 0.05, x.size)
    grid = np.linspace(0.1, 0.9, 9)
    curve = lowess_with_band(x, y, grid, frac=0.3, n_boot=300, seed=0)
    assert np.max(np.abs(curve.fit - np.sin(3 * grid))) < 0.08
    assert np.all(curve.low <= curve.fit + 1e-12) and np.all(curve.fit <= curve.high + 1e-12)
    covered = (curve.low - 0.02 <= np.sin(3 * grid)) & (np.sin(3 * grid) <= curve.high + 0.02)
    assert covered.mean() >= 0.8
    assert np.all(curve.high - curve.low < 0.2)


def test_lowess_degenerate_inputs_give_nan_not_errors() -> None:
    assert np.isnan(lowess([0.5], [0.3], [0.5])).all()
    assert np.isnan(lowess([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], [0.5])).all()
    assert np.isnan(lowess([], [], [0.5])).all()
    tied = lowess([0.5, 0.5, 0.6], [1.0, 2.0, 3.0], [0.5, 0.6])
    assert np.isfinite(tied).all()
    band = lowess_with_band([0.2, 0.4], [0.1, 0.2], np.array([0.3]), n_boot=50)
    assert np.isfinite(band.fit).all() and np.isnan(band.low).all()
    with pytest.raises(ValueError, match="frac"):
        lowess([0, 1], [0, 1], [0.5], frac=0)


def test_crossing_is_the_root_of_the_fitted_line() -> None:
    teacher = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    student = [-0.05 + 0.5 * t for t in teacher]
    crossing = find_crossing(teacher, student, base=0.31)
    assert crossing.kind == "crossing"
    assert crossing.value == pytest.approx((0.31 + 0.05) / 0.5, abs=1e-9)


def test_crossing_edge_cases() -> None:
    teacher = [0.3, 0.5, 0.7]
    assert find_crossing(teacher, [0.1, 0.15, 0.2], base=0.31).kind == "already_below"
    assert find_crossing(teacher, [0.1, 0.15, 0.2], base=0.31).value == pytest.approx(0.7)
    not_reached = find_crossing(teacher, [0.4, 0.45, 0.5], base=0.31)
    assert not_reached.kind == "not_reached" and not_reached.value == pytest.approx(0.3)
    assert find_crossing(teacher, [0.4, 0.45, 0.5], base=None).kind == "unknown"
    assert find_crossing([0.5], [0.4], base=0.3).text() == "n/a"


def test_abs_sin_matches_the_angle_and_guards_zero_and_nonfinite() -> None:
    for theta in (1e-7, 0.3, math.pi / 2, 2.5):
        a = np.array([math.cos(theta), math.sin(theta), 0.0])
        assert abs_sin(a, np.array([2.0, 0.0, 0.0])) == pytest.approx(abs(math.sin(theta)), rel=1e-6, abs=1e-15)
    assert math.isnan(abs_sin(np.zeros(3), np.ones(3)))
    assert math.isnan(abs_sin(np.ones(3), np.zeros(3)))
    assert math.isnan(abs_sin(np.array([1.0, np.inf, 0.0]), np.ones(3)))
    assert math.isnan(abs_sin(np.array([1.0, np.nan, 0.0]), np.ones(3)))
    assert abs_sin(np.full(3, 1e-300), np.full(3, 1e300)) == pytest.approx(0.0, abs=1e-12)


def test_eps_grid_includes_the_eps_in_use_once() -> None:
    assert eps_grid_with(1e-2, [1e-6, 1e-2, 10.0]) == [1e-6, 1e-2, 10.0]
    assert eps_grid_with(3e-3, [1e-6, 1e-2]) == [1e-6, 3e-3, 1e-2]
