"""Measured quality of the answer checker, side by side with math-verify.

``python -m benchmarks.answers [--limit N] [--json FILE]`` reads MATH-500, MATH test and GSM8K test from
``../shared/data`` and checks, for both ``harness_plugin.answers`` and ``math-verify`` on the same pairs:

* self: every gold answer against itself, and against its own reference solution's final answer (the
  checker extracts from the full solution; math-verify parses it with its default extraction);
* rewrite: equivalent rewrites of gold answers generated here (fraction ↔ decimal, reordered sums and lists,
  ``\\dfrac``, ``\\left(``, spacing, units, ``x =``, radicals, sympy's own LaTeX of the gold…), which must match;
* cross: the gold answer of another problem with a different value, which must not match;
* perturbed: near misses (off by one, swapped tuple, other bracket, negated), which must not match;
* styled: whole model-style outputs around gold values (``benchmarks.answer_styles``: prose, several boxes,
  sentences after cues, decimal commas, labelled golds, times), each kind matching and not matching;
* load: 8 threads with slow comparisons mixed in (latencies, undecided count, the timeout + 0.5 s bound) and the
  first symbolic call of a new process.

It prints accuracy, false positives, throughput and p50/p99 latency per set and per checker, and the
failures, so that every figure in the README can be reproduced. Inputs are trusted dataset text, so
math-verify runs with its default extraction (which includes its Python-expression parser).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

from harness_plugin.io import atomic_write_text
from harness_plugin.names import DATA_DIR_VARIABLE


def default_data() -> str:
    """$ANTIDISTILL_DATA_DIR, else the offline copy beside a development checkout (../shared/data), else the variable's name."""
    if os.environ.get(DATA_DIR_VARIABLE):
        return os.environ[DATA_DIR_VARIABLE]
    beside_checkout = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return str(beside_checkout) if beside_checkout.is_dir() else f"${DATA_DIR_VARIABLE}"


@dataclass(frozen=True)
class Gold:
    source: str  # "math500" | "math" | "gsm8k"
    dataset: str  # "math" | "gsm8k" (extraction rules)
    index: int
    answer: str
    solution: str
    group: str  # subject, for picking hard cross pairs


@dataclass(frozen=True)
class Pair:
    kind: str  # "self" | "solution" | "rewrite" | "cross" | "perturbed" | "styled" (benchmarks.answer_styles)
    family: str
    source: str
    dataset: str
    prediction: str  # an answer, or a whole solution for kind == "solution"
    reference: str
    expected: bool


@dataclass
class Tally:
    pairs: int = 0
    correct: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- data


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def hendrycks_answer(solution: str) -> str | None:
    """The MATH reference extraction (Hendrycks et al.): last ``\\boxed``/``\\fbox``, braces counted naively.

    Deliberately independent of ``harness_plugin.answers`` so that "gold vs the solution's final answer" tests
    our extraction against the dataset's own convention.
    """
    index = solution.rfind("\\boxed")
    if index < 0:
        index = solution.rfind("\\fbox")
        if index < 0:
            return None
    if solution.startswith("\\boxed ", index):
        return solution[index + len("\\boxed ") :].split("$")[0].strip()
    depth = 0
    for i in range(index, len(solution)):
        if solution[i] == "{":
            depth += 1
        elif solution[i] == "}":
            depth -= 1
            if depth == 0:
                boxed = solution[index : i + 1]
                opening = boxed.find("{")
                return boxed[opening + 1 : -1]
    return None


def load_golds(data_dir: Path, limit: int | None, seed: int) -> list[Gold]:
    """MATH-500 (its ``answer`` field), MATH test (Hendrycks extraction) and GSM8K test (after ``####``)."""
    rng = random.Random(seed)
    sources: list[list[Gold]] = []
    rows = _read_jsonl(data_dir / "math500" / "test.jsonl")
    sources.append(
        [Gold("math500", "math", i, r["answer"], r["solution"], r["subject"]) for i, r in enumerate(rows)]
    )
    rows = _read_jsonl(data_dir / "math" / "test.jsonl")
    math_golds = []
    for i, row in enumerate(rows):
        answer = hendrycks_answer(row["solution"])
        if answer is not None and answer.strip():
            math_golds.append(Gold("math", "math", i, answer, row["solution"], row["type"]))
    sources.append(math_golds)
    rows = _read_jsonl(data_dir / "gsm8k" / "test.jsonl")
    sources.append(
        [
            Gold("gsm8k", "gsm8k", i, r["answer"].split("####")[-1].strip(), r["answer"], "gsm8k")
            for i, r in enumerate(rows)
        ]
    )
    golds: list[Gold] = []
    for source in sources:
        if limit is not None and len(source) > limit:
            source = sorted(rng.sample(source, limit), key=lambda gold: gold.index)
        golds.extend(source)
    return golds


