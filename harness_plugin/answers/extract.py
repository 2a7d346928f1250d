"""Final-answer extraction from model text for GSM8K and MATH.

All scans are linear (``rfind``, brace matching, non-backtracking regexes), so a 10^5-character or
deliberately malformed generation costs milliseconds at most. Extraction never interprets the text.
"""

from __future__ import annotations

import re

from harness_plugin.answers.latex import matching_close, normalize, strip_math_delimiters
from harness_plugin.answers.numeric import parse_number

GSM8K = "gsm8k"
MATH = "math"
_DATASET_ALIASES = {
    "gsm8k": GSM8K,
    "gsm8k_platinum": GSM8K,
    "gsm8k-platinum": GSM8K,
    "math": MATH,
    "math500": MATH,
    "math-500": MATH,
    "math_500": MATH,
    "hendrycks_math": MATH,
    "minerva_math": MATH,
}

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_UNICODE_MINUS = str.maketrans({"−": "-", "–": "-"})
# A number in prose: optional sign and currency, thousands separators, decimals, an optional /denominator.
_TEXT_NUMBER = re.compile(
    r"(?<![\w.])(-)?\s?\\?\$?\s?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:/(\d+)(?![\d.]))?"
)
_ANSWER_IS = re.compile(r"answer\s+is\b|answer\s*:", re.IGNORECASE)
_FINAL_ANSWER_IS = re.compile(r"final\s+answer\s+is\b", re.IGNORECASE)
_FINAL_ANSWER_COLON = re.compile(r"final\s+answer\s*:", re.IGNORECASE)
_FORCING_MARKER = re.compile(r"\*\*\s*final\s+answer\s*:?\s*\*\*", re.IGNORECASE)
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_SEGMENT = 300  # how far after a cue ("The answer is") the number may appear


def canonical_dataset(dataset: str) -> str:
    """``gsm8k`` or ``math`` for any accepted spelling; one clear error otherwise."""
    key = str(dataset).strip().lower()
    if key not in _DATASET_ALIASES:
        raise ValueError(f"unknown dataset {dataset!r}: use 'gsm8k' or 'math' (aliases: {sorted(_DATASET_ALIASES)})")
    return _DATASET_ALIASES[key]


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last


def _canonical_number(match: re.Match[str]) -> str:
    sign, digits, denominator = match.group(1), match.group(2).replace(",", ""), match.group(3)
    if digits.startswith("."):
        digits = "0" + digits
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".") or "0"
    number = f"{digits}/{denominator}" if denominator else digits
    return f"-{number}" if sign and number.strip("0./") else number


def first_number(text: str) -> str | None:
    match = _TEXT_NUMBER.search(text.translate(_UNICODE_MINUS))
    return _canonical_number(match) if match else None


def last_number(text: str) -> str | None:
    match = _last_match(_TEXT_NUMBER, text.translate(_UNICODE_MINUS))
    return _canonical_number(match) if match else None


def _command_positions(text: str, commands: tuple[str, ...], start: int = 0, end: int | None = None) -> list[int]:
    """Every position where one of ``commands`` begins, in order (linear: one ``find`` loop per command)."""
    end = len(text) if end is None else end
    positions = []
    for command in commands:
        i = text.find(command, start, end)
        while i >= 0:
            after = i + len(command)
            if after >= len(text) or not text[after].isalpha():
                positions.append(i)
            i = text.find(command, after, end)
    return sorted(positions)


def _box_content(text: str, position: int) -> str | None:
    """Content of the box command at ``position``: ``{…}`` (to the end if unclosed) or ``\\boxed 5``."""
    i = position + 1
    while i < len(text) and text[i].isalpha():
        i += 1
    command_end = i
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] == "{":
        close = matching_close(text, i)
        if close is not None:
            return text[i + 1 : close].strip()
        return _truncated(text[i + 1 :])
    if i > command_end and i < len(text):
        token = re.match(r"[^\s$]+", text[i:])
        return token.group(0).rstrip(".") if token else None
    return None


