"""Figures from tallies: accuracy, false positives and negatives, latency percentiles, markdown tables."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from benchmarks.answers.checkers import Tally


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(tally: Tally) -> dict:
    latencies = tally.latencies
    total = sum(latencies)
    return {
        "pairs": tally.pairs,
        "accuracy": tally.correct / tally.pairs if tally.pairs else float("nan"),
        "false_positives": tally.false_positives,
        "false_negatives": tally.false_negatives,
        "checks_per_s": tally.pairs / total if total else float("inf"),
        "p50_ms": 1000 * _percentile(latencies, 0.50),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
    }


def _overall(tallies: dict[str, Tally]) -> Tally:
    merged = Tally()
    for key, tally in tallies.items():
        if "/" in key or ":" in key:
            continue
        merged.pairs += tally.pairs
        merged.correct += tally.correct
        merged.false_positives += tally.false_positives
        merged.false_negatives += tally.false_negatives
        merged.latencies.extend(tally.latencies)
    return merged


def format_table(results: dict[str, dict[str, Tally]], keys: Iterable[str]) -> str:
    names = list(results)
    header = ["set", "pairs"]
    for name in names:
        header += [f"{name} acc", f"{name} FP", f"{name} FN", f"{name} p50 ms", f"{name} p99 ms", f"{name} checks/s"]
    rows = [header]
    for key in keys:
        present = [results[name].get(key) for name in names]
        if not any(present):
            continue
        row = [key, str(next(t.pairs for t in present if t))]
        for tally in present:
            if tally is None:
                row += ["-"] * 6
                continue
            s = summarize(tally)
            row += [
                f"{100 * s['accuracy']:.2f}%",
                str(s["false_positives"]),
                str(s["false_negatives"]),
                f"{s['p50_ms']:.3f}",
                f"{s['p99_ms']:.2f}",
                f"{s['checks_per_s']:.0f}",
            ]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