# ------------------------------------------------------------------------------------------------ rewrites

_SIMPLE_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")
_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?\d*\.\d+")


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_RATIO = re.compile(r"(\d+):(\d+)")


def _value(answer: str) -> Fraction | None:
    """Exact value of a plainly written number (independent of the checker's own parser)."""
    text = answer.replace(" ", "").replace("\\!", "").replace("\\$", "")
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if _INTEGER.fullmatch(text) or _DECIMAL.fullmatch(text):
        return Fraction(text)
    ratio = _RATIO.fullmatch(text)
    if ratio and int(ratio.group(2)) != 0:
        return Fraction(int(ratio.group(1)), int(ratio.group(2)))
    match = _SIMPLE_FRACTION.fullmatch(text)
    if match and int(match.group(3)) != 0:
        value = Fraction(int(match.group(2)), int(match.group(3)))
        return -value if match.group(1) else value
    return None


def _decimal(value: Fraction) -> str:
    """Exact decimal digits for a terminating value, ten significant digits otherwise."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{float(value):.10g}"
    with localcontext() as context:
        context.prec = 80
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _top_level_terms(text: str) -> list[str] | None:
    """Signed additive terms at brace/paren depth 0, or None when splitting would be unsafe."""
    text = text.rstrip(".").strip()
    unsafe = ("\\pm", "\\mp", "^-", "^+", ",", "=", "\\le", "\\ge", "<", ">", "\\cup", "\\begin", "&", "\\\\")
    if any(token in text for token in unsafe):
        return None
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif char in "+-" and depth == 0 and i > 0:
            previous = text[:i].rstrip()
            if previous.endswith(("\\cdot", "\\times", "*", "/", "^", "_", "(", "{", "e", "E")):
                return None
            terms.append(text[start:i].strip())
            start = i
    terms.append(text[start:].strip())
    if len(terms) < 2 or any(term in ("", "+", "-") for term in terms):
        return None
    return terms


def _join_terms(terms: list[str]) -> str:
    out = []
    for i, term in enumerate(terms):
        sign, body = ("-", term[1:].strip()) if term.startswith("-") else ("+", term.lstrip("+").strip())
        if i == 0:
            out.append(("-" if sign == "-" else "") + body)
        else:
            out.append(f" {sign} {body}")
    return "".join(out)


def _sympy_latex(answer: str) -> str | None:
    """sympy's own LaTeX for the gold (e.g. expanded polynomials), parsed with the ANTLR grammar (trusted)."""
    commands = set(re.findall(r"\\[a-zA-Z]+", answer)) - {"\\frac", "\\dfrac", "\\sqrt", "\\pi", "\\cdot", "\\left", "\\right"}
    if len(answer) > 80 or commands or not re.search(r"[a-zA-Z]", answer.replace("\\frac", "").replace("\\sqrt", "")):
        return None
    try:
        import sympy
        from latex2sympy2_extended import latex2sympy

        expr = latex2sympy(answer)
        if not isinstance(expr, sympy.Expr) or isinstance(expr, sympy.Tuple) or len(str(expr)) > 120:
            return None
        if expr.free_symbols and expr.is_polynomial():
            expr = sympy.expand(expr)
        text = sympy.latex(expr)
    except Exception:
        return None
    return text if text.replace(" ", "") != answer.replace(" ", "") else None


