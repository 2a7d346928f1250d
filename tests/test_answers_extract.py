"""Extraction rules for GSM8K and MATH, answer forcing, and score()."""

from __future__ import annotations

import time

import pytest

from harness_plugin.answers import extract_answer, score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the number after the last ####, with calculator notes, currency, commas and trailing words
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("#### 5\nwait, no\n#### $1,234.50 dollars", "1234.5"),
        ("#### -7", "-7"),
        # else after "The answer is"
        ("First 3 eggs, then 4.\nThe answer is $1,200 dollars.", "1200"),
        ("So the final answer is: 0.50", "0.5"),
        # else the last \boxed{}
        ("Adding 2 and 3 gives \\boxed{\\$42} in total after 7 days", "42"),
        ("so \\boxed{18 \\text{ eggs}}", "18"),
        # else the last number in the text
        ("I think 3 and then 7 cookies.", "7"),
        ("It costs 2.5 dollars, so 3/4 of it", "3/4"),
        ("a loss of −12 dollars", "-12"),
        ("no digits at all", None),
        ("", None),
    ],
)
def test_gsm8k_extraction(text: str, expected: str | None) -> None:
    assert extract_answer(text, "gsm8k") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{\\frac{1}{\\sqrt{2}}} first.\n\nThen, in polar form, the point is \\boxed{\\left(3, \\frac{\\pi}{2}\\right)}.",
         "\\left(3, \\frac{\\pi}{2}\\right)"),
        ("nested \\boxed{\\frac{a^{2}}{\\{b\\}}} done", "\\frac{a^{2}}{\\{b\\}}"),
        ("\\fbox{7}", "7"),
        ("$\\boxed 5$ is it", "5"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("The final answer is 12.", "12"),
        ("Final Answer: x = 4", "x = 4"),
        ("no answer here", None),
        ("\\boxed{}", None),
    ],
)
def test_math_extraction(text: str, expected: str | None) -> None:
    assert extract_answer(text, "math") == expected


def test_math_prefers_box_over_final_answer_phrase() -> None:
    assert extract_answer("The final answer is 3. Actually \\boxed{4}", "math") == "4"


@pytest.mark.parametrize("dataset", ["gsm8k", "math"])
def test_answer_forcing_takes_the_forced_box(dataset: str) -> None:
    trace = "Let me think. Maybe \\boxed{3}? #### 3 The answer is 3"
    forced = trace + "\n\n**Final Answer**\n\\[\\boxed{"
    assert extract_answer(forced + "42}\n\\]", dataset) == "42"
    # the continuation rambles and boxes something else later: the forced box still wins
    assert extract_answer(forced + "42}\n\\]\nWait, maybe \\boxed{7}", dataset) == "42"
    # the continuation was cut off before the closing brace
    assert extract_answer(forced + "42", dataset) == "42"


def test_answer_forcing_keeps_latex_for_math() -> None:
    text = "trace\n\n**Final Answer**\n\\[\\boxed{\\frac{1}{2}}\\]"
    assert extract_answer(text, "math") == "\\frac{1}{2}"
    assert extract_answer("trace\n\n**Final Answer**\n\\[\\boxed{1,234}\\]", "gsm8k") == "1234"


def test_unknown_dataset_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="'gsm8k' or 'math'"):
        extract_answer("#### 1", "aime")
    assert extract_answer("#### 1", "GSM8K_platinum") == "1"
    assert extract_answer("\\boxed{1}", "math500") == "1"


@pytest.mark.parametrize(
    "text",
    [
        "1" * 100_000,
        "\\boxed{" * 50_000,
        "{" * 100_000 + "\\boxed{" + "}" * 100_000,
        "#### " + "9," * 50_000,
        "The answer is " * 10_000,
        "**Final Answer**" * 10_000 + "\\boxed{" + "a" * 50_000,
    ],
)
def test_extraction_is_fast_on_hostile_text(text: str) -> None:
    for dataset in ("gsm8k", "math"):
        start = time.perf_counter()
        extract_answer(text, dataset)
        assert time.perf_counter() - start < 1.0


def test_score_extracts_then_compares() -> None:
    assert score("so the total is\n#### 1,000", "1000", "gsm8k")
    assert not score("so the total is\n#### 999", "1000", "gsm8k")
    # a whole reference solution is accepted as the reference
    assert score("We get \\boxed{\\dfrac{1}{2}}.", "Thus $x = \\boxed{0.5}$.", "math")
    assert score("The answer is 18.", "Janet sells 9 eggs.\n#### 18", "gsm8k")
    assert not score("I don't know.", "5", "math")
