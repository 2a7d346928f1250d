"""Intervals for accuracies and for differences of accuracies, over the same test problems.

Why a paired bootstrap: two samplers' students are scored on the same test problems, so their per-problem
results are correlated (easy problems are easy for both). Resampling problems, not grid points, and taking the
difference inside each resample gives the interval a claim "this student is worse" needs: one that excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Z_95 = 1.96


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_outcomes(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[float], list[float]]:
    """The two result lists over the problems both were scored on (by problem id), in one order."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("the two results share no problem id: they cannot be paired")
    return [a[i] for i in shared], [b[i] for i in shared]


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(stats: Sequence[float], level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(np.asarray(stats, dtype=float), [tail, 1 - tail])
    return float(low), float(high)


def paired_bootstrap_difference(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0,
                                level: float = 0.95) -> dict[str, float]:
    """Accuracy of `a` minus accuracy of `b` (same problems, same order), with a percentile bootstrap interval.

    Outcomes may be 0/1 or per-problem means over seeds (a student distilled with several seeds).
    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired results need the same non-zero length, got {len(a)} and {len(b)}")
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    stats = diffs[_resample_indices(len(diffs), resamples, seed)].mean(axis=1)
    low, high = _percentiles(stats, level)
    return {"difference": float(diffs.mean()), "low": low, "high": high, "n": len(diffs), "resamples": resamples}


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """y at `x` on the piecewise-linear curve through `points` (sorted by x); None outside it (no extrapolation)."""
    ordered = sorted(points)
    if len(ordered) == 1:
        return ordered[0][1] if ordered[0][0] == x else None
    for (x0, y0), (x1, y1) in zip(ordered, ordered[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


# Per point: the teacher's outcome per problem, and the student's, either per problem (one seed) or per seed and
# problem ([seeds][problems]: students distilled with several seeds at that point).
Curve = Sequence[tuple[Sequence[float], Sequence[float] | Sequence[Sequence[float]]]]


def bracketing(xs: Sequence[float], x: float) -> list[int]:
    """Indices of the points of a piecewise-linear curve that `interpolate` reads at `x`: the two around it, those
    at it, or none outside the curve (the points a claim at `x` rests on, where extra seeds pay off)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    at = [i for i in order if xs[i] == x]
    if at:
        return at
    for lower, upper in zip(order, order[1:]):
        if xs[lower] < x < xs[upper]:
            return [lower, upper]
    return []


def _student_matrix(outcomes: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """[seeds, problems]: one row for a single seed's 0/1 outcomes."""
    try:
        matrix = np.asarray(outcomes, dtype=float)
    except ValueError:  # seeds of different lengths
        raise ValueError("every seed's student outcomes must cover the same problems, in one order") from None
    return matrix[None, :] if matrix.ndim == 1 else matrix


def endpoint_gap(reference: Curve, other: Curve, teacher_accuracy: float, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> dict[str, float | None]:
    """G = reference's student accuracy minus other's, each read off its (teacher, student) accuracy curve at
    `teacher_accuracy`, with a bootstrap over problems: one resample of problem indices serves every point of both
    curves, teachers and students alike, so their correlations are kept. Where a point has students of several
    seeds, each resample also draws that point's seeds with replacement (crossed with the problems), so the
    interval carries the seed-to-seed spread of distillation too. `defined` is the share of resamples in which both
    curves reach `teacher_accuracy`; G is None when the full sample's curves do not.
    """
    rows = [(t, s) for t, s in (*reference, *other)]
    if not reference or not other:
        raise ValueError("each curve needs at least one point")
    n = len(rows[0][0])
    students = [_student_matrix(s) for _, s in rows]
    if any(len(t) != n for t, _ in rows) or any(m.shape[1] != n or not m.shape[0] for m in students):
        raise ValueError("every point's outcomes must cover the same problems, in one order")
    teachers = np.asarray([t for t, _ in rows], dtype=float)
    split = len(reference)

    def gap(t_acc: np.ndarray, s_acc: np.ndarray) -> float | None:
        a = interpolate(list(zip(t_acc[:split], s_acc[:split])), teacher_accuracy)
        b = interpolate(list(zip(t_acc[split:], s_acc[split:])), teacher_accuracy)
        return None if a is None or b is None else a - b

    full = gap(teachers.mean(axis=1), np.asarray([m.mean() for m in students]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    t_boot = teachers[:, idx].mean(axis=2)  # [points, resamples]
    s_boot = np.empty_like(t_boot)
    for j, matrix in enumerate(students):
        per_seed = matrix[:, idx].mean(axis=2)  # [seeds, resamples]
        if matrix.shape[0] == 1:
            s_boot[j] = per_seed[0]
        else:
            drawn = rng.integers(0, matrix.shape[0], size=(resamples, matrix.shape[0]))
            s_boot[j] = per_seed[drawn, np.arange(resamples)[:, None]].mean(axis=1)
    stats = [g for r in range(resamples) if (g := gap(t_boot[:, r], s_boot[:, r])) is not None]
    low, high = _percentiles(stats, level) if stats else (None, None)
    return {"G": full, "low": low, "high": high, "n": n, "resamples": resamples, "defined": len(stats) / resamples,
            "teacher_accuracy": teacher_accuracy}
