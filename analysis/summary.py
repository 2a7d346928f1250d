"""The summary table: each sampler's student accuracy at matched teacher accuracies, and the headline number.

Matching runs along each sampler's LOWESS curve (the same fit the trade-off figure draws), never beyond the
teacher accuracies that sampler actually reached. The headline: coming down from the highest teacher accuracy,
the teacher accuracy at which the distilled student first scores below the undistilled student.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness_plugin.io import atomic_write_text

from .lowess import DEFAULT_FRAC, lowess
from .runs import BenchmarkResults
from .style import curve_style

PANELS = (
    ("raw", "teacher_accuracy", "student_accuracy", "Raw accuracy"),
    ("answer_forced", "teacher_accuracy_af", "student_accuracy_af", "Answer-forced accuracy"),
)
_FINE = 2001


@dataclass(frozen=True)
class Crossing:
    """Where a sampler's student falls below the undistilled student, as teacher accuracy drops.

    kind: "crossing" (value is the teacher accuracy where it happens), "already_below" (below at the highest
    teacher accuracy measured, value = that accuracy), "not_reached" (never below down to value = the lowest
    teacher accuracy measured), or "unknown" (no undistilled accuracy logged, or too few points).
    """

    kind: str
    value: float | None

    def text(self) -> str:
        if self.value is None or self.kind == "unknown":
            return "n/a"
        if self.kind == "already_below":
            return f"≥ {100 * self.value:.1f}% (below at every measured level)"
        if self.kind == "not_reached":
            return f"< {100 * self.value:.1f}% (not reached)"
        return f"{100 * self.value:.1f}%"


@dataclass(frozen=True)
class SamplerSummary:
    sampler: str
    n_runs: int
    teacher_min: float | None
    teacher_max: float | None
    at_levels: dict[float, float | None]
    crossing: Crossing


@dataclass(frozen=True)
class Summary:
    panel: str
    title: str
    base_accuracy: float | None
    levels: list[float]
    rows: list[SamplerSummary]


def find_crossing(x: list[float], y: list[float], base: float | None, frac: float = DEFAULT_FRAC) -> Crossing:
    """Scan the fitted curve from high to low teacher accuracy for the first point below `base`."""
    if base is None or len(set(x)) < 2:
        return Crossing("unknown", None)
    high, low = max(x), min(x)
    grid = np.linspace(high, low, _FINE)
    gap = lowess(x, y, grid, frac=frac) - base
    if gap[0] < 0:
        return Crossing("already_below", high)
    below = np.flatnonzero(gap < 0)
    if below.size == 0:
        return Crossing("not_reached", low)
    i = int(below[0])
    # Linear interpolation between the last grid point above and the first below (exact for a linear fit).
    x0, x1, g0, g1 = grid[i - 1], grid[i], gap[i - 1], gap[i]
    return Crossing("crossing", float(x0 + (x1 - x0) * g0 / (g0 - g1)))


def default_levels(results: BenchmarkResults, x_metric: str = "teacher_accuracy", step: float = 0.1) -> list[float]:
    """Multiples of `step` inside at least one sampler's measured teacher-accuracy range, high to low."""
    ranges = []
    for sampler in results.curves():
        xs, _ = results.series(sampler, x_metric, x_metric.replace("teacher", "student"))
        if len(xs) >= 2:
            ranges.append((min(xs), max(xs)))
    levels = {round(k * step, 6) for k in range(int(round(1 / step)) + 1)
              if any(lo - 1e-9 <= k * step <= hi + 1e-9 for lo, hi in ranges)}
    return sorted(levels, reverse=True)


def summarise(results: BenchmarkResults, levels: list[float] | None = None,
              frac: float = DEFAULT_FRAC) -> list[Summary]:
    """One Summary per accuracy kind (raw, answer-forced) that has data."""
    summaries = []
    for panel, x_metric, y_metric, title in PANELS:
        base = results.base_accuracy if panel == "raw" else (results.base_accuracy_af or results.base_accuracy)
        panel_levels = sorted(levels, reverse=True) if levels else default_levels(results, x_metric)
        rows = []
        for sampler in results.curves():
            xs, ys = results.series(sampler, x_metric, y_metric)
            if not xs:
                continue
            values = lowess(xs, ys, panel_levels, frac=frac) if panel_levels else np.array([])
            at_levels = {lvl: (float(v) if math.isfinite(v) else None) for lvl, v in zip(panel_levels, values)}
            rows.append(SamplerSummary(sampler, len(xs), min(xs), max(xs), at_levels,
                                       find_crossing(xs, ys, base, frac=frac)))
        if rows:
            summaries.append(Summary(panel, title, base, panel_levels, rows))
    return summaries


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def to_markdown(summaries: list[Summary], heading: str) -> str:
    lines = [f"# {heading}", ""]
    for summary in summaries:
        lines += [f"## {summary.title}", "",
                  f"Undistilled student: {_pct(summary.base_accuracy)}. Student accuracy at matched teacher "
                  "accuracy (LOWESS through each sampler's runs, no extrapolation: — = outside the sampler's range).",
                  ""]
        header = ["Sampler", "Runs"] + [f"T={100 * lvl:.0f}%" for lvl in summary.levels]
        header.append("Teacher acc. where student < undistilled")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in summary.rows:
            cells = [curve_style(row.sampler)["label"], str(row.n_runs)]
            cells += [_pct(row.at_levels[lvl]) for lvl in summary.levels]
            cells.append(row.crossing.text())
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def to_csv(summaries: list[Summary]) -> str:
    """Long format: one row per (accuracy kind, sampler, teacher level), plus one 'crossing' row per sampler."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["accuracy", "sampler", "quantity", "teacher_accuracy", "student_accuracy", "detail",
                     "n_runs", "base_accuracy"])
    for summary in summaries:
        for row in summary.rows:
            common = [row.n_runs, "" if summary.base_accuracy is None else f"{summary.base_accuracy:.6g}"]
            for lvl in summary.levels:
                value = row.at_levels[lvl]
                writer.writerow([summary.panel, row.sampler, "student_at_teacher", f"{lvl:.6g}",
                                 "" if value is None else f"{value:.6g}", "", *common])
            cross = row.crossing
            writer.writerow([summary.panel, row.sampler, "teacher_where_student_below_base",
                             "" if cross.value is None else f"{cross.value:.6g}", "", cross.kind, *common])
    return buffer.getvalue()


def write_summary(summaries: list[Summary], directory: str | Path, heading: str) -> list[Path]:
    directory = Path(directory)
    return [atomic_write_text(directory / "summary.md", to_markdown(summaries, heading)),
            atomic_write_text(directory / "summary.csv", to_csv(summaries))]
