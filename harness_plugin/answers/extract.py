"""Final-answer extraction from model text for GSM8K and MATH.

All scans are linear (``rfind``, brace matching, non-backtracking regexes), so a 10^5-character or
deliberately malformed generation costs milliseconds at most. Extraction never interprets the text.
"""

from __future__ import annotations

import re

from harness_plugin.answers.latex import matching_close, normalize, strip_math_delimiters
from harness_plugin.answers.numeric import DECIMAL_COMMA, parse_number

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
# A decimal comma (2,74 or 1000,99: exactly two digits after it, no digit or comma next) reads as a point;
# 1,000 stays a thousands separator.
_TEXT_NUMBER = re.compile(
    r"(?<![\w.])(-)?\s?\\?\$?\s?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+,\d{2}(?![\d,])|\d+(?:\.\d+)?|\.\d+)"
    r"(?:/(\d+)(?![\d.]))?"
)
_ANSWER_IS = re.compile(r"answer\s+is\b|answer\s*:", re.IGNORECASE)
_FINAL_ANSWER_IS = re.compile(r"final\s+answer\s+is\b", re.IGNORECASE)
_FINAL_ANSWER_COLON = re.compile(r"final\s+answer\s*:", re.IGNORECASE)
_FORCING_MARKER = re.compile(r"\*\*\s*final\s+answer\s*:?\s*\*\*", re.IGNORECASE)
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_SEGMENT = 300  # how far after a cue ("The answer is") the number may appear
_BOX_GAP = 40  # at most this much text between two boxes of one answer ("or x =", "(b)")
_MAX_BOXES = 12  # boxes read together as one answer (as many as an unordered list may hold)


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
    digits = match.group(2)
    digits = digits.replace(",", ".") if DECIMAL_COMMA.fullmatch(digits) else digits.replace(",", "")
    sign, denominator = match.group(1), match.group(3)
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
        closing = re.compile(r"(?<!\\)" + re.escape(delimiter)).search(rest, len(delimiter))  # not an escaped \$
        close = closing.start() if closing else -1
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
    line = line.strip().rstrip(".")
    if _is_prose(line):
        line = _math_in_sentence(line)
    line = strip_math_delimiters(line.strip()).strip()
    return line or None


_PROSE_WORD = re.compile(r"(?<![\\\w])[A-Za-z]{2,}\b")
_VERB = re.compile(r"\s(?:is|are|equals|was|be)\s+", re.IGNORECASE)


def _is_prose(line: str) -> bool:
    """A sentence rather than a formula: two or more words outside ``$…$`` and ``\\text{}``."""
    outside = re.sub(r"\$[^$]*\$|\\text\{[^{}]*\}", " ", line)
    return len(_PROSE_WORD.findall(outside)) >= 2


def _math_in_sentence(line: str) -> str:
    """The answer in a sentence after a final-answer cue (``The largest $n$ is 34``): what follows the last
    "is"/"are"/"equals", else the last ``$…$`` span, else the sentence itself."""
    verb = _last_match(_VERB, line)
    rest = line[verb.end() :].strip() if verb is not None else ""
    if rest and not _is_prose(rest):
        return " ".join(rest.replace("$", " ").split())
    spans = [content.strip() for _, content in dollar_spans(rest or line) if content.strip()]
    return ", ".join(spans) if spans else (rest or line)


def _box_span(text: str, position: int) -> tuple[int, str] | None:
    """(end, content) of the box at ``position``: ``end`` is just past its closing brace (or the text's end)."""
    content = _box_content(text, position)
    if not content:
        return None
    brace = text.find("{", position, position + 16)
    close = matching_close(text, brace) if brace >= 0 else None
    return (close + 1 if close is not None else len(text)), content


def boxed_answers(text: str, everything: bool = False) -> list[str]:
    """The final group of boxes: the last box and the boxes just before it with only a few words between them
    (``x = \\boxed{2} or x = \\boxed{3}``; ``(a) \\boxed{5} (b) \\boxed{7}``), in order, repeats dropped.

    ``everything`` takes every box of the text (a reference solution boxes only its answers). An earlier box
    far before the last one is working, not part of the answer. At most ``_MAX_BOXES`` boxes are read, from the
    end, and a box that encloses the next one ends the group, which keeps hostile texts linear.
    """
    group: list[tuple[int, int, str]] = []
    for position in reversed(_command_positions(text, _BOX_COMMANDS)):
        span = _box_span(text, position)
        if span is None:
            continue
        end, content = span
        if group:
            between = text[end : group[0][0]]
            if end > group[0][0] or (not everything and (len(between) > _BOX_GAP or "\n\n" in between)):
                break
        group.insert(0, (position, end, content))
        if len(group) == _MAX_BOXES:
            break
    contents: list[str] = []
    for _, _, content in group:
        if content not in contents:
            contents.append(content)
    return contents


