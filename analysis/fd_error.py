"""How far the finite-difference penalty is from the exact one (paper Fig. 4/7), against ε and proxy dtype.

For every sampled position of real traces (a prompt + completion prefix) we compute Δ_fd(ε) with the proxy in
fp32, bf16 and fp16, and Δ_jvp (exact directional derivative, fp32) as the reference, and measure the angle θ
between the two vectors over the vocabulary: |sin θ| = sqrt(1 − cos²θ). Small ε drowns the difference of two
nearly equal log-probabilities in rounding error, large ε leaves the linear regime: the error curve is a U.
Non-finite or all-zero Δ (an fp16 proxy overflowing, or ε below the dtype's resolution) is counted, never fatal.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness_plugin.io import atomic_write_text
from harness_plugin.names import DTYPE_SPELLINGS

from .style import DTYPE_STYLE, OKABE_ITO, pyplot, save_figure, short_model_name

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from harness_plugin.gradient import ProxyGradient

DEFAULT_EPS_GRID = tuple(float(f"{v:.3g}") for v in np.logspace(-6, 1, 15))
DEFAULT_DTYPES = ("float32", "bfloat16", "float16")


def normalise_dtype(name: str) -> str:
    name = DTYPE_SPELLINGS.get(name.strip().lower(), name.strip().lower())
    if name not in DTYPE_STYLE:
        raise ValueError(f"unknown dtype {name!r}: use float32, bfloat16 or float16")
    return name


def eps_grid_with(eps_in_use: float, grid: Sequence[float] = DEFAULT_EPS_GRID) -> list[float]:
    """The sweep plus the ε in use (unless an entry already equals it), ascending."""
    values = [float(e) for e in grid if e > 0 and math.isfinite(e)]
    if not any(math.isclose(e, eps_in_use, rel_tol=1e-6) for e in values):
        values.append(float(eps_in_use))
    return sorted(values)


def abs_sin(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """|sin θ| between two vectors, NaN when either is zero or non-finite (never a division by zero).

    Computed as ‖a − proj_b a‖ / ‖a‖ in float64, which equals sqrt(1 − cos²θ) but keeps precision when θ is tiny
    (where 1 − cos² would cancel to 0).
    """
    x = np.asarray(a.detach().cpu().double() if hasattr(a, "detach") else a, dtype=np.float64).ravel()
    y = np.asarray(b.detach().cpu().double() if hasattr(b, "detach") else b, dtype=np.float64).ravel()
    if x.shape != y.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    scale_x = float(np.max(np.abs(x), initial=0.0))
    scale_y = float(np.max(np.abs(y), initial=0.0))
    if not (scale_x > 0 and scale_y > 0):
        return math.nan
    x, y = x / scale_x, y / scale_y  # scale first, so squaring cannot overflow or underflow
    x_unit, y_unit = x / np.linalg.norm(x), y / np.linalg.norm(y)
    residual = x_unit - float(x_unit @ y_unit) * y_unit
    return min(1.0, float(np.linalg.norm(residual)))


def sample_positions(tokenizer: PreTrainedTokenizerBase, traces: Sequence[Mapping[str, Any]], count: int,
                     seed: int = 0, max_length: int | None = None) -> list[list[int]]:
    """`count` prefixes (token ids) drawn uniformly from all completion positions of the traces.

    A prefix is the prompt plus the first k completion tokens, i.e. exactly what the proxy sees when the
    sampler picks completion token k + 1.
    """
    from harness_plugin.tokens import encode_trace

    from .errors import AnalysisError

    candidates: list[tuple[int, int]] = []
    encoded = []
    for index, trace in enumerate(traces):
        if not isinstance(trace.get("prompt"), str) or not isinstance(trace.get("completion"), str):
            raise AnalysisError(f"trace {index} needs string fields 'prompt' and 'completion'")
        trace_ids = encode_trace(tokenizer, trace["prompt"], trace["completion"], append_eos=False,
                                 max_length=max_length)
        encoded.append(trace_ids.input_ids)
        candidates += [(index, cut) for cut in range(max(1, trace_ids.prompt_length), len(trace_ids.input_ids))]
    if not candidates:
        raise AnalysisError("the traces have no completion tokens to evaluate Δ at: check the traces file "
                            "(one {\"prompt\": ..., \"completion\": ...} per line) and --max-length.")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    return [encoded[candidates[i][0]][: candidates[i][1]] for i in sorted(chosen)]


@dataclass
class FdErrorPoint:
    dtype: str
    eps: float
    mean: float
    median: float
    q25: float
    q75: float
    n_positions: int
    n_finite: int
    n_nonfinite: int
    n_zero: int


@dataclass
class FdErrorResult:
    points: list[FdErrorPoint]
    eps_in_use: float
    proxy: str
    grad_norm: float
    n_positions: int
    dataset: str
    meta: dict[str, Any] = field(default_factory=dict)

    def curve(self, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        rows = sorted((p for p in self.points if p.dtype == dtype), key=lambda p: p.eps)
        return np.array([p.eps for p in rows]), np.array([p.mean for p in rows])

    def at(self, dtype: str, eps: float) -> FdErrorPoint | None:
        return next((p for p in self.points if p.dtype == dtype and math.isclose(p.eps, eps, rel_tol=1e-6)), None)

    def to_json(self) -> str:
        record = {k: v for k, v in asdict(self).items() if k != "points"}
        record["points"] = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                             for k, v in asdict(p).items()} for p in self.points]
        return json.dumps(record, indent=2) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        names = list(FdErrorPoint.__dataclass_fields__)
        writer.writerow(["abs_sin_" + n if n in ("mean", "median", "q25", "q75") else n for n in names])
        for p in self.points:
            writer.writerow([("" if isinstance(v, float) and not math.isfinite(v) else
                              (f"{v:.6g}" if isinstance(v, float) else v)) for v in asdict(p).values()])
        return buffer.getvalue()


def _summarise(dtype: str, eps: float, values: list[float], n_nonfinite: int, n_zero: int) -> FdErrorPoint:
    finite = np.array([v for v in values if math.isfinite(v)])
    if finite.size:
        mean, median = float(finite.mean()), float(np.median(finite))
        q25, q75 = (float(q) for q in np.percentile(finite, [25, 75]))
    else:
        mean = median = q25 = q75 = math.nan
    return FdErrorPoint(dtype, eps, mean, median, q25, q75, len(values), int(finite.size), n_nonfinite, n_zero)


def measure_fd_error(proxy: PreTrainedModel, gradient: ProxyGradient, prefixes: Sequence[Sequence[int]],
                     eps_values: Sequence[float], dtypes: Sequence[str] = DEFAULT_DTYPES,
                     vocab_size: int | None = None, batch_size: int = 16,
                     progress: bool = True) -> list[FdErrorPoint]:
    """Mean |sin θ| between Δ_fd(ε, dtype) and Δ_jvp (fp32) over `prefixes`, for every ε and dtype.

    `proxy` should be in float32: the ±εg perturbation is added in fp32 and then cast to each dtype. Positions
    are batched (left padding; the penalty derives position ids from the mask), and a batch whose Δ is not
    finite is redone one position at a time, so one overflowing position does not void the others.
    """
    import torch
    from tqdm.auto import tqdm

    from harness_plugin.errors import NonFinitePenaltyError
    from harness_plugin.penalty import AntidistillationPenalty

    device = next(proxy.parameters()).device

    def padded(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
        return ids.to(device), mask.to(device)

    def deltas(penalty: AntidistillationPenalty) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        for start in range(0, len(prefixes), max(1, batch_size)):
            chunk = prefixes[start:start + max(1, batch_size)]
            penalty.reset()
            try:
                out += list(penalty(*padded(chunk)).double().cpu())
                continue
            except NonFinitePenaltyError:
                pass
            for row in chunk:
                penalty.reset()
                try:
                    out.append(penalty(*padded([row]))[0].double().cpu())
                except NonFinitePenaltyError:
                    out.append(None)
        return out

    reference = deltas(AntidistillationPenalty(proxy, gradient, method="jvp", dtype="float32",
                                               vocab_size=vocab_size))
    usable = [i for i, r in enumerate(reference) if r is not None and bool(r.abs().sum() > 0)]
    points = []
    combos = [(d, e) for d in dtypes for e in eps_values]
    for dtype, eps in tqdm(combos, desc="fd error (dtype × ε)", unit="setting", disable=not progress):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the fp16 overflow warning: overflow is what we measure
            penalty = AntidistillationPenalty(proxy, gradient, eps=eps, method="fd", dtype=dtype,
                                              vocab_size=vocab_size)
        values, nonfinite, zero = [], 0, 0
        for i, delta in enumerate(deltas(penalty)):
            if i not in usable:
                continue
            if delta is None:
                nonfinite += 1
                values.append(math.nan)
                continue
            value = abs_sin(delta, reference[i])  # type: ignore[arg-type]
            zero += int(not math.isfinite(value))
            values.append(value)
        points.append(_summarise(dtype, eps, values, nonfinite, zero))
        del penalty
    return points


def plot_fd_error(result: FdErrorResult, directory: str | Path, stem: str = "fd_error") -> list[Path]:
    """Log–log |sin θ| against ε per dtype, interquartile band, ε in use marked, failed settings shown as ×."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    dtypes = [d for d in DTYPE_STYLE if any(p.dtype == d for p in result.points)]
    finite_values = [v for p in result.points for v in (p.mean, p.q25) if math.isfinite(v) and v > 0]
    floor = 10 ** math.floor(math.log10(min(finite_values))) / 3 if finite_values else 1e-8
    ceiling = 1.5
    failed_any = False
    for dtype in dtypes:
        style = DTYPE_STYLE[dtype]
        rows = sorted((p for p in result.points if p.dtype == dtype), key=lambda p: p.eps)
        eps = np.array([p.eps for p in rows])
        mean = np.array([max(p.mean, floor) if math.isfinite(p.mean) else np.nan for p in rows])
        low = np.array([max(p.q25, floor) if math.isfinite(p.q25) else np.nan for p in rows])
        high = np.array([max(p.q75, floor) if math.isfinite(p.q75) else np.nan for p in rows])
        ax.fill_between(eps, low, high, color=style["color"], alpha=0.15, linewidth=0)
        ax.plot(eps, mean, color=style["color"], marker=style["marker"], markersize=5, linewidth=1.8,
                label=f"{style['label']} proxy")
        failed = np.array([not math.isfinite(p.mean) for p in rows])
        if failed.any():
            failed_any = True
            ax.scatter(eps[failed], np.full(int(failed.sum()), ceiling * 0.8), marker="x", s=50,
                       color=style["color"], zorder=4)
        in_use = result.at(dtype, result.eps_in_use)
        if in_use is not None and math.isfinite(in_use.mean):
            ax.scatter([in_use.eps], [max(in_use.mean, floor)], s=130, facecolors="none",
                       edgecolors=style["color"], linewidths=1.8, zorder=5)
    ax.axvline(result.eps_in_use, color=OKABE_ITO["black"], linestyle=":", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(1e-6, min(p.eps for p in result.points)) / 2, max(1e1, max(p.eps for p in result.points)) * 2)
    ax.set_ylim(floor, ceiling)
    ax.set_xlabel("Finite-difference step ε")
    ax.set_ylabel("Relative error |sin θ| (Δ_fd vs Δ_jvp)")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color=OKABE_ITO["black"], linestyle=":",
                          label=f"ε in use = {result.eps_in_use:g}"))
    if failed_any:
        handles.append(Line2D([], [], color="#555555", marker="x", linestyle="none",
                              label="no finite, non-zero Δ at any position"))
    ax.legend(handles=handles, loc="best", fontsize=9)
    ax.set_title(f"Finite-difference error of the penalty on {result.dataset} traces\n"
                 f"proxy {short_model_name(result.proxy)} (‖g‖ = {result.grad_norm:.3g}), "
                 f"mean over {result.n_positions} positions; band: interquartile range", fontsize=10)
    fig.tight_layout()
    paths = save_figure(fig, directory, stem)
    plt.close(fig)
    return paths


def write_fd_error(result: FdErrorResult, directory: str | Path, stem: str = "fd_error") -> list[Path]:
    """The data (CSV and JSON) and the figure (PNG and PDF)."""
    directory = Path(directory)
    data = [atomic_write_text(directory / f"{stem}.csv", result.to_csv()),
            atomic_write_text(directory / f"{stem}.json", result.to_json())]
    return data + plot_fd_error(result, directory, stem)
