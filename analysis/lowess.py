"""LOWESS (Cleveland 1979) with a bootstrap band, in numpy: the smooth fit the paper draws through grid points.

A small local-linear smoother is enough here (tens of points per curve), so no statsmodels dependency. The fit is
never extrapolated: outside the data's x range it is NaN, so a curve stops where its sampler's runs stop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_FRAC = 2 / 3  # statsmodels' and R's default span


def _as_arrays(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray]:
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x_arr.shape != y_arr.shape or x_arr.ndim != 1:
        raise ValueError(f"x and y must be 1-d of the same length, got shapes {x_arr.shape} and {y_arr.shape}")
    keep = np.isfinite(x_arr) & np.isfinite(y_arr)
    return x_arr[keep], y_arr[keep]


def _local_linear(x: np.ndarray, y: np.ndarray, at: np.ndarray, frac: float,
                  robustness: np.ndarray | None = None) -> np.ndarray:
    """Tricube-weighted local linear fit at every point of `at` (vectorised over `at`)."""
    n = x.size
    k = min(n, max(3, math.ceil(frac * n)))
    distance = np.abs(at[:, None] - x[None, :])  # [m, n]
    radius = np.partition(distance, k - 1, axis=1)[:, k - 1]
    # The k-th neighbour itself would get weight 0: widen a hair so k points count, and never divide by 0.
    radius = np.maximum(radius * (1 + 1e-6), 1e-12)
    u = np.clip(distance / radius[:, None], 0.0, 1.0)
    weights = (1 - u**3) ** 3
    if robustness is not None:
        weights = weights * robustness[None, :]
    total = weights.sum(axis=1)
    safe_total = np.where(total > 0, total, 1.0)
    mean_x = (weights * x).sum(axis=1) / safe_total
    mean_y = (weights * y).sum(axis=1) / safe_total
    dx = x[None, :] - mean_x[:, None]
    var_x = (weights * dx**2).sum(axis=1) / safe_total
    cov_xy = (weights * dx * (y[None, :] - mean_y[:, None])).sum(axis=1) / safe_total
    spread = float(np.ptp(x)) if n else 0.0
    # A neighbourhood whose x values (nearly) coincide has no slope to fit: use its weighted mean.
    flat = var_x <= (1e-12 * max(spread, 1e-12)) ** 2
    slope = np.where(flat, 0.0, cov_xy / np.where(flat, 1.0, var_x))
    fit = mean_y + slope * (at - mean_x)
    # A nearly degenerate neighbourhood (two runs at almost the same teacher accuracy) can give a wild slope; a
    # local fit is never allowed outside the range of the points that carry weight in it.
    supported = weights > 0
    low = np.where(supported, y[None, :], np.inf).min(axis=1)
    high = np.where(supported, y[None, :], -np.inf).max(axis=1)
    fit = np.clip(fit, np.minimum(low, high), np.maximum(low, high))
    return np.where(total > 0, fit, np.nan)


def lowess(x: np.ndarray | list[float], y: np.ndarray | list[float], at: np.ndarray | list[float],
           frac: float = DEFAULT_FRAC, robust_iters: int = 0) -> np.ndarray:
    """The LOWESS curve evaluated at `at`; NaN outside [min x, max x] and where fewer than 2 distinct x exist.

    `robust_iters` defaults to 0: with a handful of grid points per sampler, Cleveland's bisquare reweighting
    would discard genuine points as outliers.
    """
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    x_arr, y_arr = _as_arrays(x, y)
    at_arr = np.atleast_1d(np.asarray(at, dtype=float))
    out = np.full(at_arr.shape, np.nan)
    if np.unique(x_arr).size < 2:
        return out
    inside = (at_arr >= x_arr.min()) & (at_arr <= x_arr.max())
    if not inside.any():
        return out
    robustness = None
    for _ in range(max(0, robust_iters)):
        residuals = y_arr - _local_linear(x_arr, y_arr, x_arr, frac, robustness)
        scale = float(np.median(np.abs(residuals)))
        if not scale > 1e-12:
            break  # an (almost) exact fit: nothing to down-weight
        r = residuals / (6 * scale)
        robustness = np.where(np.abs(r) < 1, (1 - r**2) ** 2, 0.0)
    out[inside] = _local_linear(x_arr, y_arr, at_arr[inside], frac, robustness)
    return out


@dataclass(frozen=True)
class SmoothCurve:
    """A LOWESS curve on a grid, with its pointwise bootstrap interval (NaN where it is undefined)."""

    grid: np.ndarray
    fit: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float


def lowess_with_band(x: np.ndarray | list[float], y: np.ndarray | list[float], grid: np.ndarray,
                     frac: float = DEFAULT_FRAC, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> SmoothCurve:
    """LOWESS on `grid` plus a percentile bootstrap band: resample the points with replacement and refit.

    A grid point gets a band only where at least half of the resamples cover it (a resample that lost the
    extreme points does not extrapolate there).
    """
    x_arr, y_arr = _as_arrays(x, y)
    grid = np.asarray(grid, dtype=float)
    fit = lowess(x_arr, y_arr, grid, frac=frac)
    low = np.full(grid.shape, np.nan)
    high = np.full(grid.shape, np.nan)
    if x_arr.size >= 3 and n_boot > 0:
        rng = np.random.default_rng(seed)
        samples = np.empty((n_boot, grid.size))
        for b in range(n_boot):
            index = rng.integers(0, x_arr.size, x_arr.size)
            samples[b] = lowess(x_arr[index], y_arr[index], grid, frac=frac)
        enough = np.isfinite(samples).sum(axis=0) >= n_boot / 2
        if enough.any():
            tail = 100 * (1 - level) / 2
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                low[enough] = np.nanpercentile(samples[:, enough], tail, axis=0)
                high[enough] = np.nanpercentile(samples[:, enough], 100 - tail, axis=0)
    return SmoothCurve(grid=grid, fit=fit, low=low, high=high, level=level)
