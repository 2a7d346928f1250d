"""Size guards run before anything is handed to the symbolic path.

The worker process already bounds every comparison by wall-clock time, but an answer that can only end in a
timeout (``9^{9^{9^9}}``, ``(10^{100000})!``, a 10^5-character string, braces nested 1000 deep) would cost a
full timeout plus a worker restart. These cheap linear checks refuse such inputs up front; a refused answer
is simply not equivalent to anything.
"""

from __future__ import annotations

import re

from harness_plugin.answers.latex import matching_close, max_depth

MAX_SYMBOLIC_CHARS = 1000
MAX_DEPTH = 24
MAX_LITERAL_DIGITS = 300
MAX_POWERS = 40
MAX_EXPONENT_VALUE = 100_000  # b^{100000} is cheap for small b; a tower above it is not
MAX_FACTORIAL_ARGUMENT = 10_000  # 10000! has 35660 digits: milliseconds; MATH has answers like 1/2004!

_LONG_LITERAL = re.compile(rf"\d{{{MAX_LITERAL_DIGITS + 1},}}")
_LETTER = re.compile(r"[a-zA-Z]")


def refusal(answer: str) -> str | None:
    """Why ``answer`` must not reach the symbolic path, or None when it may."""
    if len(answer) > MAX_SYMBOLIC_CHARS:
        return f"longer than {MAX_SYMBOLIC_CHARS} characters"
    if _LONG_LITERAL.search(answer):
        return f"a number with more than {MAX_LITERAL_DIGITS} digits"
    if max_depth(answer) > MAX_DEPTH:
        return f"brackets nested deeper than {MAX_DEPTH}"
    if answer.count("^") > MAX_POWERS:
        return f"more than {MAX_POWERS} powers"
    reason = _exponent_refusal(answer)
    if reason:
        return reason
    return _factorial_refusal(answer)


def _exponent_text(answer: str, caret: int) -> str:
    """The exponent after the ``^`` at ``caret``: a braced group or one character."""
    i = caret + 1
    while i < len(answer) and answer[i] == " ":
        i += 1
    if i >= len(answer):
        return ""
    if answer[i] == "{":
        close = matching_close(answer, i)
        return answer[i + 1 : close] if close is not None else answer[i + 1 :]
    return answer[i]


def bounded_value(expression: str, cap: int = MAX_EXPONENT_VALUE) -> int | None:
    """Value of a purely numeric power expression (``9``, ``3^2``, ``9^{9^9}``), or None past ``cap``.

    Evaluated from the top of the tower down with the cap checked before each power, so nothing large is
    ever computed. Anything other than digits, ``^`` and braces is not understood and returns None.
    """
    text = expression.strip()
    while text.startswith("{") and matching_close(text, 0) == len(text) - 1:
        text = text[1:-1].strip()
    caret = text.find("^")
    if caret < 0:
        return int(text) if text.isdigit() and len(text) <= 12 and int(text) <= cap else None
    base_text = text[:caret].strip()
    if not base_text.isdigit() or len(base_text) > 12:
        return None
    base = int(base_text)
    exponent = bounded_value(_exponent_text(text, caret), cap)
    if exponent is None:
        return None
    if base in (0, 1):
        return base if exponent > 0 else 1
    if exponent * (base.bit_length() - 1) > cap.bit_length():
        return None
    value = base**exponent
    return value if value <= cap else None


def _exponent_refusal(answer: str) -> str | None:
    start = 0
    while True:
        caret = answer.find("^", start)
        if caret < 0:
            return None
        start = caret + 1
        exponent = _exponent_text(answer, caret)
        if _LETTER.search(exponent):
            continue  # symbolic exponents (x^{n+1}, e^{i\pi}) stay unevaluated
        digits_only = exponent.replace(" ", "").lstrip("+-")
        if digits_only.isdigit():
            if int(digits_only[:12]) > MAX_EXPONENT_VALUE or len(digits_only) > 12:
                return f"an exponent larger than {MAX_EXPONENT_VALUE}"
            continue
        if "^" in exponent and bounded_value(exponent) is None:
            return "a numeric power tower"


def _operand_before(answer: str, bang: int) -> str:
    """The token a factorial ``!`` at ``bang`` applies to: digits, or a bracketed/braced group."""
    i = bang - 1
    while i >= 0 and answer[i] == " ":
        i -= 1
    if i < 0:
        return ""
    if answer[i].isdigit():
        j = i
        while j >= 0 and answer[j].isdigit():
            j -= 1
        return answer[j + 1 : i + 1]
    if answer[i] in ")}]":
        depth = 0
        j = i
        while j >= 0:
            if answer[j] in ")}]":
                depth += 1
            elif answer[j] in "({[":
                depth -= 1
                if depth == 0:
                    return answer[j : i + 1]
            j -= 1
        return answer[: i + 1]
    return answer[i]


def _factorial_refusal(answer: str) -> str | None:
    start = 0
    while True:
        bang = answer.find("!", start)
        if bang < 0:
            return None
        start = bang + 1
        if answer.startswith("!=", bang) or (bang > 0 and answer[bang - 1] == "\\"):
            continue
        operand = _operand_before(answer, bang)
        if _LETTER.search(operand.replace("\\frac", "")):
            continue  # n!, (n+1)! stay symbolic
        if operand.isdigit():
            if len(operand) > 6 or int(operand) > MAX_FACTORIAL_ARGUMENT:
                return f"a factorial of a number larger than {MAX_FACTORIAL_ARGUMENT}"
            continue
        inner = operand.strip("(){}[] ")
        if inner.isdigit() and len(inner) <= 6 and int(inner) <= MAX_FACTORIAL_ARGUMENT:
            continue
        if inner.isdigit() or any(ch in inner for ch in "^!") or len(inner) > 12:
            return "a factorial of a large or computed number"