def _truncated(content: str) -> str:
    """A box the generation never closed: keep what was written, minus closing math delimiters."""
    content = content.strip()
    for tail in ("\\]", "$$", "$", "\\)"):
        if content.endswith(tail):
            content = content[: -len(tail)].rstrip()
    return content


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` / ``\\fbox{…}`` with balanced (nested) braces."""
    for position in reversed(_command_positions(text, _BOX_COMMANDS)):
        content = _box_content(text, position)
        if content is not None:
            return content
    return None


def forced_answer(text: str) -> str | None:
    """Answer forcing: a trace followed by ``**Final Answer**`` and ``\\[\\boxed{`` plus its continuation.

    The first box after the last marker is the forced answer, even if the continuation rambles on and boxes
    something else later. Without a box, the first non-empty line after the marker is used.
    """
    marker = _last_match(_FORCING_MARKER, text)
    if marker is None:
        return None
    positions = _command_positions(text, _BOX_COMMANDS, start=marker.end())
    for position in positions:
        content = _box_content(text, position)
        if content is not None:
            return content
    for line in text[marker.end() :].splitlines():
        line = strip_math_delimiters(line.strip()).strip()
        if line and line not in ("\\[", "\\]", "$$"):
            return line
    return None


def _gsm8k_value(content: str) -> str | None:
    """A GSM8K answer from a box or forced answer: the value if it is one number, else its first number."""
    normalized = normalize(content)
    number = parse_number(normalized)
    if number is not None:
        if number.value is not None and number.value.denominator == 1 and not number.percent:
            return str(number.value.numerator)
        return normalized.replace(",", "").replace(" ", "")
    return first_number(content)


def _extract_gsm8k(text: str) -> str | None:
    forced = forced_answer(text)
    if forced is not None:
        return _gsm8k_value(forced)
    text = _CALCULATOR.sub("", text)
    hashes = text.rfind("####")
    if hashes >= 0:
        line = text[hashes + 4 :].lstrip().split("\n", 1)[0]
        number = first_number(line)
        if number is not None:
            return number
    cue = _last_match(_ANSWER_IS, text)
    if cue is not None:
        number = first_number(text[cue.end() : cue.end() + _SEGMENT])
        if number is not None:
            return number
    boxed = last_boxed(text)
    if boxed is not None:
        value = _gsm8k_value(boxed)
        if value is not None:
            return value
    return last_number(text)


def _after_cue(text: str, start: int) -> str | None:
    """The answer written after "The final answer is" / "Final Answer:": a ``$…$`` span or the sentence."""
    rest = text[start : start + 4 * _SEGMENT].lstrip(" \t:")
    if rest.startswith("$"):
        delimiter = "$$" if rest.startswith("$$") else "$"
        close = rest.find(delimiter, len(delimiter))
        if close > 0:
            return rest[len(delimiter) : close].strip() or None
    if rest.startswith(("\\[", "\\(")):
        close = rest.find("\\]" if rest.startswith("\\[") else "\\)", 2)
        if close > 0:
            return rest[2:close].strip() or None
    line = rest.split("\n", 1)[0]
    hope = line.find(". I hope")
    if hope >= 0:
        line = line[:hope]
    line = strip_math_delimiters(line.strip().rstrip(".")).strip()
    return line or None


def _extract_math(text: str) -> str | None:
    forced = forced_answer(text)
    if forced is not None:
        return forced or None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed or None
    cue = _last_match(_FINAL_ANSWER_IS, text)
    if cue is not None:
        return _after_cue(text, cue.end())
    cue = _last_match(_FINAL_ANSWER_COLON, text)
    if cue is not None:
        return _after_cue(text, cue.end())
    return None


def extract_answer(text: str, dataset: str) -> str | None:
    """The final answer written in ``text`` for ``dataset`` (``"gsm8k"`` or ``"math"``), or None.

    GSM8K: the number after the last ``####``; else after "The answer is"; else the last ``\\boxed{}``; else the
    last number (commas, currency and trailing words are dropped, ``<<a*b=c>>`` calculator notes ignored).
    MATH: the content of the last ``\\boxed{…}``/``\\fbox{…}`` (balanced, nested braces); else the text after
    "The final answer is"; else after "Final Answer:". For both, an answer forced after ``**Final Answer**``
    takes precedence.
    """
    kind = canonical_dataset(dataset)
    if not isinstance(text, str) or not text.strip():
        return None
    if kind == GSM8K:
        return _extract_gsm8k(text)
    return _extract_math(text)


def reference_answer(reference: str, dataset: str) -> str:
    """Accept either a gold answer or a full reference solution (GSM8K ``#### n``, MATH ``\\boxed{}``)."""
    kind = canonical_dataset(dataset)
    if kind == GSM8K and "####" in reference:
        return extract_answer(reference, kind) or reference
    if kind == MATH and ("\\boxed" in reference or "\\fbox" in reference):
        return last_boxed(reference) or reference
    return reference


__all__ = ["extract_answer", "reference_answer", "last_boxed", "forced_answer", "canonical_dataset"]
