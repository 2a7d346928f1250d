"""What a run folder holds and what its results say: where each point's files are, which students a point has,
the calibrated knobs, and the primary endpoint G and the per-target comparisons read from the scored files.

The pipeline plans its stages from this (which files exist) and reports from it; it generates nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness_plugin.io import read_jsonl

from .calibration import CALIBRATION_FILE, calibrated_entries, with_calibrated_knob
from .config import BenchConfig, GridPoint


class RunResults:
    """A run folder's layout and its scored results, for one configuration."""

    def __init__(self, config: BenchConfig, output: Path) -> None:
        self.config, self.output = config, output
        self.points_dir = output / "points"
        self._cache: dict[str, Any] = {}

    def point_dir(self, point: GridPoint) -> Path:
        return self.points_dir / point.name

    def is_first_seed(self, seed: int) -> bool:
        """The first seed's student keeps the plain names (`student/`, `student_eval.json`), as with one seed."""
        return seed == self.config.distill_seeds[0]

    def per_seed(self, point: GridPoint, seed: int, stem: str, suffix: str = "") -> Path:
        """`<point>/<stem><suffix>` for the first seed, `<point>/<stem>-seed<N><suffix>` for the others."""
        return self.point_dir(point) / (f"{stem}{suffix}" if self.is_first_seed(seed) else f"{stem}-seed{seed}{suffix}")

    def student_dir(self, point: GridPoint, seed: int) -> Path:
        return self.per_seed(point, seed, "student")

    def student_eval_path(self, point: GridPoint, seed: int) -> Path:
        return self.per_seed(point, seed, "student_eval", ".json")

    def student_accuracies(self, point: GridPoint, seeds: list[int] | None = None) -> list[float]:
        """The point's student accuracy per seed, for `seeds` (default: all of `point_seeds`)."""
        return [json.loads(self.student_eval_path(point, seed).read_text())["accuracy"]
                for seed in (self.point_seeds(point) if seeds is None else seeds)]

    def point_seeds(self, point: GridPoint) -> list[int]:
        """`distill.seeds` everywhere, plus `distill.endpoint_seeds` at the points that bracket T*."""
        extra = self.config.endpoint_seeds
        if extra and point.name in {p.name for p in self.endpoint_points()}:
            return self.config.distill_seeds + extra
        return self.config.distill_seeds

    def greedy_teacher_accuracy(self) -> float | None:
        """The clean (greedy) point's teacher accuracy on the test split, once it is scored."""
        clean = next((p for p in self.config.grid if p.is_clean), None)
        path = self.point_dir(clean) / "teacher_eval.json" if clean is not None else None
        return json.loads(path.read_text())["accuracy"] if path is not None and path.is_file() else None

    def t_star(self) -> float | None:
        """The teacher accuracy where G is read (`grid.endpoint`, times the greedy teacher's when relative)."""
        endpoint = self.config.endpoint
        if endpoint is None or not self.config["grid"]["targets_relative"]:
            return endpoint
        greedy = self.greedy_teacher_accuracy()
        return None if greedy is None else endpoint * greedy

    def endpoint_points(self) -> list[GridPoint]:
        """Per curve, the one or two points whose teacher accuracies bracket T*: where G is read, so where extra
        seeds narrow its interval. Empty until T* and all of a curve's teacher accuracies are known."""
        from .intervals import bracketing

        t_star = self.t_star() if self.config.endpoint_seeds else None
        if t_star is None:
            return []
        chosen: list[GridPoint] = []
        for curve in dict.fromkeys(p.curve for p in self.config.grid):
            points = [p for p in self.config.grid if p.curve == curve]
            paths = [self.point_dir(p) / "teacher_eval.json" for p in points]
            if all(path.is_file() for path in paths):
                accuracies = [json.loads(path.read_text())["accuracy"] for path in paths]
                chosen += [points[i] for i in bracketing(accuracies, t_star)]
        return chosen

    def resolve(self, point: GridPoint) -> GridPoint:
        """The point with its calibrated knob (from calibration.json); an explicit point as it is."""
        if point.target is None:
            return point
        entry = self.calibration_entry(point)
        if entry is None:
            raise RuntimeError(f"{point.name} is calibrated but {self.output / CALIBRATION_FILE} does not hold "
                               "it: the calibration stage must run first")
        return with_calibrated_knob(point, entry)

    def calibration_complete(self) -> bool:
        """calibration.json holds every calibrated point of this grid (a grid extended by a curve needs more; its
        saved probes make the existing curves' knobs come out the same)."""
        entries = calibrated_entries(self.output)
        return all(p.name in entries for p in self.config.grid if p.target is not None)

    def calibration_entry(self, point: GridPoint) -> dict[str, Any] | None:
        return calibrated_entries(self.output).get(point.name) if point.target is not None else None

    def _seed_outcomes(self, point: GridPoint, who: str) -> list[dict[str, float]]:
        """Per test problem id, 1/0: the teacher's (one entry), or each of the point's students' (one per seed)."""
        key = f"outcomes-{point.name}-{who}"
        if key not in self._cache:
            if who == "teacher":
                paths = [self.point_dir(point) / "teacher_samples.jsonl"]
            else:
                paths = [samples_path(self.student_eval_path(point, seed)) for seed in self.point_seeds(point)]
            self._cache[key] = [{str(r["id"]): float(r["correct"]) for r in read_jsonl(path)} for path in paths]
        return self._cache[key]

    def _outcomes(self, point: GridPoint, who: str) -> dict[str, float]:
        """Per test problem id: 1/0 for the teacher; for the student, the mean over its seeds."""
        per_seed = self._seed_outcomes(point, who)
        shared = set.intersection(*(set(d) for d in per_seed))
        return {i: sum(d[i] for d in per_seed) / len(per_seed) for i in shared}

    def endpoints(self) -> list[dict[str, Any]]:
        """The primary endpoint G per tilted sampler (`grid.endpoint`; see `intervals.endpoint_gap`)."""
        from .intervals import endpoint_gap

        endpoint, t_star = self.config.endpoint, self.t_star()
        if endpoint is None or t_star is None:
            return []  # no endpoint, or a relative one without the greedy point
        greedy = self.greedy_teacher_accuracy()
        relative = bool(self.config["grid"]["targets_relative"])
        points = list(map(self.resolve, self.config.grid))
        outcomes = {p.name: (self._seed_outcomes(p, "teacher")[0], self._seed_outcomes(p, "student")) for p in points}
        ids = sorted(set.intersection(*(set(t).intersection(*seeds) for t, seeds in outcomes.values())))

        def outcomes_on(curve: str) -> list[tuple[list[float], list[list[float]]]]:
            """Per point: the teacher's outcomes and each seed's student outcomes (the bootstrap draws seeds too)."""
            return [([outcomes[p.name][0][i] for i in ids], [[seed[i] for i in ids] for seed in outcomes[p.name][1]])
                    for p in points if p.curve == curve]

        reference = outcomes_on("temperature")
        result = []
        for curve, sampler in self.tilted_curves().items():
            other = outcomes_on(curve)
            if reference and other:
                gap = endpoint_gap(reference, other, t_star, seed=int(self.config["generation"]["seed"]))
                result.append({"sampler": sampler, "curve": curve, "endpoint": endpoint, "relative": relative,
                               "greedy_teacher_accuracy": greedy, **gap})
        return result

    def tilted_curves(self) -> dict[str, str]:
        """Every tilted curve of the grid (antidistillation, permutation, then the extra penalties') -> its sampler."""
        curves = {p.curve: p.sampler for p in self.config.grid if p.sampler != "temperature"}
        return dict(sorted(curves.items(), key=lambda item: (item[0] != item[1], item[1] != "antidistillation")))

    def comparisons(self) -> list[dict[str, Any]]:
        """At each calibration target: tilted sampler minus temperature, for students and teachers, with a paired
        bootstrap interval over the test problems (the same problems scored for both)."""
        from .intervals import paired_bootstrap_difference, paired_outcomes

        calibrated = [p for p in self.config.grid if p.target is not None]
        baselines = {p.target: p for p in calibrated if p.sampler == "temperature"}
        result = []
        for point in calibrated:
            reference = baselines.get(point.target)
            if point.sampler == "temperature" or reference is None:
                continue
            row: dict[str, Any] = {"sampler": point.sampler, "curve": point.curve, "target": point.target,
                                   "point": point.name,
                                   "reference_point": reference.name}
            for who in ("student", "teacher"):
                a, b = paired_outcomes(self._outcomes(point, who), self._outcomes(reference, who))
                row[who] = paired_bootstrap_difference(a, b, seed=int(self.config["generation"]["seed"]))
            result.append(row)
        return result


def samples_path(evaluation: Path) -> Path:
    """The per-problem records beside an evaluation: `student_eval-seed1.json` -> `student_samples-seed1.jsonl`."""
    return evaluation.with_name(evaluation.stem.replace("_eval", "_samples") + ".jsonl")
