"""Fast exact path for plain numbers: integers, decimals, simple fractions, percentages, scientific notation.

Most GSM8K and MATH answers are numbers; deciding them with ``fractions.Fraction`` and anchored regexes takes
microseconds and needs no parser, no sympy and no worker process. Anything this module does not recognise goes
to the guarded symbolic path instead. Sizes are capped so that ``Fraction`` never builds a huge integer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_DIGITS = 400  # longer literals are not plain answers; refusing them keeps Fraction arithmetic cheap
MAX_EXPONENT = 400  # 1e400 is fine, 1e999999999 would allocate a billion-digit integer

_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_SIGNED = rf"[-+]?(?:{_UNSIGNED})"
_NUMBER = re.compile(rf"({_SIGNED})")
# A decimal comma: 2,74 and 1000,99 (two digits after it; 1,000 is a thousands separator).
DECIMAL_COMMA = re.compile(r"-?\d+,\d{2}")
_SCI = re.compile(
    rf"({_SIGNED})(?:[eE]([-+]?\d+)|(?:\\times|\\cdot|\*|x)10\^(?:\{{([-+]?\d+)\}}|(\d)))"
)
_POW10 = re.compile(r"([-+]?)10\^(?:\{([-+]?\d+)\}|(\d))")
_FRAC = re.compile(rf"([-+]?)\\frac\{{({_SIGNED})\}}\{{({_SIGNED})\}}")
_FRAC_SHORT = re.compile(r"([-+]?)\\frac(\d)(\d)")
_FRAC_HALF_SHORT = re.compile(rf"([-+]?)\\frac(?:(\d)\{{({_SIGNED})\}}|\{{({_SIGNED})\}}(\d))")
_SLASH = re.compile(rf"({_SIGNED})/({_SIGNED})")
_INFINITY = re.compile(r"([-+]?)\\infty")


@dataclass(frozen=True)
class Number:
    """An exactly parsed number. ``decimal`` marks a value written with a decimal point (possibly rounded)."""

    value: Fraction | None  # None for ±infinity
    decimal: bool = False
    percent: bool = False
    infinity: int = 0  # +1 / -1 for ±\infty


def _literal(text: str) -> tuple[Fraction, bool] | None:
    digits = sum(ch.isdigit() for ch in text)
    if digits > MAX_DIGITS:
        return None
    cleaned = text.replace(",", "")
    if cleaned.endswith("."):
        cleaned = cleaned[:-1]
    if cleaned in ("", "+", "-"):
        return None
    return Fraction(cleaned), "." in text


def _exponent(text: str) -> int | None:
    value = int(text)
    return value if abs(value) <= MAX_EXPONENT else None


def parse_number(answer: str) -> Number | None:
    """Parse a normalised answer that is exactly one plain number, else None (never raises)."""
    text = answer.replace(" ", "")
    percent = False
    if text.endswith("\\%"):
        percent = True
        text = text[:-2]
    if not text or len(text) > MAX_DIGITS + 40:
        return None
    try:
        return _parse(text, percent)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _parse(text: str, percent: bool) -> Number | None:
    if _NUMBER.fullmatch(text):
        parsed = _literal(text)
        return None if parsed is None else Number(parsed[0], parsed[1], percent)
    match = _SCI.fullmatch(text)
    if match:
        parsed = _literal(match.group(1))
        exponent = _exponent(match.group(2) or match.group(3) or match.group(4))
        if parsed is None or exponent is None:
            return None
        return Number(parsed[0] * Fraction(10) ** exponent, True, percent)
    match = _POW10.fullmatch(text)
    if match:
        exponent = _exponent(match.group(2) or match.group(3))
        if exponent is None:
            return None
        sign = -1 if match.group(1) == "-" else 1
        return Number(sign * Fraction(10) ** exponent, False, percent)
    fraction = _fraction(text)
    if fraction is not None:
        return Number(fraction[0], fraction[1], percent)
    match = _INFINITY.fullmatch(text)
    if match and not percent:
        return Number(None, infinity=-1 if match.group(1) == "-" else 1)
    return None


def _fraction(text: str) -> tuple[Fraction, bool] | None:
    sign = ""
    match = _FRAC.fullmatch(text) or _FRAC_SHORT.fullmatch(text)
    if match:
        sign, top, bottom = match.group(1), match.group(2), match.group(3)
    elif (match := _FRAC_HALF_SHORT.fullmatch(text)) is not None:
        sign = match.group(1)
        top = match.group(2) or match.group(4)
        bottom = match.group(3) or match.group(5)
    elif (match := _SLASH.fullmatch(text)) is not None:
        top, bottom = match.group(1), match.group(2)
    else:
        return None
    numerator = _literal(top)
    denominator = _literal(bottom)
    if numerator is None or denominator is None or denominator[0] == 0:
        return None
    value = numerator[0] / denominator[0]
    if sign == "-":
        value = -value
    return value, numerator[1] or denominator[1]


def _terminates(value: Fraction) -> bool:
    """True when the value has a finite decimal expansion (denominator 2^a 5^b)."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def close_enough(a: Fraction, b: Fraction, decimal: bool, rel_tol: float) -> bool:
    """Exact equality, or relative closeness when a rounded decimal stands for a non-terminating value.

    ``0.333333`` matches ``1/3`` (within ``rel_tol``), but two terminating values must agree exactly:
    ``70000.5`` is not ``70000`` however small the relative gap, because neither is a rounding of the other.
    """
    if a == b:
        return True
    if not decimal or (_terminates(a) and _terminates(b)):
        return False
    tolerance = Fraction(repr(float(rel_tol))) * max(abs(a), abs(b))  # the decimal rel_tol, exactly
    return abs(a - b) <= tolerance


def numbers_equal(a: Number, b: Number, rel_tol: float) -> bool:
    """Compare two parsed numbers; a percentage on one side may mean the bare value or value/100."""
    if a.value is None or b.value is None:
        return a.infinity != 0 and a.infinity == b.infinity
    decimal = a.decimal or b.decimal
    if a.percent == b.percent:
        return close_enough(a.value, b.value, decimal, rel_tol)
    plain, with_percent = (a, b) if b.percent else (b, a)
    assert with_percent.value is not None and plain.value is not None
    return close_enough(plain.value, with_percent.value, decimal, rel_tol) or close_enough(
        plain.value, with_percent.value / 100, decimal, rel_tol
    )
