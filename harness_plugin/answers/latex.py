"""String-level LaTeX handling: balanced groups, top-level splitting and answer normalisation.

Everything here is plain string work with linear-time scans and anchored regexes, so it is safe and fast on
hostile input of any length. It never interprets the text as code; the symbolic path (``symbolic.py``) only
ever sees strings that went through :func:`normalize` and the guards in ``guard.py``.
"""

from __future__ import annotations

import re

_OPENERS = "({["
_CLOSERS = ")}]"

# Commands that only change how an answer looks; removing them never changes its value.
_SIZING = re.compile(r"\\(?:left|right|middle|[bB]igg?[lrm]?)(?![a-zA-Z])\s*(\\?[.(){}\[\]|]|\\[lr](?:vert|angle|floor|ceil)|\\[{}])?")
_DISPLAY = re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![a-zA-Z])")
_SPACES = re.compile(r"\\(?:[,;:> ]|(?:quad|qquad|thinspace|medspace|thickspace|enspace)(?![a-zA-Z]))|~")
_NEG_SPACE = re.compile(r"\s*(?:\\!|\\negthinspace(?![a-zA-Z]))\s*")  # "1,\! 000": a number, not a list
_TEXT_CMDS = re.compile(r"\\(?:textbf|textit|textrm|textnormal|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mbox|hbox|text)\s*\{")
_FRAC_VARIANTS = re.compile(r"\\[dtc]frac(?![a-zA-Z])")
_TOKEN = r"(\\[a-zA-Z]+|[0-9a-zA-Z])"
_FRAC_TWO_TOKENS = re.compile(rf"\\frac\s*{_TOKEN}\s*{_TOKEN}")  # \frac12, \frac \pi4
_FRAC_TOKEN_GROUP = re.compile(rf"\\frac\s*{_TOKEN}\s*\{{")  # \frac1{2}
_FRAC_GROUP_TOKEN = re.compile(rf"\\frac\s*\{{([^{{}}]*)\}}\s*{_TOKEN}")  # \frac{\pi}4
_SQRT_TOKEN = re.compile(rf"\\sqrt\s*{_TOKEN}")  # \sqrt2, \sqrt \pi
_BINOM_VARIANTS = re.compile(r"\\[dt]binom(?![a-zA-Z])")
_DEGREE_COMMA = re.compile(r"(?:\^\s*\{?\s*\\(?:circ|degree)\s*\}?|°)\s*,")  # "45^\circ,135^\circ" is a list
_DEGREES = re.compile(r"\^\s*\{?\s*\\(?:circ|degree)\s*\}?|\\degree(?![a-zA-Z])|°|\\circ(?![a-zA-Z])")
_INFINITY = re.compile(r"∞|\\inf(?:ty)?(?![a-zA-Z])|\binfinity\b")
_PERCENT = re.compile(r"\\?%|\\text\{\s*percent\s*\}|\s\bpercent\b")
_DOLLAR = re.compile(r"\\\$|\$|\\(?:dollar|textdollar)(?![a-zA-Z])")
_AND_OR = re.compile(r"\s*,?\s*\\text\{\s*,?\s*(?:and|or)\s*\}\s*|\s*,?\s+(?:and|or)\s+")
_TRAILING_TEXT_UNIT = re.compile(r"\\text\{[^{}]*\}(?:\s*\^\s*\{?\s*[23]\s*\}?)?\s*$")
_MATH_WORDS = r"(?:pi|sqrt|sin|cos|tan|cot|sec|csc|log|ln|exp|and|or|infty)\b"
# Words are separated by mandatory whitespace, so the repetition cannot backtrack exponentially.
_TRAILING_WORD_UNIT = re.compile(
    rf"(?:\s+(?!{_MATH_WORDS})[a-zA-Z]{{2,}}\.?)+(?:\^\s*\{{?\s*[23]\s*\}}?)?\s*$"
)
_ENDS_WITH_COMMAND = re.compile(r"\\(?:pi|infty|circ|sqrt\{[^{}]*\})$")
_UNIT_WINDOW = 200  # units are short: only the tail of an answer is searched, which keeps this linear
_UNICODE = str.maketrans({"−": "-", "–": "-", "×": r"\times ", "·": r"\cdot ", "÷": r"\div ", "\u00a0": " "})
_WS = re.compile(r"\s+")
_ROW = "\x00"
_TEXT_LIST = re.compile(r"\\text\{([^{}]*,[^{}]*)\}")  # \text{C, F, H} is a list of three answers


