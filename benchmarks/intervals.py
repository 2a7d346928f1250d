"""Intervals for accuracies and for differences of accuracies, over the same test problems.

Why a paired bootstrap: two samplers' students are scored on the same test problems, so their per-problem
results are correlated (easy problems are easy for both). Resampling problems, not grid points, and taking the
difference inside each resample gives the interval a claim "this student is worse" needs: one that excludes 0.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

Z_95 = 1.96


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_outcomes(a: Mapping[str, bool], b: Mapping[str, bool]) -> tuple[list[bool], list[bool]]:
    """The two result lists over the problems both were scored on (by problem id), in one order."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("the two results share no problem id: they cannot be paired")
    return [a[i] for i in shared], [b[i] for i in shared]


def paired_bootstrap_difference(a: Sequence[bool], b: Sequence[bool], resamples: int = 2000, seed: int = 0,
                                level: float = 0.95) -> dict[str, float]:
    """Accuracy of `a` minus accuracy of `b` (same problems, same order), with a percentile bootstrap interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired results need the same non-zero length, got {len(a)} and {len(b)}")
    n = len(a)
    diffs = [int(x) - int(y) for x, y in zip(a, b)]
    rng = random.Random(seed)
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low = stats[int(tail * (resamples - 1))]
    high = stats[int(round((1 - tail) * (resamples - 1)))]
    return {"difference": sum(diffs) / n, "low": low, "high": high, "n": n, "resamples": resamples}