def rewrites(gold: Gold) -> list[tuple[str, str]]:
    """Equivalent spellings of ``gold.answer`` as (family, text); every one must be judged equal."""
    answer = gold.answer.strip()
    out: list[tuple[str, str]] = []
    value = _value(answer)

    if gold.dataset == "gsm8k":
        if value is not None and value.denominator == 1:
            number = int(value)
            out.append(("currency", f"\\${number}"))
            out.append(("units", f"{number} dollars"))
            if abs(number) >= 1000:
                out.append(("thousands", f"{number:,}"))
                if number % 100 == 0:
                    mantissa = Fraction(number, 10 ** (len(str(abs(number))) - 1))
                    out.append(("scientific", f"{float(mantissa):g} \\times 10^{{{len(str(abs(number))) - 1}}}"))
            out.append(("decimal", f"{number}.00"))
        return out

    if value is not None:
        if value.denominator != 1:
            out.append(("fraction_decimal", _decimal(value)))
            if "." not in answer:
                numerator, denominator = value.numerator, value.denominator
                out.append(("slash", f"{numerator}/{denominator}"))
                if 0 <= numerator < 10 and denominator < 10:
                    out.append(("frac_short", f"\\frac{numerator}{denominator}"))
        if "." in answer:
            out.append(("decimal_fraction", f"\\frac{{{value.numerator}}}{{{value.denominator}}}"))
        if value.denominator == 1:
            out.append(("integer_decimal", f"{int(value)}.0"))
            out.append(("equation", f"x = {answer}"))
            out.append(("units", f"{answer} \\text{{ units}}"))
    if "\\frac" in answer and "\\dfrac" not in answer:
        out.append(("dfrac", answer.replace("\\frac", "\\dfrac")))
    elif "\\dfrac" in answer:
        out.append(("dfrac", answer.replace("\\dfrac", "\\frac")))
    if "(" in answer and "\\left" not in answer and "\\sqrt[" not in answer:
        out.append(("left_right", answer.replace("(", "\\left(").replace(")", "\\right)")))
    if " " in answer and not re.search(r"\\[a-zA-Z]+\s+[a-zA-Z]|\\ ", answer):
        out.append(("spacing", answer.replace(" ", "")))
    elif re.search(r"[,+=]", answer) and "\\{" not in answer:
        out.append(("spacing", re.sub(r"\s*([,+=])\s*", r" \1 ", answer).strip()))
    if re.search(r"\^\s*\{?\\circ\}?", answer):
        out.append(("degrees", re.sub(r"\^\s*\{?\\circ\}?", "", answer)))
    unit = re.search(r"\\(?:text|mbox)\{\s*[a-z ]+\}(\^\{?\d\}?)?$", answer)
    if unit and unit.start() > 0:
        out.append(("units", answer[: unit.start()].strip()))
    terms = _top_level_terms(answer)
    if terms and value is None:
        out.append(("reorder_sum", _join_terms(terms[::-1])))
    set_match = re.fullmatch(r"\\\{(.*)\\\}", answer)
    items = [item.strip() for item in (set_match.group(1) if set_match else answer).split(",")]
    numeric_commas = re.search(r"\d,\s*(?:\\!)?\s*\d{3}(?!\d)", answer)
    bracketed = re.search(r"[(\[{]", answer.replace("\\{", "").replace("\\}", ""))
    if len(items) > 1 and not numeric_commas and not bracketed and items[::-1] != items and all(items):
        reordered = ", ".join(items[::-1])
        out.append(("list_order", f"\\{{{reordered}\\}}" if set_match else reordered))
    text = re.fullmatch(r"\\text\{\s*([A-Za-z][A-Za-z ]*)\}", answer)
    if text:
        out.append(("text", text.group(1)))
    choice = re.fullmatch(r"\\text\{\s*\(([A-E])\)\s*\}", answer)
    if choice:
        out.append(("choice", choice.group(1)))
    radical = re.fullmatch(r"(\d+)\s*\\sqrt\{(\d+)\}", answer)
    if radical and int(radical.group(1)) > 1:
        k, m = int(radical.group(1)), int(radical.group(2))
        out.append(("radical", f"\\sqrt{{{k * k * m}}}"))
    rationalized = re.fullmatch(r"\\frac\{\\sqrt\{(\d+)\}\}\{(\d+)\}", answer)
    if rationalized and rationalized.group(1) == rationalized.group(2):
        out.append(("radical", f"\\frac{{1}}{{\\sqrt{{{rationalized.group(1)}}}}}"))
    printed = _sympy_latex(answer)
    if printed:
        out.append(("sympy_latex", printed))
    return [(family, text) for family, text in out if text.strip() and text != answer]


def perturbations(gold: Gold) -> list[tuple[str, str]]:
    """Near misses of ``gold.answer``: each must be judged different."""
    answer = gold.answer.strip()
    out: list[tuple[str, str]] = []
    value = _value(answer)
    if value is not None:
        out.append(("off_by_one", str(int(value) + 1) if value.denominator == 1 else _decimal(value + 1)))
        if value != 0:
            out.append(("negated", _decimal(-value) if value.denominator != 1 else str(-int(value))))
        if value.denominator != 1 and abs(value.numerator) != value.denominator:
            out.append(("reciprocal", f"\\frac{{{value.denominator}}}{{{value.numerator}}}"))
        return out
    pair = re.fullmatch(r"([(\[])([^,()\[\]]+),([^,()\[\]]+)([)\]])", answer.replace("\\left", "").replace("\\right", ""))
    if pair:
        opener, first, second, closer = pair.groups()
        if first.strip() != second.strip():
            out.append(("swapped", f"{opener}{second.strip()},{first.strip()}{closer}"))
        flipped = {"(": "[", "[": "("}[opener]
        if "\\infty" not in first:
            out.append(("bracket", f"{flipped}{first},{second}{closer}"))
    if "\\frac" in answer or "\\sqrt" in answer or "\\pi" in answer:
        out.append(("scaled", f"2\\left({answer}\\right)"))
    return out


