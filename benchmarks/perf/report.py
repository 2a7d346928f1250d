"""Turning perf rows into a table, a verdict on each target of the performance issue, and a README section."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FLOOR_RATIO_BATCHED = 1.05  # ads-fd time / measured floor at batch >= 8
FLOOR_RATIO_BATCH1 = 1.10  # ... and at smaller batches
REFERENCE_GOAL_BATCH1 = 1.3
FLAT_SLACK = 1.10  # ads-fd floor ratio at the longest length within 1.10x of the shortest
MEMORY_SLACK = 1.10
EQUAL_MEMORY_SHARE = 0.6  # ads-fd fits >= 0.6 x plain's batch in the same memory


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
        name = info["name"]
        fd, ref = _rows(results, name, "ads-fd"), _rows(results, name, "reference")
        floor = {cell: row["floor_ratio"] for cell, row in fd.items() if row.get("floor_ratio")}

        for label, limit, wanted in ((">= 8", FLOOR_RATIO_BATCHED, lambda b: b >= 8),
                                     ("< 8", FLOOR_RATIO_BATCH1, lambda b: b < 8)):
            checks = [(cell, ratio) for cell, ratio in sorted(floor.items()) if wanted(cell[0])]
            detail = "; ".join(f"b={b} n={n}: {r:.3f}" for (b, n), r in checks)
            verdicts.append(_verdict(f"ads-fd floor_ratio <= {limit:.2f} at batch {label} (time / (t_plain + "
                                     "2·t_proxy))", _all(r <= limit for _, r in checks),
                                     detail or f"no batch {label} rows", name))

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
        for batch in sorted({b for b, _ in floor}):
            lengths = sorted(n for b, n in floor if b == batch)
            if len(lengths) >= 2:
                short, long_ = floor[(batch, lengths[0])], floor[(batch, lengths[-1])]
                flat.append((batch, lengths[0], lengths[-1], long_ / short))
        detail = "; ".join(f"b={b}: floor ratio x{g:.2f} from n={s} to n={lg}" for b, s, lg, g in flat)
        verdicts.append(_verdict(f"ads-fd flat in length (floor ratio grows <= {FLAT_SLACK}x)",
                                 _all(g <= FLAT_SLACK for *_, g in flat), detail or "one length only", name))

        shares = [(row["new_tokens"], row["max_batch"]["ads-fd"] / row["max_batch"]["plain"])
                  for row in equal_memory(results) if row["models"] == name
                  and row["max_batch"].get("plain") and "ads-fd" in row["max_batch"]]
        verdicts.append(_verdict(f"ads-fd fits >= {EQUAL_MEMORY_SHARE}x plain's batch in the same memory "
                                 "(linear in batch through the measured batches)",
                                 _all(share >= EQUAL_MEMORY_SHARE for _, share in shares),
                                 "; ".join(f"n={n}: {share:.2f}x" for n, share in shares)
                                 or "fewer than two batch sizes", name))

        memory = [(c, r["peak_mem_mb"], r["memory_budget_mb"]) for c, r in sorted(fd.items())
                  if r.get("memory_budget_mb")]
        detail = "; ".join(f"b={b} n={n}: {p:.0f}/{m:.0f} MB" for (b, n), p, m in memory)
        verdicts.append(_verdict("ads-fd peak memory <= teacher + two proxy copies + caches (+10%)",
                                 _all(p <= MEMORY_SLACK * m for _, p, m in memory), detail or "no rows", name))
    return verdicts


def _memory_line(rows: dict[tuple[int, int], dict[str, Any]], new_tokens: int) -> tuple[float, float] | None:
    """(fixed MB, MB per sequence) through the smallest and the largest measured batch at one length."""
    points = sorted((b, r["peak_mem_mb"]) for (b, n), r in rows.items() if n == new_tokens and r.get("peak_mem_mb"))
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    (b0, m0), (b1, m1) = points[0], points[-1]
    per_sequence = max((m1 - m0) / (b1 - b0), 1e-9)
    return m0 - per_sequence * b0, per_sequence


def equal_memory(results: dict[str, Any], budget_mb: float | None = None) -> list[dict[str, Any]]:
    """The largest batch each method fits in one memory budget, per model set and length (issue 17 item 3).

    Peak memory is modelled as fixed + per-sequence × batch through the smallest and largest measured batch. The
    budget is `budget_mb`, else the device's memory (the GPU's, or the machine's RAM on a CPU), else plain's
    measured peak at its largest batch. At a budget far above the weights, the ratio is set by each method's
    per-sequence memory (KV caches, activations), as for a 7B teacher on an 80 GB GPU.
    """
    rows_out = []
    machine = results.get("machine", {})
    gpu_mb = machine.get("gpu_memory_gb") or (machine.get("memory_gb") if "gpu" not in machine else None)
    for info in results["model_sets"]:
        name = info["name"]
        plain = _rows(results, name, "plain")
        for new_tokens in sorted({n for _, n in plain}):
            plain_line = _memory_line(plain, new_tokens)
            if plain_line is None:
                continue
            largest = max(b for b, n in plain if n == new_tokens)
            budget = budget_mb or (gpu_mb * 1024 if gpu_mb else plain[(largest, new_tokens)]["peak_mem_mb"])
            fits: dict[str, int] = {}
            for method in sorted({r["method"] for r in results["results"] if r["models"] == name}):
                line = _memory_line(_rows(results, name, method), new_tokens)
                if line is not None:
                    fixed, per_sequence = line
                    fits[method] = max(0, int((budget - fixed) // per_sequence))
            rows_out.append({"models": name, "new_tokens": new_tokens, "budget_mb": budget, "max_batch": fits})
    return rows_out


def equal_memory_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for row in equal_memory(results):
        plain = row["max_batch"].get("plain") or 0
        parts = [f"{m} {b}" + (f" ({b / plain:.2f}x)" if plain and m != "plain" else "")
                 for m, b in sorted(row["max_batch"].items(), key=lambda item: -item[1])]
        lines.append(f"{row['models']} n={row['new_tokens']}, {row['budget_mb']:.0f} MB: " + ", ".join(parts))
    return lines


def ablation_lines(results: dict[str, Any]) -> list[str]:
    """What the twin and the head layout each buy: reference (two copies, one after the other) -> the batched twin
    in nn.Linear's layout (ads-fd-no-transpose) -> the twin with its unembedding stored transposed (ads-fd)."""
    lines = []
    for info in results["model_sets"]:
        name = info["name"]
        fd, plain_layout = _rows(results, name, "ads-fd"), _rows(results, name, "ads-fd-no-transpose")
        ref = _rows(results, name, "reference")
        for cell in sorted(set(fd) & set(plain_layout)):
            twin = (f"twin {ref[cell]['seconds'] / plain_layout[cell]['seconds']:.2f}x over reference, "
                    if cell in ref else "")
            layout = plain_layout[cell]["seconds"] / fd[cell]["seconds"]
            lines.append(f"{name} b={cell[0]} n={cell[1]}: {twin}transposed head layout {layout:.2f}x over "
                         "nn.Linear's")
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table_lines(results: dict[str, Any], markdown: bool = False) -> list[str]:
    header = ["models", "method", "batch", "new tokens", "tokens/s", "vs plain", "floor ratio", "wall s", "cpu s",
              "peak MB", "note"]
    lines = []
    body = []
    for r in results["results"]:
        note = "skipped: " + r["skipped"].split(":")[0] if r.get("skipped") else ""
        body.append([r["models"], r["method"], str(r["batch"]), str(r["new_tokens"]), _fmt(r["tokens_per_s"], ".1f"),
                     _fmt(r.get("slowdown_vs_plain"), ".2f") + ("x" if r.get("slowdown_vs_plain") else ""),
                     _fmt(r.get("floor_ratio"), ".3f"), _fmt(r.get("seconds"), ".2f"),
                     _fmt(r.get("cpu_seconds"), ".2f"), _fmt(r["peak_mem_mb"], ".0f"), note])
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
    settings = results["settings"]
    lines = [f"antidistill bench perf on {where}; prompts of {settings['prompt_length']} tokens, median of "
             f"{settings['repeats']} interleaved runs; floor ratio = time / (t_plain + 2·t_proxy) "
             "(ads-head: t_plain + t_proxy)", ""]
    lines += table_lines(results) + ["", *target_lines(results)]
    memory = equal_memory_lines(results)
    if memory:
        lines += ["", "Largest batch in the same memory (informational; linear through the measured batches):", *memory]
    ablation = ablation_lines(results)
    if ablation:
        lines += ["", "Ablation (informational):", *ablation]
    lines += [line for report in results.get("fidelity", []) for line in _fidelity_lines(report)]
    return "\n".join(lines)