def matching_close(text: str, open_index: int) -> int | None:
    """Index of the brace closing the one at ``open_index`` (``\\{`` and ``\\}`` are literal, not groups)."""
    depth = 0
    i = open_index
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _delimiter_at(text: str, i: int) -> tuple[str, int, int] | None:
    """Classify the delimiter starting at ``i``: (kind, +1 open / -1 close, length)."""
    char = text[i]
    if char in "([{":
        return char, 1, 1
    if char in ")]}":
        return char, -1, 1
    if char == "\\":
        for token, kind, sign in (
            ("\\{", "\\{", 1),
            ("\\}", "\\}", -1),
            ("\\langle", "<", 1),
            ("\\rangle", ">", -1),
            ("\\begin", "begin", 1),
            ("\\end", "end", -1),
        ):
            if text.startswith(token, i):
                return kind, sign, len(token)
        return "\\", 0, 2  # any other escaped character or command start: skip its first character
    return None


def max_depth(text: str) -> int:
    """Deepest nesting of any bracket kind; used to refuse inputs that would blow parser recursion."""
    depth = best = 0
    i = 0
    n = len(text)
    while i < n:
        found = _delimiter_at(text, i)
        if found is None:
            i += 1
            continue
        _, sign, length = found
        depth = max(depth + sign, 0)
        best = max(best, depth)
        i += length
    return best


