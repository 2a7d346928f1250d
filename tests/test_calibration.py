"""Calibration (bisection of a sampler's knob to a target accuracy) and the intervals the suite reports."""

from __future__ import annotations

import math
import random

import pytest

from benchmarks.calibration import Probe, calibrate, next_knob
from benchmarks.intervals import paired_bootstrap_difference, paired_outcomes, wilson_interval


def falling(knob: float) -> tuple[float, int]:
    """A known, strictly falling accuracy curve (0.8 at knob 0 down to 0 at infinity)."""
    return 0.8 / (1 + knob), 200


@pytest.mark.parametrize("target", [0.7, 0.4, 0.1])
def test_bisection_reaches_each_target_of_a_known_curve(target):
    chosen, probes = calibrate(falling, [target], (1e-3, 10.0), probes_per_target=12)
    exact = 0.8 / target - 1  # the knob where the curve crosses the target
    assert chosen[target].knob == pytest.approx(exact, rel=0.02)
    assert abs(chosen[target].accuracy - target) < 0.005
    assert len(probes) <= 12


def test_later_targets_reuse_earlier_probes_and_each_target_keeps_its_budget():
    calls = []

    def measure(knob):
        calls.append(knob)
        return falling(knob)

    chosen, probes = calibrate(measure, [0.4, 0.7], (1e-3, 10.0), probes_per_target=4)
    assert len(calls) == len(probes) <= 8
    assert sum(p.target == 0.7 for p in probes) <= 4 and sum(p.target == 0.4 for p in probes) <= 4
    assert chosen[0.7].accuracy > chosen[0.4].accuracy
    # a resumed calibration with every probe done measures nothing more
    again, _ = calibrate(lambda k: pytest.fail("no probe should run"), [0.4, 0.7], (1e-3, 10.0), 4, probes=probes)
    assert again == chosen


def test_a_bracket_closed_by_noise_stops_and_returns_the_closest_probe():
    probes = [Probe(1.0, 0.3, 100, 0.5), Probe(0.5, 0.2, 100, 0.5)]  # accuracy rose with the knob: no bracket
    assert next_knob(probes, 0.25, (1e-3, 10.0)) is None
    chosen, done = calibrate(lambda k: pytest.fail("no probe should run"), [0.25], (1e-3, 10.0), 3, probes=probes)
    assert done == probes and chosen[0.25].accuracy in (0.3, 0.2)


def test_paired_bootstrap_interval_covers_the_difference_and_shrinks_with_n():
    rng = random.Random(1)
    small = [(rng.random() < 0.6, rng.random() < 0.5) for _ in range(100)]
    large = [(rng.random() < 0.6, rng.random() < 0.5) for _ in range(2000)]
    widths = []
    for rows in (small, large):
        a, b = [x for x, _ in rows], [y for _, y in rows]
        d = paired_bootstrap_difference(a, b, resamples=500)
        assert d["low"] <= d["difference"] <= d["high"]
        assert d["difference"] == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
        widths.append(d["high"] - d["low"])
    assert widths[1] < widths[0] / 2
    same = [True, False] * 50
    assert paired_bootstrap_difference(same, same, resamples=200) == {
        "difference": 0.0, "low": 0.0, "high": 0.0, "n": 100, "resamples": 200}


def test_pairing_is_by_problem_id_and_refuses_disjoint_results():
    a, b = paired_outcomes({"1": True, "2": False, "3": True}, {"3": False, "1": True, "9": True})
    assert (a, b) == ([True, True], [True, False])
    with pytest.raises(ValueError, match="no problem id"):
        paired_outcomes({"1": True}, {"2": True})


def test_wilson_interval_contains_the_estimate_and_the_normal_interval_at_large_n():
    low, high = wilson_interval(500, 1000)
    half = 1.96 * math.sqrt(0.25 / 1000)
    assert low == pytest.approx(0.5 - half, abs=1e-3) and high == pytest.approx(0.5 + half, abs=1e-3)
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0 < high < 0.1