def _fidelity_lines(report: dict[str, Any]) -> list[str]:
    from .fidelity import fidelity_lines

    return fidelity_lines(report)


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
            f"{info['proxy_copy_dtype']}; informational FLOP ratio (teacher + 2 proxy) / teacher = "
            f"{info['flop_floor_ratio']:.2f}")
    lines = [
        "## Performance",
        "",
        f"Measured with `antidistill bench perf{' --quick' if settings['quick'] else ''}` on {where} "
        f"({machine['cpu_count']} cores, {machine['torch_threads']} torch threads, device {machine['device']}), "
        f"torch {versions['torch']}, transformers {versions['transformers']}; median of {settings['repeats']} "
        f"interleaved runs per row, prompts of {settings['prompt_length']} tokens, top-p {settings['top_p']}. "
        "`floor ratio` = the method's seconds per token / its measured floor: t_plain + 2·t_proxy for ads-fd, "
        "its ablation, permutation, jvp, reference and nocache; t_plain + t_proxy for ads-head (t_plain: teacher "
        "alone; t_proxy: one proxy copy alone, prompt then one cached token per step, timed in the same cell).",
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
        *(["Largest batch in the same memory (linear in batch through the measured batches):", "",
           *("- " + line for line in equal_memory_lines(results)), ""] if equal_memory_lines(results) else []),
        *(["Ablation (informational):", "", *("- " + line for line in ablation_lines(results)), ""]
          if ablation_lines(results) else []),
        *(["Fidelity of fd in the proxy dtype:", "",
           *("- " + line for report in results.get("fidelity", []) for line in _fidelity_lines(report)), ""]
          if results.get("fidelity") else []),
    ]
    return "\n".join(lines)
