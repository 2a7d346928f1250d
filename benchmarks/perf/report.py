"""Turning perf rows into a table, a verdict on each target of the performance issue, and a README section."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FLOOR_SLACK = 1.25  # ads-fd slowdown within 1.25x of the FLOP floor
NOCACHE_SPEEDUP = 3.0
REFERENCE_GOAL_BATCH1 = 1.3
FLAT_SLACK = 1.25  # slowdown at the longest length within 1.25x of the shortest
MEMORY_SLACK = 1.10


def _rows(results: dict[str, Any], models: str, method: str) -> dict[tuple[int, int], dict[str, Any]]:
    return {(r["batch"], r["new_tokens"]): r for r in results["results"]
            if r["models"] == models and r["method"] == method and r.get("tokens_per_s")}


def _verdict(name: str, met: bool | None, detail: str, models: str) -> dict[str, Any]:
    return {"target": name, "models": models, "met": met, "detail": detail}


def _all(values: Iterable[bool]) -> bool | None:
    values = list(values)
    return all(values) if values else None


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per target and model set; `met` is None where the grid has no row to judge it by."""
    verdicts = []
    for info in results["model_sets"]:
        name, floor = info["name"], info["flop_floor_ratio"]
        plain, fd = _rows(results, name, "plain"), _rows(results, name, "ads-fd")
        ref, nocache = _rows(results, name, "reference"), _rows(results, name, "nocache")

        checks = [(cell, plain[cell]["tokens_per_s"] / fd[cell]["tokens_per_s"])
                  for cell in sorted(fd) if cell in plain and cell[0] >= 8]
        detail = "; ".join(f"b={b} n={n}: {s:.2f}x" for (b, n), s in checks)
        verdicts.append(_verdict(f"ads-fd slowdown vs plain <= {FLOOR_SLACK} x floor ({FLOOR_SLACK * floor:.2f}x) "
                                 "at batch >= 8", _all(s <= FLOOR_SLACK * floor for _, s in checks),
                                 detail or "no batch >= 8 rows", name))

        common = sorted(set(fd) & set(nocache))
        at_256 = [c for c in common if c[1] == 256] or ([c for c in common if c[1] == max(n for _, n in common)]
                                                          if common else [])
        speedups = [(c, fd[c]["tokens_per_s"] / nocache[c]["tokens_per_s"]) for c in at_256]
        detail = "; ".join(f"b={b} n={n}: {s:.1f}x" for (b, n), s in speedups)
        met = _all(s >= NOCACHE_SPEEDUP for _, s in speedups)
        if at_256 and at_256[0][1] != 256:  # not judged: the gap grows with length
            detail, met = f"no 256-token nocache rows; at the longest measured: {detail}", None
        verdicts.append(_verdict(f"ads-fd >= {NOCACHE_SPEEDUP:.0f}x faster than nocache at 256 new tokens", met,
                                 detail or "no nocache rows", name))

        pairs = [(c, fd[c]["tokens_per_s"] / ref[c]["tokens_per_s"]) for c in sorted(set(fd) & set(ref))]
        detail = "; ".join(f"b={b} n={n}: {s:.2f}x" for (b, n), s in pairs)
        verdicts.append(_verdict("ads-fd faster than reference at every batch size",
                                 _all(s > 1.0 for _, s in pairs), detail or "no reference rows", name))
        batch1 = [s for (b, _), s in pairs if b == 1]
        verdicts.append(_verdict(f"goal: ads-fd >= {REFERENCE_GOAL_BATCH1}x reference at batch 1",
                                 _all(s >= REFERENCE_GOAL_BATCH1 for s in batch1),
                                 "; ".join(f"{s:.2f}x" for s in batch1)
                                 or ("no batch-1 rows" if pairs else "no reference rows"), name))

        flat = []
        for batch in sorted({b for b, _ in fd}):
            lengths = sorted(n for b, n in fd if b == batch and (b, n) in plain)
            if len(lengths) >= 2:
                short, long_ = (batch, lengths[0]), (batch, lengths[-1])
                slow = [plain[c]["tokens_per_s"] / fd[c]["tokens_per_s"] for c in (short, long_)]
                flat.append((batch, lengths[0], lengths[-1], slow[1] / slow[0]))
        detail = "; ".join(f"b={b}: slowdown x{g:.2f} from n={s} to n={lg}" for b, s, lg, g in flat)
        verdicts.append(_verdict(f"ads-fd cost per token flat in length (slowdown grows <= {FLAT_SLACK}x)",
                                 _all(g <= FLAT_SLACK for *_, g in flat), detail or "one length only", name))

        memory = [(c, r["peak_mem_mb"], r["memory_budget_mb"]) for c, r in sorted(fd.items())
                  if r.get("memory_budget_mb")]
        detail = "; ".join(f"b={b} n={n}: {p:.0f}/{m:.0f} MB" for (b, n), p, m in memory)
        verdicts.append(_verdict("ads-fd peak memory <= teacher + two proxy copies + caches (+10%)",
                                 _all(p <= MEMORY_SLACK * m for _, p, m in memory), detail or "no rows", name))
    return verdicts


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table_lines(results: dict[str, Any], markdown: bool = False) -> list[str]:
    header = ["models", "method", "batch", "new tokens", "tokens/s", "vs plain", "peak MB", "note"]
    lines = []
    body = []
    for r in results["results"]:
        note = "skipped: " + r["skipped"].split(":")[0] if r.get("skipped") else ""
        body.append([r["models"], r["method"], str(r["batch"]), str(r["new_tokens"]), _fmt(r["tokens_per_s"], ".1f"),
                     _fmt(r.get("slowdown_vs_plain"), ".2f") + ("x" if r.get("slowdown_vs_plain") else ""),
                     _fmt(r["peak_mem_mb"], ".0f"), note])
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in body)
        return lines
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body)
    return lines


