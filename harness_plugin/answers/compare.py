"""``is_equivalent``: structure, words and numbers in-process; only symbolic leaves go to the worker.

An answer is first normalised (``latex.normalize``) and then decomposed on its own syntax: unions, sets,
tuples and intervals (bracket kinds kept), unordered lists of solutions, ``\\pm``, equations, words and
multiple-choice letters. Leaves that are plain numbers are decided exactly by ``numeric``; the remaining leaves
are guarded (``guard``) and sent, all at once, to a worker process (``worker`` → ``symbolic``) that may be
killed at the deadline. Comparisons are three-valued while leaves are pending: a first pass decides what it can
in-process and collects the symbolic leaves it needs; if that does not settle the answer, one worker call
resolves them and a second pass finishes the decision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from functools import lru_cache

from harness_plugin.answers.guard import MAX_DEPTH, refusal
from harness_plugin.answers.latex import (
    choice_key,
    max_depth,
    normalize,
    outer_pair,
    split_top_level,
    text_key,
)
from harness_plugin.answers.numeric import DECIMAL_COMMA, Number, numbers_equal, parse_number
from harness_plugin.answers.worker import WorkerError, get_pool

DEFAULT_REL_TOL = 1e-6
DEFAULT_TIMEOUT_S = 1.0
MAX_INPUT_CHARS = 4000  # an extracted answer longer than this is not an answer
MAX_UNORDERED_ITEMS = 12  # matching is quadratic in the number of items
MAX_SYMBOLIC_LEAVES = MAX_UNORDERED_ITEMS**2  # per call: one full matching of symbolic items
MAX_STEPS = 20_000  # structural comparisons per call; nested lists of lists would otherwise multiply

_NAME = r"(?:\\[a-zA-Z]+|[A-Za-z])(?:_\{?[\w\\]+\}?)?"
_SEGMENT = r"(?:[A-Z]{1,3}|\\overline\{[A-Z]{1,3}\})"
# What may stand left of "=" in an answer that only names its value: a variable or function (x, f(2), a_1, \theta),
# a tuple of variables ((p, q)), a segment or its length (AB, |AB|, \overline{AB}), a ratio of names (V_1:V_2, A:B).
_SIMPLE_LHS = re.compile(
    rf"{_NAME}(?:\([^()=]*\))?'*"
    rf"|\((?:\s*{_NAME}\s*[,;])+\s*{_NAME}\s*\)"
    rf"|{_SEGMENT}|\|\s*{_SEGMENT}\s*\||{_NAME}(?:\s*:\s*{_NAME})+"
)
# a:b (or a:b:c) of plain numbers: a ratio, or a time when it reads h:mm
_RATIO = re.compile(r"\d+(?:\.\d+)?(?:\s*:\s*\d+(?:\.\d+)?)+")
_RELATION_BEFORE = "<>!:\\"


class _Undecided(Exception):
    """The worker could not answer in time; the call is UNDECIDED and is not cached."""


class _TooComplex(Exception):
    """More structure than any answer has; the call returns False."""


@dataclass
class _Context:
    rel_tol: float
    pending: dict[tuple[str, str], None] = field(default_factory=dict)
    resolved: dict[tuple[str, str], bool] = field(default_factory=dict)
    collect: bool = True
    steps: int = 0
    memo: dict[tuple[str, str, bool], bool | None] = field(default_factory=dict)
    canonical_forms: dict[str, str] = field(default_factory=dict)

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _TooComplex

    def ask(self, prediction: str, reference: str) -> bool | None:
        key = (prediction, reference)
        if key in self.resolved:
            return self.resolved[key]
        if self.collect:
            self.pending[key] = None
        return None

    @contextmanager
    def fast_only(self) -> Iterator[None]:
        previous, self.collect = self.collect, False
        try:
            yield
        finally:
            self.collect = previous


def _all(values: Iterable[bool | None]) -> bool | None:
    """Three-valued AND: False if any is False, None if any is unknown, else True."""
    unknown = False
    for value in values:
        if value is False:
            return False
        if value is None:
            unknown = True
    return None if unknown else True


def _has_matching(matrix: list[list[bool | None]], accept: tuple[bool | None, ...]) -> bool:
    """Perfect bipartite matching using edges whose value is in ``accept`` (Kuhn's algorithm, n ≤ 12)."""
    size = len(matrix)
    owner: list[int | None] = [None] * size

    def augment(row: int, seen: list[bool]) -> bool:
        for column in range(size):
            if matrix[row][column] in accept and not seen[column]:
                seen[column] = True
                current = owner[column]
                if current is None or augment(current, seen):
                    owner[column] = row
                    return True
        return False

    return all(augment(row, [False] * size) for row in range(size))


def _distinct(items: list[str], ctx: _Context) -> list[str]:
    """Items with repeats (same canonical spelling) dropped: a root listed twice is one solution."""
    seen: set[str] = set()
    kept = []
    for item in items:
        form = _canonical(item, ctx)
        if form not in seen:
            seen.add(form)
            kept.append(item)
    return kept


def _unordered(predictions: list[str], references: list[str], ctx: _Context) -> bool | None:
    predictions, references = _distinct(predictions, ctx), _distinct(references, ctx)
    if len(predictions) != len(references):
        return False
    if sorted(_canonical(p, ctx) for p in predictions) == sorted(_canonical(r, ctx) for r in references):
        return True
    if len(predictions) > MAX_UNORDERED_ITEMS:
        return _all(_compare(p, r, ctx) for p, r in zip(sorted(predictions), sorted(references)))
    matrix = [[_compare(p, r, ctx) for r in references] for p in predictions]
    if _has_matching(matrix, (True,)):
        return True
    if not _has_matching(matrix, (True, None)):
        return False
    return None


@dataclass(frozen=True)
class _Structure:
    kind: str  # "union" | "set" | "list" | "tuple" | "group"
    items: tuple[str, ...]
    brackets: str = ""


_THOUSANDS_GROUP = re.compile(r"\d{3}(?![\d,])")


def _items(text: str, thousands: bool = True) -> tuple[str, ...]:
    """Top-level comma-separated items. Outside brackets, a comma between a digit and exactly three digits
    (``61,328``) is a thousands separator, not a list separator ("2, 500" with a space is a list); inside
    brackets (``[-36,104]``) commas always separate."""
    pieces = split_top_level(text, ",")
    if len(pieces) == 1:
        pieces = split_top_level(text, ";")  # (1; 2) and "1; 2": the semicolon as separator
    merged: list[str] = []
    for piece in pieces:
        if thousands and merged and merged[-1].rstrip()[-1:].isdigit() and _THOUSANDS_GROUP.match(piece):
            merged[-1] += "," + piece
        else:
            merged.append(piece)
    return tuple(item.strip() for item in merged if item.strip())


_MATRIX = re.compile(r"\\begin\{([pb]?matrix)\}(.*)\\end\{\1\}", re.DOTALL)


def _column_vector(answer: str) -> tuple[str, ...] | None:
    """Entries of a column vector (``\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}``), the usual spelling of (1, 2)."""
    match = _MATRIX.fullmatch(answer)
    if match is None or "\\begin" in match.group(2):
        return None
    rows = [row.strip() for row in split_top_level(match.group(2), "\\\\")]
    rows = [row for row in rows if row]
    if len(rows) < 2 or any(split_top_level(row, "&")[1:] for row in rows):
        return None
    return tuple(rows)


def _structure(answer: str) -> _Structure | None:
    """How an answer is composed at its top level, or None for a leaf."""
    column = _column_vector(answer)
    if column is not None:
        return _Structure("tuple", column, "()")
    parts = split_top_level(answer, "\\cup")
    if len(parts) > 1:
        return _Structure("union", tuple(part.strip() for part in parts))
    pair = outer_pair(answer)
    if pair is not None:
        opener, inner, closer = pair
        if opener == "\\{":
            return _Structure("set", _items(inner, thousands=False))
        items = _items(inner, thousands=False)
        if len(items) == 1 and opener + closer in ("()", "[]"):
            return _Structure("group", items)
        brackets = "()" if opener + closer == "<>" else opener + closer
        return _Structure("tuple", items, brackets)
    items = _items(answer)
    if len(items) > 1:
        return _Structure("list", items)
    for sign in ("\\pm", "\\mp"):
        if answer.count(sign) == 1:
            plus, minus = ("+", "-") if sign == "\\pm" else ("-", "+")
            return _Structure("list", (answer.replace(sign, plus), answer.replace(sign, minus)))
    return None


def _compare_structures(p: _Structure, r: _Structure, ctx: _Context) -> bool | None:
    unordered = ("set", "list")
    if p.kind == "tuple" and r.kind == "tuple":
        if p.brackets != r.brackets or len(p.items) != len(r.items):
            return False
        return _all(_compare(a, b, ctx) for a, b in zip(p.items, r.items))
    if {p.kind, r.kind} == {"tuple", "list"}:
        tuple_side = p if p.kind == "tuple" else r
        if tuple_side.brackets != "()" or len(p.items) != len(r.items):
            return False
        return _all(_compare(a, b, ctx) for a, b in zip(p.items, r.items))
    if p.kind in unordered and r.kind in unordered:
        return _unordered(list(p.items), list(r.items), ctx)
    if p.kind == "union" and r.kind == "union":
        return _unordered(list(p.items), list(r.items), ctx)
    return False


def _equation(answer: str) -> list[str] | None:
    """Sides of a top-level equation ``a = b (= c…)``; ``\\le``, ``<=``, ``\\neq`` are not equations."""
    if "=" not in answer:
        return None
    sides = split_top_level(answer, "=")
    if len(sides) < 2:
        return None
    cleaned = []
    for i, side in enumerate(sides):
        if i < len(sides) - 1 and side and side[-1] in _RELATION_BEFORE:
            return None
        cleaned.append(side.strip())
    cleaned = [side for side in cleaned if side]  # "a == b" splits into an empty middle side
    return cleaned if len(cleaned) >= 2 else None


def _ratio(text: str) -> list[Fraction] | None:
    if not _RATIO.fullmatch(text):
        return None
    return [Fraction(part.strip()) for part in text.split(":")]


def _compare_ratio(p: str, r: str) -> bool | None:
    """``a:b`` answers, decided here (sympy would read ``1:00`` as a division by zero, equal to ``12:00``).

    Ratios match when proportional (``2:4`` = ``1:2``), but parts equal to zero (times like ``1:00``) must match
    exactly; a ratio matches a number when it divides to it (``1:1`` = ``1``). None: neither side is a ratio.
    """
    p_ratio, r_ratio = _ratio(p), _ratio(r)
    if p_ratio is None and r_ratio is None:
        return None
    if p_ratio is not None and r_ratio is not None:
        if len(p_ratio) != len(r_ratio):
            return False
        if 0 in p_ratio or 0 in r_ratio:
            return p_ratio == r_ratio
        return all(a * r_ratio[0] == b * p_ratio[0] for a, b in zip(p_ratio, r_ratio))
    ratio, other = (p_ratio, r) if p_ratio is not None else (r_ratio, p)
    assert ratio is not None
    number = parse_number(other)
    if number is None or number.value is None or len(ratio) != 2 or ratio[1] == 0:
        return False
    return ratio[0] / ratio[1] == number.value


def _compare_leaf(p: str, r: str, ctx: _Context) -> bool | None:
    if p.replace(" ", "") == r.replace(" ", ""):
        return True
    ratio = _compare_ratio(p, r)
    if ratio is not None:
        return ratio
    p_number, r_number = parse_number(p), parse_number(r)
    if p_number is not None and r_number is not None:
        return numbers_equal(p_number, r_number, ctx.rel_tol)
    if (p_number is not None and text_key(r) is not None) or (r_number is not None and text_key(p) is not None):
        return False
    if refusal(p) or refusal(r):
        return False
    return _symbolic_with_percent(p, r, p_number, r_number, ctx)


def _strip_percent(text: str) -> tuple[str, bool]:
    stripped = text.rstrip()
    if stripped.endswith("\\%"):
        return stripped[:-2].rstrip(), True
    return text, False


def _symbolic_with_percent(
    p: str, r: str, p_number: Number | None, r_number: Number | None, ctx: _Context
) -> bool | None:
    p_plain, p_percent = _strip_percent(p)
    r_plain, r_percent = _strip_percent(r)
    if not p_plain or not r_plain:
        return False
    if p_percent == r_percent:
        return ctx.ask(p_plain, r_plain)
    # "50\%" may mean 50 or 0.5: either reading counts.
    if p_percent:
        candidates = [(p_plain, r_plain), (f"\\frac{{{p_plain}}}{{100}}", r_plain)]
    else:
        candidates = [(p_plain, r_plain), (p_plain, f"\\frac{{{r_plain}}}{{100}}")]
    results = [ctx.ask(a, b) for a, b in candidates]
    if True in results:
        return True
    return None if None in results else False


def _canonical(answer: str, ctx: _Context) -> str:
    """A spelling shared by answers that differ only in the order of unordered items (and spaces)."""
    cached = ctx.canonical_forms.get(answer)
    if cached is not None:
        return cached
    ctx.step()
    structure = _structure(answer)
    if structure is None:
        form = answer.replace(" ", "")
    elif structure.kind == "group":
        form = _canonical(structure.items[0], ctx)
    else:
        items = [_canonical(item, ctx) for item in structure.items]
        if structure.kind in ("set", "list", "union"):
            items.sort()
        form = f"{structure.kind}{structure.brackets}[" + "\x01".join(items) + "]"
    ctx.canonical_forms[answer] = form
    return form


def _decimal_comma(p: str, r: str, ctx: _Context) -> bool | None:
    """``2,74`` against a number: read as the decimal 2.74 (a list of 2 and 74 never equals one number)."""
    for comma, other in ((p, r), (r, p)):
        # "504, 20" (a space after the comma) is a list; the other side must be one number written without commas
        if DECIMAL_COMMA.fullmatch(comma.strip()) and "," not in other and parse_number(other) is not None:
            return _compare(comma.replace(",", "."), other, ctx) if comma is p else _compare(other, comma.replace(",", "."), ctx)
    return None


def _named_value(p: str, r: str, ctx: _Context) -> bool | None:
    """One side names its value (``AB = 4``, ``(p, q) = (3, 2)``, ``V_1:V_2 = 11:21``), the other is no equation:
    compare the value. None when that is not the case."""
    p_sides = _equation(p) if _structure(p) is None else None
    r_sides = _equation(r) if _structure(r) is None else None
    if (p_sides is None) == (r_sides is None):
        return None
    sides = p_sides if p_sides is not None else r_sides
    assert sides is not None
    if len(sides) != 2 or not _SIMPLE_LHS.fullmatch(sides[0]):
        return None
    return _compare(sides[1], r, ctx) if p_sides is not None else _compare(p, sides[1], ctx)


def _compare(p: str, r: str, ctx: _Context) -> bool | None:
    """Three-valued equivalence of two normalised answers (None: waiting for a symbolic leaf)."""
    key = (p, r, ctx.collect)
    if key in ctx.memo:
        return ctx.memo[key]
    result = _compare_uncached(p, r, ctx)
    ctx.memo[key] = result
    return result


def _compare_uncached(p: str, r: str, ctx: _Context) -> bool | None:
    ctx.step()
    if p == r:
        return True
    if not p or not r:
        return False
    p_text, r_text = text_key(p), text_key(r)
    if p_text is not None and r_text is not None:
        return p_text == r_text
    p_choice, r_choice = choice_key(p), choice_key(r)
    if p_choice is not None and r_choice is not None:
        return p_choice == r_choice
    decimal = _decimal_comma(p, r, ctx)
    if decimal is not None:
        return decimal
    named = _named_value(p, r, ctx)
    if named is not None:
        return named

    p_structure, r_structure = _structure(p), _structure(r)
    if p_structure is not None and p_structure.kind == "group":
        return _compare(p_structure.items[0], r, ctx)
    if r_structure is not None and r_structure.kind == "group":
        return _compare(p, r_structure.items[0], ctx)
    if p_structure is not None and r_structure is not None:
        return _compare_structures(p_structure, r_structure, ctx)
    if p_structure is not None or r_structure is not None:
        structure, leaf, leaf_is_prediction = (
            (p_structure, r, False) if p_structure is not None else (r_structure, p, True)
        )
        assert structure is not None
        if structure.kind in ("set", "list") and len(structure.items) == 1:
            item = structure.items[0]
            return _compare(leaf, item, ctx) if leaf_is_prediction else _compare(item, leaf, ctx)
        if parse_number(leaf) is not None or text_key(leaf) is not None or _equation(leaf) is not None:
            return False
        # e.g. "x \neq 0" against "(-\infty,0) \cup (0,\infty)": the symbolic side understands relations and sets
        if refusal(p) or refusal(r):
            return False
        return ctx.ask(p, r)

    p_sides, r_sides = _equation(p), _equation(r)
    if p_sides is not None and r_sides is not None:
        if len(p_sides) == len(r_sides):
            with ctx.fast_only():
                if _all(_compare(a, b, ctx) for a, b in zip(p_sides, r_sides)) is True:
                    return True
        if refusal(p) or refusal(r):
            return False
        return ctx.ask(p, r)
    if p_sides is not None:
        return _compare(p_sides[-1], r, ctx) if _SIMPLE_LHS.fullmatch(p_sides[0]) else False
    if r_sides is not None:
        return _compare(p, r_sides[-1], ctx) if _SIMPLE_LHS.fullmatch(r_sides[0]) else False
    return _compare_leaf(p, r, ctx)


def _decide(prediction: str, reference: str, rel_tol: float, timeout: float) -> bool:
    p, r = normalize(prediction), normalize(reference)
    if not p or not r:
        return False
    if p == r:
        return True
    if max(max_depth(p), max_depth(r)) > MAX_DEPTH:
        return False
    ctx = _Context(rel_tol)
    first = _compare(p, r, ctx)
    if first is not None:
        return first
    pairs = list(ctx.pending)
    if not pairs or len(pairs) > MAX_SYMBOLIC_LEAVES:
        return False
    try:
        results = get_pool().compare(pairs, rel_tol, timeout)
    except WorkerError as error:
        raise _Undecided(str(error)) from error
    ctx.resolved = dict(zip(pairs, results))
    ctx.collect = False
    ctx.memo.clear()
    return _compare(p, r, ctx) is True


_decide_cached = lru_cache(maxsize=1 << 16)(_decide)


class Verdict(str, Enum):
    """A comparison's outcome. UNDECIDED: the symbolic worker could not answer within the time limit (or no
    worker was free in time); it is neither right nor wrong, and metrics count it on its own."""

    EQUIVALENT = "equivalent"
    DIFFERENT = "different"
    UNDECIDED = "undecided"


def judge_equivalence(
    prediction: str,
    reference: str,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Verdict:
    """Three-valued ``is_equivalent``: a comparison cut off by ``timeout`` is UNDECIDED, not DIFFERENT."""
    if not isinstance(prediction, str) or not isinstance(reference, str):
        return Verdict.DIFFERENT
    if not rel_tol >= 0 or not timeout > 0:
        raise ValueError(f"rel_tol must be >= 0 and timeout > 0, got rel_tol={rel_tol!r}, timeout={timeout!r}")
    if len(prediction) > MAX_INPUT_CHARS or len(reference) > MAX_INPUT_CHARS:
        return Verdict.DIFFERENT
    try:
        equal = _decide_cached(prediction, reference, float(rel_tol), float(timeout))
    except _Undecided:
        return Verdict.UNDECIDED
    except (_TooComplex, RecursionError):
        return Verdict.DIFFERENT
    return Verdict.EQUIVALENT if equal else Verdict.DIFFERENT


def is_equivalent(
    prediction: str,
    reference: str,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """Whether ``prediction`` and ``reference`` denote the same mathematical answer.

    Numbers are compared exactly (``0.5`` = ``\\frac12`` = ``50\\%``), except that a decimal standing for a
    non-terminating value matches within ``rel_tol`` (relative). Expressions are compared up to simplification,
    equations against their right-hand side, tuples and intervals in order with their brackets, sets and
    lists of solutions in any order, words case-insensitively. Empty answers never match. Symbolic work runs
    in a worker process; ``timeout`` bounds the call's wall clock, waiting for a free worker included. A
    timeout, like any refused input, returns False here; ``judge_equivalence`` reports it as UNDECIDED.
    """
    verdict = judge_equivalence(prediction, reference, rel_tol=rel_tol, timeout=timeout)
    return verdict is Verdict.EQUIVALENT


def clear_cache() -> None:
    """Forget memoised results (for benchmarks that time cold calls)."""
    _decide_cached.cache_clear()