_SAME_ANSWER_NOISE = re.compile(r"^\s*[a-zA-Z]\s*=|\^\s*\{?\\circ\}?|\\(?:text|mbox)\{[^{}]*\}(?:\^\{?\d\}?)?\s*$")


def _value_key(answer: str) -> str:
    """A coarse identity for choosing cross pairs: "x=5", "5^\\circ", "\\$5" and "5 \\text{ ways}" are all 5."""
    answer = _SAME_ANSWER_NOISE.sub("", answer).strip() or answer
    value = _value(answer)
    if value is not None:
        return str(value)
    return re.sub(r"\s+|\\left|\\right|\\!|\\,", "", answer).replace("\\dfrac", "\\frac")


def build_pairs(golds: list[Gold], seed: int, rewrites_per_gold: int) -> list[Pair]:
    rng = random.Random(seed)
    by_group: dict[tuple[str, str], list[Gold]] = defaultdict(list)
    for gold in golds:
        by_group[(gold.source, gold.group)].append(gold)
    pairs: list[Pair] = []
    for gold in golds:
        common = {"source": gold.source, "dataset": gold.dataset, "reference": gold.answer}
        pairs.append(Pair("self", "identical", prediction=gold.answer, expected=True, **common))
        pairs.append(Pair("solution", "reference_solution", prediction=gold.solution, expected=True, **common))
        options = rewrites(gold)
        rng.shuffle(options)
        for family, text in options[:rewrites_per_gold]:
            pairs.append(Pair("rewrite", family, prediction=text, expected=True, **common))
        candidates = by_group[(gold.source, gold.group)]
        key = _value_key(gold.answer)
        for _ in range(20):
            other = rng.choice(candidates)
            if _value_key(other.answer) != key:
                pairs.append(Pair("cross", "other_gold", prediction=other.answer, expected=False, **common))
                break
        near = perturbations(gold)
        if near:
            family, text = rng.choice(near)
            pairs.append(Pair("perturbed", family, prediction=text, expected=False, **common))
    return pairs


# ------------------------------------------------------------------------------------------------ checkers

WHOLE_TEXT_KINDS = ("solution", "styled")  # the prediction is a whole text: extract, then compare


def ours(cold: bool = True) -> Callable[[Pair], bool]:
    from harness_plugin.answers import clear_cache, is_equivalent, score

    def check(pair: Pair) -> bool:
        if cold:
            clear_cache()  # time a real decision, not a memo lookup
        if pair.kind in WHOLE_TEXT_KINDS:
            return score(pair.prediction, pair.reference, pair.dataset)
        return is_equivalent(pair.prediction, pair.reference)

    return check


def math_verify() -> Callable[[Pair], bool]:
    """math-verify as documented: gold parsed from ``$…$``, predictions with its default extraction."""
    import logging

    from math_verify import LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    def check(pair: Pair) -> bool:
        gold = parse(f"${pair.reference}$", extraction_config=[LatexExtractionConfig()])
        if pair.kind in WHOLE_TEXT_KINDS:
            prediction = parse(pair.prediction)
        else:
            prediction = parse(f"${pair.prediction}$", extraction_config=[LatexExtractionConfig()])
        return bool(verify(gold, prediction))

    return check


def run_checker(name: str, check: Callable[[Pair], bool], pairs: list[Pair], examples: int) -> dict[str, Tally]:
    from tqdm import tqdm

    tallies: dict[str, Tally] = defaultdict(Tally)
    for pair in tqdm(pairs, desc=name, unit="pair", mininterval=2.0, file=sys.stderr):
        start = time.perf_counter()
        try:
            verdict = bool(check(pair))
        except Exception:
            verdict = False
        elapsed = time.perf_counter() - start
        family = f"{pair.kind}:{pair.family}" if pair.kind in ("rewrite", "styled") else None
        for key in (pair.kind, f"{pair.kind}/{pair.source}", family):
            if key is None:
                continue
            tally = tallies[key]
            tally.pairs += 1
            tally.latencies.append(elapsed)
            if verdict == pair.expected:
                tally.correct += 1
                continue
            if verdict:
                tally.false_positives += 1
            else:
                tally.false_negatives += 1
            if len(tally.failures) < examples and ":" not in key and "/" not in key:
                shown = pair.prediction if pair.kind != "solution" else "…" + pair.prediction[-160:]
                tally.failures.append(
                    {"source": pair.source, "family": pair.family, "prediction": shown, "reference": pair.reference}
                )
    return tallies