def target_lines(results: dict[str, Any]) -> list[str]:
    mark = {True: "met", False: "NOT met", None: "n/a"}
    return [f"[{mark[v['met']]}] {v['target']} ({v['models']}): {v['detail']}" for v in results["targets"]]


def format_table(results: dict[str, Any]) -> str:
    machine = results["machine"]
    where = machine.get("gpu") or f"{machine['cpu']} ({machine['cpu_count']} cores, {machine['torch_threads']} threads)"
    lines = [f"antidistill perf on {where}; FLOP floor ratio {results['flop_floor_ratio']:.2f}", ""]
    lines += table_lines(results) + ["", *target_lines(results)]
    return "\n".join(lines)


def markdown_section(results: dict[str, Any]) -> str:
    machine, versions, settings = results["machine"], results["versions"], results["settings"]
    where = machine.get("gpu") or machine["cpu"]
    model_lines = []
    for info in results["model_sets"]:
        t, p = info["teacher"], info["proxy"]
        model_lines.append(
            f"- `{info['name']}`: teacher {t['parameters'] / 1e6:.0f}M parameters (hidden {t['hidden_size']}, "
            f"{t['num_hidden_layers']} layers), proxy {p['parameters'] / 1e6:.0f}M (hidden {p['hidden_size']}, "
            f"{p['num_hidden_layers']} layers), vocabulary {t['vocab_size']}, proxy copies in "
            f"{info['proxy_copy_dtype']}; FLOP floor ratio (teacher + 2 proxy) / teacher = "
            f"{info['flop_floor_ratio']:.2f}")
    lines = [
        "## Performance",
        "",
        f"Measured with `antidistill perf{' --quick' if settings['quick'] else ''}` on {where} "
        f"({machine['cpu_count']} cores, {machine['torch_threads']} torch threads, device {machine['device']}), "
        f"torch {versions['torch']}, transformers {versions['transformers']}; median of {settings['repeats']} "
        f"interleaved runs per row, prompts of {settings['prompt_length']} tokens, top-p {settings['top_p']}.",
        "",
        *model_lines,
        "",
        *table_lines(results, markdown=True),
        "",
        f"Peak memory: {results['peak_mem_mb_meaning']}.",
        "",
        "Targets:",
        "",
        *("- " + line for line in target_lines(results)),
        "",
    ]
    return "\n".join(lines)
