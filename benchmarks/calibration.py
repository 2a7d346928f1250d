"""Find each sampler's knob (τ for temperature, λ for the tilted samplers) that reaches a target teacher accuracy.

Why: the question the suite answers is "at the same teacher accuracy, how much worse is the student?". Fixed knob
lists leave sampler curves that barely overlap in teacher accuracy (and a λ that suits one world is far too strong
in another: on toy world v2, λ = 0.5 took the teacher from 37% to 5%). Calibrating every sampler to the same
targets puts their points side by side, so students can be compared point by point.

The search is a bisection on the log of the knob over a calibration subset of holdout problems, assuming accuracy
falls as the knob grows. Every probe is kept, and a target's bracket is the tightest one over all probes so far,
so later targets reuse earlier probes. The point chosen for a target is the probed knob whose accuracy came
closest to it: its calibration accuracy is a measurement, not an interpolation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# What each sampler's calibrated knob is, and the range searched (log-bisection, so the range may be wide).
KNOBS = {"temperature": "tau", "antidistillation": "lam", "permutation": "lam"}
BOUNDS = {"tau": (0.05, 4.0), "lam": (1e-3, 10.0)}
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Probe:
    """One measured setting: the knob's value and the teacher's accuracy on the calibration problems."""

    knob: float
    accuracy: float
    n: int
    target: float  # the target this probe was searching for


def next_knob(probes: Sequence[Probe], target: float, bounds: tuple[float, float]) -> float | None:
    """The geometric middle of the tightest bracket of `target`; None when the probes leave no open bracket."""
    low, high = bounds
    for probe in probes:
        if probe.accuracy >= target:
            low = max(low, probe.knob)
        else:
            high = min(high, probe.knob)
    if low >= high:  # noise made accuracy rise with the knob somewhere: the closest probe is the answer
        return None
    return math.sqrt(low * high)


def calibrate(measure: Callable[[float], tuple[float, int]], targets: Sequence[float], bounds: tuple[float, float],
              probes_per_target: int, log: Callable[[Probe], None] | None = None,
              probes: Sequence[Probe] = ()) -> tuple[dict[float, Probe], list[Probe]]:
    """Probe `measure(knob) -> (accuracy, n)` and return, per target, the closest probe, and all probes.

    `probes` are earlier measurements (a resumed calibration); they count toward each target's probe budget only
    when they were made for that target.
    """
    if probes_per_target < 1:
        raise ValueError(f"need at least one probe per target, got {probes_per_target}")
    done = list(probes)
    chosen: dict[float, Probe] = {}
    for target in sorted(targets, reverse=True):
        while sum(p.target == target for p in done) < probes_per_target:
            knob = next_knob(done, target, bounds)
            if knob is None or any(math.isclose(knob, p.knob, rel_tol=1e-9) for p in done):
                break
            accuracy, n = measure(knob)
            probe = Probe(knob=knob, accuracy=accuracy, n=n, target=target)
            done.append(probe)
            if log is not None:
                log(probe)
        if not done:
            raise ValueError("calibration made no probe")
        chosen[target] = min(done, key=lambda p: (abs(p.accuracy - target), -done.index(p)))
    return chosen, done


def probe_dicts(probes: Sequence[Probe]) -> list[dict]:
    return [asdict(p) for p in probes]


def probes_from_dicts(rows: Sequence[dict]) -> list[Probe]:
    return [Probe(**row) for row in rows]


def calibrated_entries(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The calibrated points of a run folder, by point name ({} before its calibration stage has run)."""
    path = Path(run_dir) / CALIBRATION_FILE
    return json.loads(path.read_text())["points"] if path.is_file() else {}


def with_calibrated_knob(point: Any, entry: dict[str, Any]) -> Any:
    """A calibrated grid point (`benchmarks.config.GridPoint`) with the τ and λ its calibration found."""
    return replace(point, tau=float(entry["tau"]), lam=float(entry["lam"]))