def joined_boxes(text: str, everything: bool = False) -> str | None:
    """``boxed_answers`` as one answer: the only box, or the boxes as a comma-separated list."""
    contents = boxed_answers(text, everything)
    if not contents:
        return None
    return contents[0] if len(contents) == 1 else ", ".join(contents)


_DOLLARS = re.compile(r"(?<!\\)\$\$?")


def dollar_spans(text: str) -> list[tuple[int, str]]:
    """(end, content) of every closed ``$…$`` / ``$$…$$`` pair, in order; an escaped ``\\$`` is text, and a
    ``$`` left open pairs with nothing."""
    pairs: list[tuple[int, str]] = []
    opened: tuple[int, str] | None = None
    for match in _DOLLARS.finditer(text):
        if opened is not None and opened[1] == match.group(0):
            pairs.append((match.start(), text[opened[0] + len(opened[1]) : match.start()]))
            opened = None
        else:
            opened = (match.start(), match.group(0))
    return pairs


def last_math_span(text: str) -> str | None:
    """Content of the last closed ``$…$``, ``$$…$$``, ``\\(…\\)`` or ``\\[…\\]``: math-verify's fallback when a
    text has neither a box nor a final-answer cue (``Answer \\[ 9 \\]``, ``Therefore $x \\geq 5$ is ...``).
    A ``$`` left open does not swallow what follows: only closed pairs count."""
    spans: list[tuple[int, str]] = []
    for left, right in (("\\[", "\\]"), ("\\(", "\\)")):
        end = text.rfind(right)
        start = text.rfind(left, 0, end) if end > 0 else -1
        if start >= 0:
            spans.append((end, text[start + len(left) : end]))
    spans += dollar_spans(text)[-1:]
    spans = [(end, content.strip()) for end, content in spans if content.strip()]
    return max(spans)[1] if spans else None


def _extract_math(text: str) -> str | None:
    forced = forced_answer(text)
    if forced is not None:
        return forced or None
    cues = [cue for cue in (_last_match(_FINAL_ANSWER_IS, text), _last_match(_FINAL_ANSWER_COLON, text)) if cue]
    cue = max(cues, key=lambda match: match.end()) if cues else None
    box_positions = _command_positions(text, _BOX_COMMANDS)
    if cue is not None and (not box_positions or cue.start() > box_positions[-1]):
        # A later "The final answer is ..." wins over an earlier box (the box was working, or a first try).
        after = _after_cue(text, cue.end())
        if after is not None:
            return after
    boxed = joined_boxes(text)
    if boxed is not None:
        return boxed or None
    if cue is not None:
        return _after_cue(text, cue.end())
    return last_math_span(text)


def extract_answer(text: str, dataset: str) -> str | None:
    """The final answer written in ``text`` for ``dataset`` (``"gsm8k"`` or ``"math"``), or None.

    GSM8K: the number after the last ``####``; else after "The answer is"; else the last ``\\boxed{}``; else the
    last number (commas, currency and trailing words are dropped, ``<<a*b=c>>`` calculator notes ignored).
    MATH: a "The final answer is" / "Final Answer:" written after the last box (the math in it, when it is a
    sentence); else the last ``\\boxed{…}``/``\\fbox{…}`` (balanced, nested braces) with the boxes just before
    it, read together as a list (one per part or root); else the text after such a cue; else the last math span
    (``$…$``, ``\\[…\\]``). For both, an answer forced after ``**Final Answer**`` takes precedence.
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
        return joined_boxes(reference, everything=True) or reference  # a gold with one box per part or root
    return reference


__all__ = [
    "boxed_answers",
    "canonical_dataset",
    "extract_answer",
    "forced_answer",
    "joined_boxes",
    "last_boxed",
    "last_math_span",
    "reference_answer",
]