# ------------------------------------------------------------------------------------------------ report


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


def _write_json_atomic(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2))


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data)
    if not (data_dir / "math500" / "test.jsonl").exists():
        print(f"error: no math500/test.jsonl under {data_dir}: pass --data (or set {DATA_DIR_VARIABLE}) pointing at "
              "a folder with the layout of the project's offline data (math500/, math/, gsm8k/)", file=sys.stderr)
        return 2
    golds = load_golds(data_dir, args.limit, args.seed)
    pairs = build_pairs(golds, args.seed, args.rewrites_per_gold)
    from benchmarks.answer_styles import styled_pairs

    pairs += styled_pairs(golds, args.seed)
    counts = Counter(pair.kind for pair in pairs)
    print(f"{len(golds)} gold answers from {data_dir}; {len(pairs)} pairs: {dict(counts)}")

    checkers: dict[str, Callable[[Pair], bool]] = {}
    start = time.perf_counter()
    from harness_plugin.answers import clear_cache, warm_up

    warm_up()
    clear_cache()
    print(f"ours: worker ready in {time.perf_counter() - start:.1f}s (not counted in latencies)")
    checkers["ours"] = ours(cold=not args.warm_cache)
    if not args.no_math_verify:
        checkers["math-verify"] = math_verify()
        checkers["math-verify"](pairs[0])  # load its grammar outside the timings

    results = {name: run_checker(name, check, pairs, args.examples) for name, check in checkers.items()}
    for name in results:
        results[name]["all"] = _overall(results[name])

    kinds = ["self", "solution", "rewrite", "cross", "perturbed", "styled", "all"]
    by_source = [f"{kind}/{source}" for kind in kinds[:-1] for source in ("math500", "math", "gsm8k")]
    families = sorted({key for name in results for key in results[name] if key.startswith(("rewrite:", "styled:"))})
    print()
    print("Machine:", args.machine)
    print(format_table(results, kinds))
    print()
    print(format_table(results, by_source))
    print()
    print(format_table(results, families))
    for name, tallies in results.items():
        for kind in kinds[:-1]:
            tally = tallies.get(kind)
            if tally and tally.failures:
                print(f"\n{name}: {kind} failures (first {len(tally.failures)} of {tally.pairs - tally.correct})")
                for failure in tally.failures:
                    print(f"  [{failure['source']}/{failure['family']}] {failure['prediction']!r} vs {failure['reference']!r}")

    load = None
    if not args.no_load:
        from benchmarks.answer_styles import first_call_s, format_load, load_row

        load = {**load_row(pairs, seed=args.seed), "first_call_s": first_call_s()}
        print()
        print(format_load(load, load["first_call_s"]))

    if args.json:
        payload = {
            "load": load,
            "data": str(data_dir),
            "machine": args.machine,
            "limit": args.limit,
            "seed": args.seed,
            "pair_counts": dict(counts),
            "results": {
                name: {key: {**summarize(t), "failures": t.failures} for key, t in tallies.items()}
                for name, tallies in results.items()
            },
        }
        _write_json_atomic(Path(args.json), payload)
        print(f"\nwrote {args.json}")
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m benchmarks.answers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=default_data(), help="offline data folder (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="at most N gold answers per source (default: all)")
    parser.add_argument("--rewrites-per-gold", type=int, default=2, help="rewrites sampled per gold answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=12, help="failures shown per set and checker")
    parser.add_argument(
        "--warm-cache", action="store_true", help="keep the checker's result memo between pairs (default: cleared)"
    )
    parser.add_argument("--no-math-verify", action="store_true", help="measure only harness_plugin.answers")
    parser.add_argument("--no-load", action="store_true",
                        help="skip the load row (8 threads, slow comparisons mixed in) and the first-call timing")
    parser.add_argument("--json", default=None, help="also write all figures and failures to this JSON file")
    parser.add_argument("--machine", default=f"{os.cpu_count()}-core CPU", help="machine description for the report")
    parser.set_defaults(func=run)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Entry point for ``antidistill answers-bench`` (group ``antidistill.commands``)."""
    build_parser(subparsers.add_parser("answers-bench", help="measure the answer checker against math-verify"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Gold", "Pair", "build_pairs", "hendrycks_answer", "load_golds", "main", "perturbations", "register", "rewrites"]
