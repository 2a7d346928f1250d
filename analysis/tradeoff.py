"""The trade-off figure (paper Figs. 1–3): distilled-student accuracy against teacher accuracy, per sampler.

One point per grid run, a LOWESS curve with a bootstrap band per sampler, the undistilled student as a
horizontal line. The teacher axis runs from high to low accuracy, like the paper's: moving right means paying
more teacher accuracy, and a good sampler's curve drops fastest.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from harness_plugin.io import atomic_write_text

from .lowess import DEFAULT_FRAC, lowess_with_band
from .runs import ACCURACY_METRICS, BenchmarkResults
from .style import BASELINE_COLOR, curve_style, pyplot, save_figure, short_model_name
from .summary import PANELS


def figure_title(results: BenchmarkResults) -> str:
    dataset = results.describe("dataset") or results.experiment_name
    preset = results.describe("preset")
    models = ", ".join(f"{role} {short_model_name(results.describe(role))}" for role in ("teacher", "proxy", "student"))
    return f"{dataset.upper() if len(dataset) <= 6 else dataset}{f' ({preset} preset)' if preset else ''}\n{models}"


# The second x-axis issue 13 asks for: how correct the distillation data itself is, next to the teacher's test
# accuracy (a tilted sampler may keep the teacher's test accuracy while its traces carry less).
TRACE_PANELS = (("raw", "train_traces_accuracy", "student_accuracy", "Raw accuracy, by the train traces' correctness"),)
_X_LABELS = {"train_traces_accuracy": "Correct train traces (high → low)"}


def plot_tradeoff(results: BenchmarkResults, directory: str | Path, n_boot: int = 1000, frac: float = DEFAULT_FRAC,
                  seed: int = 0, stem: str = "tradeoff", panels: tuple = PANELS) -> list[Path]:
    """Draw the panels (default: raw and answer-forced) and save `stem.png` and `stem.pdf` in `directory`."""
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), sharey=True, layout="constrained",
                             squeeze=False)
    axes = axes[0]
    drew_intervals = False
    for ax, (panel, x_metric, y_metric, title) in zip(axes, panels):
        base = results.base_accuracy if panel == "raw" else (results.base_accuracy_af or results.base_accuracy)
        drawn = False
        all_x: list[float] = []
        for sampler in results.curves():
            xs, ys = results.series(sampler, x_metric, y_metric)
            if not xs:
                continue
            drawn = True
            all_x += xs
            style = curve_style(sampler)
            ax.scatter(xs, ys, color=style["color"], marker=style["marker"], s=28, alpha=0.85, zorder=3,
                       edgecolors="white", linewidths=0.5)
            intervals = _point_intervals(results, sampler, x_metric, y_metric)
            if intervals:
                drew_intervals = True
                for x, y, (x_lo, x_hi), (y_lo, y_hi) in intervals:
                    ax.errorbar([x], [y], xerr=[[x - x_lo], [x_hi - x]], yerr=[[y - y_lo], [y_hi - y]],
                                color=style["color"], alpha=0.5, linewidth=1, capsize=2, zorder=2, fmt="none")
            if len(set(xs)) >= 2:
                grid = np.linspace(min(xs), max(xs), 120)
                curve = lowess_with_band(xs, ys, grid, frac=frac, n_boot=n_boot, seed=seed)
                ax.fill_between(grid, curve.low, curve.high, color=style["color"], alpha=0.18, linewidth=0)
                ax.plot(grid, curve.fit, color=style["color"], linestyle=style["linestyle"], linewidth=2)
        if base is not None:
            ax.axhline(base, color=BASELINE_COLOR, linestyle="--", linewidth=1.3, zorder=2)
        if panel == "raw" and drawn and x_metric == "teacher_accuracy":
            _draw_endpoint(ax, results)
        if not drawn:
            ax.text(0.5, 0.5, f"no {x_metric} / {y_metric}\nlogged in this experiment", transform=ax.transAxes,
                    ha="center", va="center", color=BASELINE_COLOR)
        elif all_x:
            lo, hi = min(all_x), max(all_x)
            pad = max(0.02, 0.05 * (hi - lo))
            ax.set_xlim(min(1.0, hi + pad), max(0.0, lo - pad))  # high -> low, like the paper
        base_note = "" if panel == "raw" or results.base_accuracy_af is not None else " (undistilled: raw)"
        ax.set_title(f"{title}{base_note}")
        ax.set_xlabel(_X_LABELS.get(x_metric, "Teacher accuracy (high → low)"))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes[0].set_ylabel("Distilled student accuracy")
    handles: list[Artist] = [Line2D([], [], color=style["color"], marker=style["marker"], linestyle=style["linestyle"],
                                    linewidth=2, label=style["label"]) for style in map(curve_style, results.curves())]
    handles.append(Patch(color="#999999", alpha=0.35, label="LOWESS, 95% bootstrap interval"))
    if drew_intervals:
        handles.append(Line2D([], [], color="#777777", marker="|", linewidth=1,
                              label="95% Wilson interval per point (test problems)"))
    if results.base_accuracy is not None:
        handles.append(Line2D([], [], color=BASELINE_COLOR, linestyle="--",
                              label=f"Undistilled student ({100 * results.base_accuracy:.1f}%)"))
    # At most four entries a row: one row of eight (five curves) made the figure twice as wide as its panels.
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4))
    fig.suptitle(figure_title(results))
    paths = save_figure(fig, directory, stem)
    plt.close(fig)
    return paths


def _draw_endpoint(ax, results: BenchmarkResults) -> None:
    """The primary endpoint: a vertical line at T*, labelled with G and its interval per tilted sampler."""
    endpoint = results.endpoint()
    if endpoint is None:
        return
    t_star, gaps = endpoint
    ax.axvline(t_star, color=BASELINE_COLOR, linestyle=":", linewidth=1.2, zorder=1)
    lines = [f"T* = {100 * t_star:.1f}%"]
    for sampler, (gap, low, high) in gaps.items():
        interval = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and high is not None else ""
        lines.append(f"G vs {curve_style(sampler)['label'].lower()}: {100 * gap:+.1f}{interval}")
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"})


def _point_intervals(results: BenchmarkResults, sampler: str, x_metric: str, y_metric: str
                     ) -> list[tuple[float, float, tuple[float, float], tuple[float, float]]]:
    """(x, y, x interval, y interval) of the sampler's points whose runs logged `<metric>_low` / `_high`."""
    out = []
    for point in results.points:
        values = [point.metric(name) for name in (x_metric, y_metric, f"{x_metric}_low", f"{x_metric}_high",
                                                    f"{y_metric}_low", f"{y_metric}_high")]
        if point.curve == sampler and all(v is not None for v in values):
            x, y, x_lo, x_hi, y_lo, y_hi = values  # type: ignore[misc]
            out.append((x, y, (x_lo, x_hi), (y_lo, y_hi)))
    return out


def write_points_csv(results: BenchmarkResults, directory: str | Path) -> Path:
    """The plotted data, one row per grid run, so a reader can redraw or check the figure."""
    params = ("tau", "lam", "eps", "grad_norm")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run_id", "sampler", *params, *ACCURACY_METRICS])
    for point in results.points:
        values = [point.metric(m) for m in ACCURACY_METRICS]
        writer.writerow([point.run_id, point.curve, *(point.params.get(p, "") for p in params),
                         *("" if v is None else f"{v:.6g}" for v in values)])
    return atomic_write_text(Path(directory) / "grid_points.csv", buffer.getvalue())
