"""Pairs to judge: each gold against itself, its solution, generated rewrites, other golds and near misses."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

from benchmarks.answers.data import Gold


@dataclass(frozen=True)
class Pair:
    kind: str  # "self" | "solution" | "rewrite" | "cross" | "perturbed" | "styled" (benchmarks.answers.styles)
    family: str
    source: str
    dataset: str
    prediction: str  # an answer, or a whole solution for kind == "solution"
    reference: str
    expected: bool




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


