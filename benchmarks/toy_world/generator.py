"""Synthetic GSM8K-like and MATH-like word problems with exact, checkable worked solutions.

Why synthetic: the toy world must run the paper's experiment with no network and no GPU, so its data has to be
small enough for a ~1M-parameter model to learn on a CPU in minutes, yet keep the shape of the real benchmarks
(multi-step chain of thought ending in `#### <answer>` for GSM8K, `\\boxed{}` answers for MATH) so that every
later stage (trace generation, answer checking, distillation) runs the same code as on real data.

All arithmetic is exact (`fractions.Fraction`): the generator never computes a number it has not checked.
Every record carries its template name and the sampled numbers (`params`) so tests can recompute the answer
independently of the solution text.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from math import gcd

GENERATOR_VERSION = "4"

NAMES = [
    "Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gina", "Hugo", "Ivy", "Jack",
    "Kim", "Leo", "Mia", "Nora", "Omar", "Pia", "Sam", "Tara", "Uma", "Zoe",
]  # fmt: skip
SHE = {"Ann", "Cara", "Eva", "Gina", "Ivy", "Kim", "Mia", "Nora", "Pia", "Tara", "Uma", "Zoe"}
GOODS = ["apples", "pens", "books", "cups", "toys", "hats", "cakes", "balls", "kites", "shirts"]
MADE = ["toys", "cups", "bags", "boxes", "chairs", "lamps"]
SWEETS = ["candies", "cookies", "stickers", "marbles", "cards", "shells"]


@dataclass(frozen=True)
class Difficulty:
    """What makes a problem hard for a tiny model: how many arithmetic steps, and how large the numbers get.

    `max_factor` bounds both factors of every product and every divisor; `max_value` bounds every number
    that appears in a problem or a solution (operands and intermediate results alike).
    """

    min_steps: int = 2
    max_steps: int = 3
    max_factor: int = 9
    max_value: int = 99

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps <= 4:
            raise ValueError(f"need 1 <= min_steps <= max_steps <= 4, got {self.min_steps}..{self.max_steps}")
        if self.max_factor < 2 or self.max_value < 2 * self.max_factor:
            raise ValueError("need max_factor >= 2 and max_value >= 2 * max_factor")


class _Reject(Exception):
    """Raised by a template when its sampled numbers break the difficulty bounds; the caller resamples."""


@dataclass(frozen=True)
class _Calc:
    """One arithmetic line before styling: `<before> a op b = result<after>.` in its plain form."""

    before: str
    a: int
    op: str
    b: int
    result: int
    after: str

    def plain(self) -> str:
        return f"{self.before} {self.a} {self.op} {self.b} = {self.result}{self.after}."


# Words that may start a line and read the same in lower case after a connector ("So the cakes cost ...").
_LOWERABLE = {"The", "He", "She", "In", "Each", "Now", "Together", "It", "They", "Altogether", "Every", "All",
              "We", "Buying", "That", "This", "Its", "Compute", "Their"}
_CONNECTORS = ("", "", "So ", "Then ", "Next, ", "Now ")
_OPENINGS = ("", "", "Let's solve it step by step.", "Let's think.", "We work it out step by step.")


def _after_connector(text: str) -> str:
    first, _, rest = text.partition(" ")
    return f"{first.lower()} {rest}" if first in _LOWERABLE else text


class _Steps:
    """Collects a solution's lines with exact checked arithmetic, then writes them in one of many styles.

    Why styles: a worked solution that is a fixed function of its question gives a perfect teacher zero
    entropy, so every non-greedy token is an error. Real reasoning traces have many answer-preserving
    choices: phrasings, connectors, side remarks, the order of independent steps. `solution` samples them
    (from the problem's own random stream, so the world stays deterministic by seed); every remark is a true
    statement about the question's numbers that the answer does not use.
    """

    OPS: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a / b,
    }

    def __init__(self, difficulty: Difficulty) -> None:
        self.d = difficulty
        self.lines: list[_Calc | str] = []

    def calc(self, before: str, a: int, op: str, b: int, after: str) -> int:
        """Append one line; reject numbers out of bounds (a product needs one small factor, a divisor too)."""
        if (op == "*" and min(a, b) > self.d.max_factor) or (op == "/" and b > self.d.max_factor):
            raise _Reject
        value = self.OPS[op](Fraction(a), Fraction(b))
        if value.denominator != 1 or not 0 <= value <= self.d.max_value or max(a, b) > self.d.max_value:
            raise _Reject
        result = int(value)
        self.lines.append(_Calc(before, a, op, b, result, after))
        return result

    def plain(self, final: int) -> str:
        """The canonical solution: one fixed phrasing, no remarks (the v1 world's only form)."""
        lines = [line.plain() if isinstance(line, _Calc) else line for line in self.lines]
        return "\n".join([*lines, f"#### {final}"])

    def solution(
        self, final: int, question: str, rng: random.Random, style: bool = True, extra: random.Random | None = None
    ) -> str:
        """The solution in a sampled style (see the class docstring); `style=False` gives `plain`.

        `extra`, when given, adds the rich choices (`_Extras`) drawn from that stream only, so `rng` makes the
        same draws as without them and the problem stream (and so every split) stays the same.
        """
        if not style:
            return self.plain(final)
        extras = _Extras(extra, question) if extra is not None else None
        out: list[str] = []
        opening = rng.choice(_OPENINGS)
        if opening:
            out.append(opening)
        if rng.random() < 0.3:
            out.append(_restate(question, rng))
        for i, line in enumerate(self.lines):
            text = _style_line(line, rng, extras.tail() if extras else "") if isinstance(line, _Calc) else line
            connector = rng.choice(_CONNECTORS) if i > 0 else (extras.first_connector() if extras else "")
            out.append(connector + _after_connector(text) if connector else text)
            if rng.random() < 0.25:
                remark = side_remark(question, rng)
                if remark:
                    out.append(extras.remark_lead(remark) if extras else remark)
            if extras and (remark := extras.remark()):
                out.append(remark)
        if extras and (closing := extras.closing(final)):
            out.append(closing)
        return "\n".join([*out, f"#### {final}"])


class _Extras:
    """The rich style (world v6): more answer-preserving choices, none inside an equation.

    Why: on world v5 only 20% of the teacher's non-digit positions carried >= 0.3 nats of entropy (issue 12 asks
    for 30%); its choices sat at line starts. These add choices at the end of arithmetic lines (after the result),
    in how a side remark opens, more remarks, a first-line connector and a closing sentence that repeats the
    answer. All are drawn from their own stream.
    """

    TAILS = ("", "", " in all", " in total", " here")
    FIRST = ("", "", "First, ", "To start, ")
    LEADS = ("Note that", "Notice that", "We see that", "Also,")
    CLOSINGS = ("The answer is {}.", "So the answer is {}.", "The final answer is {}.")

    def __init__(self, rng: random.Random, question: str) -> None:
        self.rng, self.question = rng, question

    def tail(self) -> str:
        return self.rng.choice(self.TAILS)

    def first_connector(self) -> str:
        return self.rng.choice(self.FIRST)

    def remark_lead(self, remark: str) -> str:
        return remark.replace("Note that", self.rng.choice(self.LEADS), 1)

    def remark(self) -> str | None:
        if self.rng.random() >= 0.2:
            return None
        remark = side_remark(self.question, self.rng)
        return self.remark_lead(remark) if remark else None

    def closing(self, final: int) -> str | None:
        return self.rng.choice(self.CLOSINGS).format(final) if self.rng.random() < 0.5 else None


# How an arithmetic line joins its operation to its result. World v3 varied it (`=`, `is`, `, which is`, `, that
# is`). Measured with the teacher probe on v4's splits (n = 1,000, training seeds 1 and 2): 40.1% and 20.4% with
# the varied joins, 50.2% and 39.1% with `=` alone. Our reading: a tiny model finds the operands at a fixed
# distance before the result, and a varied join moves them (the student's arithmetic facts use `=` too). The
# harmless choices now sit around the equation (connectors, verbs, remarks, openings), never inside it.
_JOINS: tuple[str, ...] = (" =",)


def _style_line(line: _Calc, rng: random.Random, tail: str = "") -> str:
    """One phrasing of an arithmetic line, always in reading order: what is computed, the operands, the result.

    Why reading order: in world v2 two of three phrasings put the equation before what it computes, and that
    cost the teacher 25 points (probe: 34% with them, 60% with plain lines).
    """
    join = rng.choice(_JOINS) if len(_JOINS) > 1 else _JOINS[0]
    return f"{line.before} {line.a} {line.op} {line.b}{join} {line.result}{line.after}{tail}."


_LAST_QUESTION = re.compile(r"\s*[^.?]*\?$")  # the asked sentence at the end of a question


def _restate(question: str, rng: random.Random) -> str:
    """A restatement of what is asked (a copy of the question sentence): harmless, answer-preserving text."""
    asked = _LAST_QUESTION.search(question.strip())
    sentence = asked.group(0).strip() if asked else question.strip()
    return f"{rng.choice(('The question is:', 'We are asked:', 'We want to know:'))} {sentence}"


def side_remark(question: str, rng: random.Random) -> str | None:
    """A true, checkable fact about the question's numbers (parity, order) that the answer does not use.

    No arithmetic here: a sum in a remark is one more place for a tiny teacher to err and to pick up numbers
    that the next line must not use.
    """
    numbers = [int(n) for n in re.findall(r"\d+", question)]
    if not numbers:
        return None
    n = rng.choice(numbers)
    kind = rng.randrange(2)
    others = [m for m in numbers if m != n]
    if kind == 1 and others:
        m = rng.choice(others)
        return f"Note that {n} is {'more' if n > m else 'less'} than {m}."
    return f"Note that {n} is {'even' if n % 2 == 0 else 'odd'}."


def _small(rng: random.Random, d: Difficulty) -> int:
    """An addend (eaten, extra, gift...) scaled to the difficulty, so every template fits the bounds."""
    return rng.randint(1, max(2, d.max_value // 3))


def _pronoun(name: str) -> tuple[str, str]:
    return ("She", "her") if name in SHE else ("He", "his")


# Each GSM8K template draws its numbers and writes the question and the worked solution; `n_steps` is the
# number of arithmetic lines wanted (a template with fewer variants uses its longest one). It returns
# (question, steps, final, params); `params` holds every sampled number, for independent re-computation.
Template = Callable[[random.Random, int, Difficulty], tuple[str, "_Steps", int, dict]]


def _shopping(rng: random.Random, n_steps: int, d: Difficulty) -> tuple[str, _Steps, int, dict]:
    name = rng.choice(NAMES)
    he, _ = _pronoun(name)
    s = _Steps(d)
    n_items = 1 if n_steps <= 2 else 2
    change = n_steps in (2, 4)
    goods = rng.sample(GOODS, n_items)
    counts = [rng.randint(2, d.max_factor) for _ in goods]
    prices = [rng.randint(2, d.max_factor) for _ in goods]
    parts = [f"{c} {g} at {p} dollars each" for c, g, p in zip(counts, goods, prices)]
    question = f"{name} buys {' and '.join(parts)}."
    costs = []
    for i in rng.sample(range(n_items), n_items):  # the items' costs are independent steps: either order
        verb = rng.choice((f"The {goods[i]} cost", f"The {goods[i]} come to", f"Buying the {goods[i]} costs"))
        costs.append(s.calc(verb, counts[i], "*", prices[i], " dollars"))
    total = costs[0]
    if n_items == 2:
        verb = rng.choice((f"In total {he.lower()} spends", f"Altogether {he.lower()} spends", f"{he} spends"))
        total = s.calc(verb, costs[0], "+", costs[1], " dollars")
    params: dict = {"counts": counts, "prices": prices}
    if change:
        bill = rng.choice([b for b in (20, 50, 100) if total <= b <= d.max_value] or [0])
        if bill < total:
            raise _Reject
        question += f" {he} pays with {bill} dollars. How much change does {he.lower()} get?"
        verb, unit = rng.choice(((f"{he} gets", " dollars back"), ("The change is", " dollars")))
        final = s.calc(verb, bill, "-", total, unit)
        params["bill"] = bill
    else:
        question += f" How many dollars does {he.lower()} spend?"
        final = total
    return question, s, final, params


def _rates(rng: random.Random, n_steps: int, d: Difficulty) -> tuple[str, _Steps, int, dict]:
    thing = rng.choice(MADE)
    s = _Steps(d)
    rate, hours = rng.randint(2, d.max_factor), rng.randint(2, d.max_factor)
    params: dict = {"rate": rate, "hours": hours}
    question = f"A machine makes {rate} {thing} per hour."
    if n_steps == 1:
        question += f" How many {thing} does it make in {hours} hours?"
        final = s.calc(rng.choice(("It makes", "The machine makes")), rate, "*", hours, f" {thing}")
        return question, s, final, params
    days = rng.randint(2, d.max_factor)
    params["days"] = days
    question += f" It works {hours} hours a day for {days} days."
    per_day = s.calc(rng.choice(("Each day it makes", "In one day it makes")), rate, "*", hours, f" {thing}")
    final = s.calc(rng.choice(("In all it makes", "Altogether it makes")), per_day, "*", days, f" {thing}")
    if n_steps >= 3:
        broken = rng.randint(1, max(1, final // 2))
        params["broken"] = broken
        question += f" {broken} of them break."
        final = s.calc(rng.choice(("The good ones are", "The good ones number")), final, "-", broken, f" {thing}")
    if n_steps >= 4:
        per_box = rng.randint(2, d.max_factor)
        params["per_box"] = per_box
        question += f" The good ones are packed {per_box} to a box. How many boxes are filled?"
        final = s.calc("They fill", final, "/", per_box, " boxes")
    elif n_steps == 3:
        question += f" How many good {thing} are there?"
    else:
        question += f" How many {thing} does it make?"
    return question, s, final, params


def _ages(rng: random.Random, n_steps: int, d: Difficulty) -> tuple[str, _Steps, int, dict]:
    a, b, c = rng.sample(NAMES, 3)
    s = _Steps(d)
    age_a, older = rng.randint(2, max(3, d.max_value // 2)), _small(rng, d)
    params: dict = {"age": age_a, "older": older}
    question = f"{a} is {age_a} years old. {b} is {older} years older than {a}."
    if n_steps >= 3 and rng.random() < 0.5:  # b's and c's ages are independent steps: either order
        times = rng.randint(2, d.max_factor)
        age_c = s.calc(f"{c} is", times, "*", age_a, " years old")
    else:
        times, age_c = 0, None
    age_b = s.calc(f"{b} is", age_a, "+", older, " years old")
    if n_steps == 1:
        return question + f" How old is {b}?", s, age_b, params
    if n_steps == 2:
        question += f" How old are {a} and {b} together?"
        verb = rng.choice(("Together they are", "Together their ages are"))
        return question, s, s.calc(verb, age_a, "+", age_b, " years old"), params
    if age_c is None:
        times = rng.randint(2, d.max_factor)
        age_c = s.calc(f"{c} is", times, "*", age_a, " years old")
    params["times"] = times
    question += f" {c} is {times} times as old as {a}."
    final = s.calc(rng.choice(("Together they are", "Together their ages are")), age_b, "+", age_c, " years old")
    if n_steps == 3:
        return question + f" How old are {b} and {c} together?", s, final, params
    years = _small(rng, d)
    params["years"] = years
    question += f" How much older than {b} will {c} be in {years} years?"
    final = s.calc(f"{c} is", age_c, "-", age_b, f" years older than {b}")
    s.lines.pop(-2)  # the sum is not needed for this question
    s.lines.append(rng.choice((f"The gap stays the same in {years} years.",
                               f"In {years} years the gap is still the same.")))
    return question, s, final, params


def _sharing(rng: random.Random, n_steps: int, d: Difficulty) -> tuple[str, _Steps, int, dict]:
    name = rng.choice(NAMES)
    he, _ = _pronoun(name)
    sweet = rng.choice(SWEETS)
    s = _Steps(d)
    friends, each = rng.randint(2, d.max_factor), rng.randint(2, d.max_factor)
    eaten = _small(rng, d) if n_steps >= 2 else 0
    start = friends * each + eaten
    params: dict = {"start": start, "eaten": eaten, "friends": friends}
    if n_steps >= 2:
        question = (
            f"{name} has {start} {sweet}. {he} eats {eaten} of them and shares the rest equally "
            f"among {friends} friends."
        )
        left = s.calc(rng.choice((f"{he} has", "That leaves")), start, "-", eaten, f" {sweet} left")
    else:
        question = f"{name} shares {start} {sweet} equally among {friends} friends."
        left = start
    final = s.calc(rng.choice(("Each friend gets", "Every friend gets")), left, "/", friends, f" {sweet}")
    if n_steps >= 3:
        extra = _small(rng, d)
        params["extra"] = extra
        question += f" Then each friend finds {extra} more. How many {sweet} does each friend have now?"
        final = s.calc(rng.choice(("Now each friend has", "Each friend now has")), final, "+", extra, f" {sweet}")
    else:
        question += f" How many {sweet} does each friend get?"
    return question, s, final, params


def _units(rng: random.Random, n_steps: int, d: Difficulty) -> tuple[str, _Steps, int, dict]:
    """Unit conversion with small factors (weeks, dozens, yards), so the products stay within bounds."""
    name = rng.choice(NAMES)
    he, _ = _pronoun(name)
    s = _Steps(d)
    unit, per, small = rng.choice([("weeks", 7, "days"), ("dozen", 12, "eggs"), ("yards", 3, "feet")])
    big = rng.randint(2, d.max_factor)
    params: dict = {"per": per, "big": big}
    question = {
        "weeks": f"{name} reads every day for {big} weeks",
        "dozen": f"{name} buys {big} dozen eggs",
        "yards": f"{name} has a rope {big} yards long",
    }[unit]
    final = s.calc(f"{big} {unit} is", big, "*", per, f" {small}")
    if n_steps >= 2:
        more = _small(rng, d)
        params["more"] = more
        question += f" and {more} more {small}"
        final = s.calc(rng.choice(("In total that is", "Altogether that is")), final, "+", more, f" {small}")
    question += "."
    if n_steps >= 3:
        parts = rng.randint(2, d.max_factor)
        params["parts"] = parts
        question += f" {he} splits the {small} into {parts} equal parts. How many {small} are in each part?"
        final = s.calc(rng.choice(("Each part has", "Every part has")), final, "/", parts, f" {small}")
    else:
        question += f" How many {small} is that?"
    return question, s, final, params


def _savings(rng: random.Random, n_steps: int, d: Difficulty) -> tuple[str, _Steps, int, dict]:
    name = rng.choice(NAMES)
    he, _ = _pronoun(name)
    s = _Steps(d)
    per_week, weeks = rng.randint(2, d.max_factor), rng.randint(2, d.max_factor)
    params: dict = {"per_week": per_week, "weeks": weeks}
    question = f"{name} saves {per_week} dollars each week for {weeks} weeks."
    final = s.calc(rng.choice((f"{he} saves", "In all the savings are")), per_week, "*", weeks, " dollars")
    if n_steps >= 2:
        gift = _small(rng, d)
        params["gift"] = gift
        question += f" {he} also gets {gift} dollars as a gift."
        final = s.calc(rng.choice((f"{he} has", "Now there are")), final, "+", gift, " dollars")
    if n_steps >= 3:
        price = rng.randint(1, final)
        params["price"] = price
        question += f" Then {he.lower()} buys a game for {price} dollars. How many dollars are left?"
        final = s.calc(rng.choice((f"{he} has", "That leaves")), final, "-", price, " dollars left")
    else:
        question += f" How many dollars does {he.lower()} have?"
    return question, s, final, params


GSM8K_TEMPLATES: dict[str, Template] = {
    "shopping": _shopping,
    "rates": _rates,
    "ages": _ages,
    "sharing": _sharing,
    "units": _units,
    "savings": _savings,
}


# ---------------------------------------------------------------------------------------------- MATH-like


def _latex_fraction(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    sign = "-" if q < 0 else ""
    return f"{sign}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


def _fraction_sum(rng: random.Random, d: Difficulty) -> tuple[str, str, str, dict]:
    b, dd = rng.randint(2, d.max_factor), rng.randint(2, d.max_factor)
    a, c = rng.randint(1, b - 1), rng.randint(1, dd - 1)
    op = rng.choice("+-")
    value = Fraction(a, b) + Fraction(c, dd) if op == "+" else Fraction(a, b) - Fraction(c, dd)
    num = a * dd + c * b if op == "+" else a * dd - c * b
    question = f"Compute $\\frac{{{a}}}{{{b}}} {op} \\frac{{{c}}}{{{dd}}}$."
    answer = (
        f"Over the common denominator ${b * dd}$, "
        f"$\\frac{{{a}}}{{{b}}} {op} \\frac{{{c}}}{{{dd}}} = \\frac{{{num}}}{{{b * dd}}}$, "
        f"which simplifies to ${_latex_fraction(value)}$.\nThe answer is $\\boxed{{{_latex_fraction(value)}}}$."
    )
    return question, answer, _latex_fraction(value), {"a": a, "b": b, "c": c, "d": dd, "op": op}


def _linear(rng: random.Random, d: Difficulty) -> tuple[str, str, str, dict]:
    a = rng.randint(2, d.max_factor)
    b, c = rng.randint(-20, 20), rng.randint(-20, 20)
    x = Fraction(c - b, a)
    lhs = f"{a}x {'+' if b >= 0 else '-'} {abs(b)}"
    question = f"Solve ${lhs} = {c}$ for $x$."
    answer = (
        f"Subtracting ${b}$ from both sides gives ${a}x = {c - b}$, so $x = \\frac{{{c - b}}}{{{a}}}"
        f" = {_latex_fraction(x)}$.\nThe answer is $\\boxed{{{_latex_fraction(x)}}}$."
    )
    return question, answer, _latex_fraction(x), {"a": a, "b": b, "c": c}


def _expand(rng: random.Random, d: Difficulty) -> tuple[str, str, str, dict]:
    p, q = rng.randint(1, d.max_factor), rng.randint(1, d.max_factor)
    question = f"Expand $(x + {p})(x + {q})$."
    poly = f"x^2 + {p + q}x + {p * q}"
    answer = (
        f"By distributing, $(x + {p})(x + {q}) = x^2 + {p}x + {q}x + {p * q} = {poly}$.\n"
        f"The answer is $\\boxed{{{poly}}}$."
    )
    return question, answer, poly, {"p": p, "q": q}


def _simplify(rng: random.Random, d: Difficulty) -> tuple[str, str, str, dict]:
    k = rng.randint(2, d.max_factor)
    num, den = rng.randint(1, d.max_factor), rng.randint(2, d.max_factor)
    value = Fraction(num * k, den * k)
    g = gcd(num * k, den * k)
    question = f"Simplify $\\frac{{{num * k}}}{{{den * k}}}$."
    answer = (
        f"The greatest common divisor of ${num * k}$ and ${den * k}$ is ${g}$, "
        f"so the fraction is ${_latex_fraction(value)}$.\nThe answer is $\\boxed{{{_latex_fraction(value)}}}$."
    )
    return question, answer, _latex_fraction(value), {"num": num * k, "den": den * k}


MATH_TEMPLATES: dict[str, Callable[[random.Random, Difficulty], tuple[str, str, str, dict]]] = {
    "fraction_sum": _fraction_sum,
    "linear": _linear,
    "expand": _expand,
    "simplify": _simplify,
}


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Problem:
    """One record in GSM8K format (`question`, `answer` ending in `#### final`, `final`), plus provenance."""

    question: str
    answer: str
    final: str
    family: str
    template: str
    params: dict
    canonical: str = ""  # the solution in its one plain phrasing, no remarks (what stories are told from)

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """Identity for split disjointness: the template and its numbers, ignoring names and items."""
        numbers = sorted((k, str(v)) for k, v in self.params.items())
        return f"{self.family}:{self.template}:{numbers}"


def generate_problems(
    seed: int, family: str = "gsm8k", difficulty: Difficulty | None = None, style: bool = True,
    rich: bool = False,
) -> Iterator[Problem]:
    """Yield an endless, deterministic stream of problems (duplicates possible; `make_splits` removes them).

    `style=False` writes every GSM8K-like solution in its one plain phrasing (the v1 world); `rich=True` adds
    the rich style's choices (`_Extras`) from a stream of their own: the same problems, more varied solutions.
    """
    difficulty = difficulty or Difficulty()
    rng = random.Random(f"{family}-{seed}")
    if family == "gsm8k":
        names = sorted(GSM8K_TEMPLATES)
        while True:
            # Retry the same template and step count on rejection, so tight bounds do not skew the mix.
            template = rng.choice(names)
            n_steps = rng.randint(difficulty.min_steps, difficulty.max_steps)
            for _ in range(1000):
                try:
                    question, steps, final, params = GSM8K_TEMPLATES[template](rng, n_steps, difficulty)
                    break
                except _Reject:
                    continue
            else:
                raise ValueError(f"template {template!r} cannot fit {difficulty}: raise max_value")
            params["n_steps"] = len(steps.lines)
            extra = random.Random(f"{family}-{seed}-rich-{question}") if rich else None
            answer = steps.solution(final, question, rng, style, extra)
            yield Problem(question, answer, str(final), family, template, params, steps.plain(final))
    elif family == "math":
        names = sorted(MATH_TEMPLATES)
        while True:
            template = rng.choice(names)
            question, answer, final, params = MATH_TEMPLATES[template](rng, difficulty)
            yield Problem(question, answer, final, family, template, params, answer)
    else:
        raise ValueError(f"unknown problem family {family!r}: use 'gsm8k' or 'math'")


def split_shares(sizes: dict[str, int], shares: dict[str, float] | None = None) -> dict[str, float]:
    """The share of every problem stratum each split is dealt: `shares` checked, else proportional to `sizes`."""
    if shares is None:
        total = sum(sizes.values())
        if total <= 0:
            raise ValueError(f"need at least one problem in some split, got sizes {sizes}")
        return {name: size / total for name, size in sizes.items()}
    if set(shares) != set(sizes) or any(v <= 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-9:
        raise ValueError(f"split shares {shares} must be positive, name the splits {sorted(sizes)} and sum to 1")
    return dict(shares)


def _bucket(seed: int, key: str, cumulative: list[tuple[float, str]]) -> str:
    """The split a problem belongs to: a uniform number from its key's hash, read against the cumulative shares."""
    digest = hashlib.sha256(f"split-{seed}-{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    for edge, name in cumulative:
        if u < edge:
            return name
    return cumulative[-1][1]


def make_splits(
    seed: int,
    sizes: dict[str, int],
    family: str = "gsm8k",
    difficulty: Difficulty | None = None,
    reworded: Collection[str] = (),
    style: bool = True,
    shares: dict[str, float] | None = None,
    rich: bool = False,
) -> dict[str, list[dict]]:
    """Draw unique problems and deal each to the split its key hashes to, until every split is full.

    Why hashing: some strata of problems are tiny (a one-step product of two factors <= 9 has 64 problems), and
    world v3 dealt splits in turn (test first), so a 1,000-problem test split took every such problem and the
    train split had none: 40% of the test problems were of kinds the teacher never saw. A problem's split is
    fixed by a hash of its key, with `shares` (default: proportional to `sizes`), so every stratum is dealt in
    the same proportions, whatever its size. A split's content depends only on the seed, its share and its own
    size, never on how much another split asks for. Splits never share a problem (its template and numbers). A
    split named in `reworded` may also hold other wordings (names, items) of its own problems, unique by question
    text: measured on the toy world, a teacher trained on 12,000 such questions learns to read the numbers off
    the question, where one trained on a few thousand memorises them.
    Raises when a split's share runs out of distinct problems (the bounds are too tight for the sizes requested).
    """
    edge, cumulative = 0.0, []
    for name, share in split_shares(sizes, shares).items():
        edge += share
        cumulative.append((edge, name))
    splits: dict[str, list[dict]] = {name: [] for name in sizes}
    keys: dict[str, set[str]] = {name: set() for name in sizes}
    questions: dict[str, set[str]] = {name: set() for name in sizes}
    stream = generate_problems(seed, family, difficulty, style, rich)
    idle = 0  # consecutive draws that added nothing to a split still filling
    while any(len(splits[name]) < size for name, size in sizes.items()):
        problem = next(stream)
        key = problem.key()
        name = _bucket(seed, key, cumulative)
        fresh = key not in keys[name]
        rewording = name in reworded and not fresh and problem.question not in questions[name]
        if len(splits[name]) >= sizes[name] or not (fresh or rewording):
            idle += 1
            if idle > 200_000:
                short = [f"{n} ({len(splits[n])} of {sizes[n]})" for n in sizes if len(splits[n]) < sizes[n]]
                raise ValueError(
                    f"only {sum(len(k) for k in keys.values())} distinct {family} problems fit the difficulty "
                    f"bounds, too few for {', '.join(short)}: ask for smaller splits or raise max_value/max_factor"
                )
            continue
        idle = 0
        keys[name].add(key)
        questions[name].add(problem.question)
        splits[name].append({"id": f"toy-{family}-{name}-{len(splits[name])}", **problem.to_dict()})
    return splits


# ---------------------------------------------------------------------------------------------- generic corpus

WORLD_FACTS = [
    "A week has 7 days.",
    "A dozen is 12.",
    "A yard is 3 feet.",
    "To share equally, divide the total by the number of people.",
    "Change is the money paid minus the cost.",
    "The cost of several things is the count times the price.",
]


def arithmetic_fact(rng: random.Random, d: Difficulty) -> str:
    """One true equation `a op b = c` drawn uniformly over the operations the problems use, within bounds.

    This is the student's arithmetic schooling: it learns to compute, but never sees a worked solution.
    """
    op = rng.choice("+-*/")
    if op == "+":
        c = rng.randint(2, d.max_value)
        a = rng.randint(1, c - 1)
        return f"{a} + {c - a} = {c}"
    if op == "-":
        a = rng.randint(1, d.max_value)
        b = rng.randint(0, a)
        return f"{a} - {b} = {a - b}"
    small = rng.randint(1, d.max_factor)
    big = rng.randint(1, d.max_value // small)
    if op == "*":
        a, b = (small, big) if rng.random() < 0.5 else (big, small)
        return f"{a} * {b} = {a * b}"
    return f"{small * big} / {small} = {big}"


def _fact_from(rng: random.Random, d: Difficulty, a: int) -> str | None:
    """A true equation whose first operand is `a`, within the bounds, or None when none fits."""
    options = []
    if a < d.max_value:
        b = rng.randint(1, d.max_value - a)
        options.append(f"{a} + {b} = {a + b}")
    if a > 0:
        b = rng.randint(0, a)
        options.append(f"{a} - {b} = {a - b}")
    if 0 < a <= d.max_value // 2:
        b = rng.randint(2, min(d.max_factor, d.max_value // a)) if a > d.max_factor else rng.randint(
            2, max(2, d.max_value // a)
        )
        if a * b <= d.max_value and min(a, b) <= d.max_factor:
            options.append(f"{a} * {b} = {a * b}")
    divisors = [k for k in range(2, d.max_factor + 1) if a % k == 0 and a > 0]
    if divisors:
        k = rng.choice(divisors)
        options.append(f"{a} / {k} = {a // k}")
    return rng.choice(options) if options else None


def _fact_chain(rng: random.Random, d: Difficulty, n: int) -> list[str]:
    """Equations where the next often starts from the last result: arithmetic practice that also rewards
    copying a number seen earlier (what reading a problem needs), still without any worked solution."""
    lines: list[str] = []
    last: int | None = None
    for _ in range(n):
        fact = arithmetic_fact(rng, d)
        if last is not None and rng.random() < 0.5:
            fact = _fact_from(rng, d, last) or fact
        lines.append(fact + ".")
        last = int(fact.rsplit(" ", 1)[1])
    return lines


_EQUATION = re.compile(r"\d+ [-+*/] \d+ = (\d+)")


def story(question: str, answer: str) -> str:
    """The problem told as a plain statement of what happens, results included, with no working shown.

    "Zoe buys 2 cakes at 5 dollars each. She pays with 50 dollars. The cakes cost 10 dollars. She gets 40
    dollars back." The asked question is dropped, each solution line keeps only its result, and there is no
    `####` line: the student reads such text in pretraining (as a real base model has read about the world)
    but never a question followed by a worked, step-by-step answer, which is what distillation teaches it.
    """
    setting = _LAST_QUESTION.sub("", question).strip()
    results = [_EQUATION.sub(r"\1", line) for line in answer.splitlines() if not line.startswith("####")]
    return " ".join([setting, *results])


def short_answer(final: str) -> str:
    """The undistilled student's answer format: the number alone, no working (it has read a few of these)."""
    return f"The answer is {final}."


def generic_corpus(
    questions: list[str],
    n_docs: int,
    seed: int,
    d: Difficulty,
    facts_per_doc: int,
    stories: list[str] | None = None,
) -> list[str]:
    """Documents of the student's pretraining: problem statements, stories (see `story`), facts and equations.

    Half the documents are texts of the world (a question, or a story when `stories` is given, evenly), half
    are chains of arithmetic facts; none is a worked solution.
    """
    rng = random.Random(f"corpus-{seed}")
    docs = []
    for _ in range(n_docs):
        if rng.random() < 0.5 and questions:
            docs.append(rng.choice(stories) if stories and rng.random() < 0.5 else rng.choice(questions))
        else:
            lines = _fact_chain(rng, d, facts_per_doc)
            if rng.random() < 0.3:
                lines.insert(rng.randint(0, len(lines)), rng.choice(WORLD_FACTS))
            docs.append("\n".join(lines))
    return docs