def test_paired_bootstrap_reaches_its_nominal_coverage():
    """On synthetic paired outcomes with a known true difference, the 95% interval covers it about 95% of the time."""
    import numpy as np

    rng = np.random.default_rng(3)
    covered, trials = 0, 300
    for trial in range(trials):
        base = rng.random(300)  # per-problem ease, shared by both (the pairing)
        a = rng.random(300) < 0.3 + 0.4 * base
        b = rng.random(300) < 0.2 + 0.4 * base  # true difference: 0.1
        d = paired_bootstrap_difference(a.tolist(), b.tolist(), resamples=400, seed=trial)
        covered += d["low"] <= 0.1 <= d["high"]
    assert 0.90 <= covered / trials <= 0.99


def test_interpolation_never_extrapolates():
    from benchmarks.intervals import interpolate

    assert interpolate([(0.2, 1.0), (0.6, 3.0)], 0.5) == pytest.approx(2.5)
    assert interpolate([(0.6, 3.0), (0.2, 1.0)], 0.2) == 1.0
    assert interpolate([(0.2, 1.0), (0.6, 3.0)], 0.7) is None and interpolate([(0.4, 1.0)], 0.3) is None


def test_endpoint_gap_recovers_a_known_gap_and_refuses_to_extrapolate():
    import numpy as np

    from benchmarks.intervals import endpoint_gap

    rng = np.random.default_rng(0)
    n = 4000

    def point(teacher_p, student_p):
        return (rng.random(n) < teacher_p).tolist(), (rng.random(n) < student_p).tolist()

    temperature = [point(0.8, 0.6), point(0.5, 0.3)]  # student 0.4 at teacher 0.6
    tilted = [point(0.75, 0.4), point(0.45, 0.2)]  # student 0.3 at teacher 0.6
    g = endpoint_gap(temperature, tilted, 0.6, resamples=400)
    assert g["G"] == pytest.approx(0.1, abs=0.03) and g["low"] < g["G"] < g["high"] and g["defined"] > 0.99
    assert g["low"] > 0  # n = 4000 resolves a 10-point gap
    beyond = endpoint_gap(temperature, tilted, 0.9, resamples=50)
    assert beyond["G"] is None and beyond["defined"] == 0.0 and beyond["low"] is None


def test_bracketing_names_the_points_interpolation_reads():
    from benchmarks.intervals import bracketing

    xs = [0.8, 0.3, 0.55, 0.1]
    assert sorted(bracketing(xs, 0.5)) == [1, 2]  # 0.3 < 0.5 < 0.55, whatever the order of the points
    assert bracketing(xs, 0.55) == [2]
    assert bracketing([0.0, 0.0, 0.2], 0.0) == [0, 1]  # ties at x: every one of them
    assert bracketing(xs, 0.9) == [] and bracketing(xs, 0.05) == []


def test_endpoint_gap_with_seeds_draws_them_and_equals_one_seed_when_they_agree():
    """Identical seeds change nothing; seeds that disagree widen the interval, which the per-problem mean alone
    (the same 0.5 on every problem here) cannot show."""
    from benchmarks.intervals import endpoint_gap

    rng = random.Random(3)
    n = 400
    teacher_hi = [1.0 if rng.random() < 0.8 else 0.0 for _ in range(n)]
    teacher_lo = [1.0 if rng.random() < 0.4 else 0.0 for _ in range(n)]
    student = [1.0 if rng.random() < 0.5 else 0.0 for _ in range(n)]
    reference = [(teacher_hi, student), (teacher_lo, student)]
    one = endpoint_gap(reference, [(teacher_hi, student), (teacher_lo, student)], 0.6, resamples=300)
    same = endpoint_gap(reference, [(teacher_hi, [student, student]), (teacher_lo, student)], 0.6, resamples=300)
    assert (same["G"], same["low"], same["high"]) == pytest.approx((one["G"], one["low"], one["high"]))

    all_right, all_wrong = [1.0] * n, [0.0] * n
    halves = [0.5] * n
    mean_only = endpoint_gap(reference, [(teacher_hi, halves), (teacher_lo, halves)], 0.6, resamples=300)
    crossed = endpoint_gap(reference, [(teacher_hi, [all_right, all_wrong]), (teacher_lo, [all_right, all_wrong])],
                           0.6, resamples=300)
    assert crossed["G"] == pytest.approx(mean_only["G"])
    assert crossed["high"] - crossed["low"] > 3 * (mean_only["high"] - mean_only["low"])
    with pytest.raises(ValueError, match="same problems"):
        endpoint_gap(reference, [(teacher_hi, [student, student[:-1]])], 0.6)