def split_top_level(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` occurrences that sit outside every bracket pair and environment."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    sep_len = len(separator)
    while i < n:
        if depth == 0 and text.startswith(separator, i):
            # a command separator must not be the prefix of a longer command (\cup vs \cupdot)
            end = i + sep_len
            if not (separator[-1].isalpha() and end < n and text[end].isalpha()):
                parts.append(text[start:i])
                i = end
                start = i
                continue
        found = _delimiter_at(text, i)
        if found is None:
            i += 1
            continue
        _, sign, length = found
        depth = max(depth + sign, 0)
        i += length
    parts.append(text[start:])
    return parts


def outer_pair(text: str) -> tuple[str, str, str] | None:
    """If ``text`` is one bracketed group (``(…)``, ``[…)``, ``\\{…\\}``, ``\\langle…\\rangle``), return
    (open, inner, close). Intervals mix bracket kinds, so any opener may pair with any closer."""
    if not text:
        return None
    first = _delimiter_at(text, 0)
    if first is None or first[1] != 1 or first[0] in ("begin", "{"):
        return None
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        found = _delimiter_at(text, i)
        if found is None:
            i += 1
            continue
        kind, sign, length = found
        depth += sign
        if depth == 0 and sign == -1:
            if i + length != n:
                return None
            if kind in ("end", "}"):
                return None
            return first[0], text[first[2] : i], kind
        i += length
    return None


def strip_math_delimiters(text: str) -> str:
    """Remove one layer of ``$…$``, ``\\(…\\)``, ``\\[…\\]`` around an answer."""
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            return text[len(left) : len(text) - len(right)].strip()
    return text


def unwrap_command(text: str, commands: tuple[str, ...] = ("\\boxed", "\\fbox")) -> str:
    """``\\boxed{x}`` → ``x`` when the command wraps the whole string (repeatedly)."""
    changed = True
    while changed:
        changed = False
        for command in commands:
            if text.startswith(command):
                i = len(command)
                while i < len(text) and text[i].isspace():
                    i += 1
                if i < len(text) and text[i] == "{" and matching_close(text, i) == len(text) - 1:
                    text = text[i + 1 : -1].strip()
                    changed = True
    return text


def _brace_arguments(text: str) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\sqrt2`` → ``\\sqrt{2}``: TeX takes one token per missing brace."""
    if "\\frac" in text:
        text = _FRAC_TWO_TOKENS.sub(r"\\frac{\1}{\2}", text)
        text = _FRAC_TOKEN_GROUP.sub(r"\\frac{\1}{", text)
        text = _FRAC_GROUP_TOKEN.sub(r"\\frac{\1}{\2}", text)
    if "\\sqrt" in text:
        text = _SQRT_TOKEN.sub(r"\\sqrt{\1}", text)
    return text


def _keep_delimiter(match: re.Match[str]) -> str:
    """``\\left(`` → ``(``; the invisible ``\\left.`` disappears."""
    delimiter = match.group(1) or ""
    return "" if delimiter in (".", "\\.") else delimiter


def _unwrap_text_commands(text: str) -> str:
    """Normalise every text-like command (``\\mbox``, ``\\mathrm``, ``\\textbf``…) to ``\\text{``."""
    return _TEXT_CMDS.sub(r"\\text{", text)


def _tail_match(pattern: re.Pattern[str], text: str) -> int | None:
    """Start index of ``pattern`` matched within the last ``_UNIT_WINDOW`` characters, if any."""
    offset = max(len(text) - _UNIT_WINDOW, 0)
    match = pattern.search(text, offset)
    return match.start() if match else None


def _strip_units(text: str) -> str:
    """Drop trailing unit words (``5\\text{ cm}^2``, ``12 dollars``) but never the whole answer."""
    for _ in range(3):
        before = text
        start = _tail_match(_TRAILING_TEXT_UNIT, text)
        if start:
            rest = text[:start].rstrip()
            if rest and (rest[-1].isdigit() or rest[-1] in "})." or _ENDS_WITH_COMMAND.search(rest)):
                text = rest
        start = _tail_match(_TRAILING_WORD_UNIT, text)
        if start:
            rest = text[:start].rstrip()
            if rest and (rest[-1].isdigit() or rest[-1] in "})") and "\\text{" not in text[start:]:
                text = rest
        if text == before:
            break
    return text


def normalize(answer: str) -> str:
    """Canonical spelling of an extracted answer: same value, fewer ways to write it.

    Removes presentation (``$``, ``\\left``, spacing, ``\\displaystyle``), currency, degrees and trailing units,
    unifies ``\\dfrac``/``\\tfrac`` → ``\\frac``, ``and``/``or`` lists → commas, unicode operators → LaTeX, and
    collapses whitespace. Percent signs are kept (as ``\\%``) because ``50\\%`` may mean 50 or 0.5.
    """
    # A LaTeX row break "\\\\" must not be read as "\\" followed by a command ("\\ " is a space, "\\!" a
    # negative space): park it on a character that cannot occur in the input, restore it at the end.
    text = answer.replace(_ROW, "").translate(_UNICODE).strip().replace("\\\\", _ROW)
    text = _WS.sub(" ", text)  # single spaces from here on keep every later regex linear
    text = strip_math_delimiters(text)
    text = unwrap_command(text)
    text = strip_math_delimiters(text)
    text = _NEG_SPACE.sub("", text)
    text = text.replace("{,}", ",")
    text = _SIZING.sub(_keep_delimiter, text)
    text = _DISPLAY.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _FRAC_VARIANTS.sub(r"\\frac", text)
    text = _BINOM_VARIANTS.sub(r"\\binom", text)
    text = _brace_arguments(text)
    text = _unwrap_text_commands(text)
    text = _DEGREE_COMMA.sub(", ", text)
    text = _DEGREES.sub("", text)
    text = _DOLLAR.sub("", text)
    text = _PERCENT.sub(r"\\%", text)
    text = _INFINITY.sub(r"\\infty", text)
    text = _AND_OR.sub(",", text)
    text = _WS.sub(" ", text).strip()
    text = _strip_units(text)
    text = re.sub(r"\\text\{\s*\}", "", text)
    text = _TEXT_LIST.sub(lambda match: match.group(1), text)
    text = text.strip().rstrip(".").rstrip()
    if text.startswith(","):
        text = text[1:].strip()
    return text.replace(_ROW, "\\\\")


_TEXT_ONLY = re.compile(r"\\text\{([^{}]*)\}")
_WORDS = re.compile(r"[A-Za-z][A-Za-z '\-]*[A-Za-z]")


def text_key(answer: str) -> str | None:
    """A case- and spacing-insensitive key for word answers (``\\text{Tuesday}``, ``Evelyn``), else None.

    Plain letter strings shorter than four characters are left to the symbolic path: ``xy`` is a product.
    """
    match = _TEXT_ONLY.fullmatch(answer)
    if match:
        content = match.group(1).strip()
        if _WORDS.fullmatch(content) or (len(content) == 1 and content.isalpha()):
            return " ".join(content.lower().split())
        return None
    if _WORDS.fullmatch(answer) and len(answer) >= 4:
        return " ".join(answer.lower().split())
    return None


_CHOICE = re.compile(r"\(\s*([A-Za-z])\s*\)|([A-Z])")


def choice_key(answer: str) -> str | None:
    """Multiple-choice letter: ``\\text{(A)}``, ``(a)``, ``A`` → ``A`` (a bare lower-case letter is a variable)."""
    match = _TEXT_ONLY.fullmatch(answer)
    content = match.group(1).strip() if match else answer.strip()
    choice = _CHOICE.fullmatch(content)
    if not choice:
        return None
    return (choice.group(1) or choice.group(2)).upper()
