"""Mathematical equivalence, one parametrised block per case family (each with answers that must differ)."""

from __future__ import annotations

import pytest

from harness_plugin.answers import is_equivalent
from harness_plugin.answers.guard import bounded_value, refusal
from harness_plugin.answers.latex import normalize, split_top_level
from harness_plugin.answers.numeric import parse_number

EQUAL = {
    "numbers_units": [
        ("18", "18.00"),
        ("1,000", "1000"),
        ("1,\\!000", "1000"),
        ("\\$5", "5"),
        ("$5.00$", "5"),
        ("50\\%", "50"),
        ("50\\%", "0.5"),
        ("12%", "12"),
        ("5 cm", "5"),
        ("15\\mbox{ cm}^2", "15"),
        ("3\\text{ inches}", "3"),
        ("30^\\circ", "30"),
        ("30^{\\circ}", "30"),
        ("-4", "−4"),
    ],
    "fractions": [
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{3}{4}", "0.75"),
        ("\\tfrac{3}{4}", "3/4"),
        ("\\frac12", "0.5"),
        ("-\\frac{7}{2}", "-3.5"),
        ("\\frac{-7}{2}", "-3.5"),
        ("\\frac{6}{8}", "\\frac{3}{4}"),
        ("2\\frac{1}{2}", "2.5"),
    ],
    "radicals_powers_pi_scientific": [
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("\\frac{3}{\\sqrt{3}}", "\\sqrt3"),
        ("2^{10}", "1024"),
        ("\\pi", "3.14159265"),
        ("2\\pi", "\\pi + \\pi"),
        ("1.5 \\times 10^{3}", "1500"),
        ("1.5e3", "1500"),
        ("10^{-2}", "0.01"),
    ],
    "algebra": [
        ("2(x+1)", "2x+2"),
        ("(x-1)(x+1)", "x^2-1"),
        ("\\frac{x^2-1}{x-1}", "x+1"),
        ("x^5 - x^4 + x^3", "x^3 + x^5 - x^4"),
    ],
    "equations": [
        ("x=3", "3"),
        ("3", "x = 3"),
        ("y = 2x+1", "y=1+2x"),
        ("y=2x+1", "2x+1=y"),
        ("k = \\frac{1}{2}", "0.5"),
    ],
    "tuples_intervals_sets": [
        ("(1,2)", "(1, 2)"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("(1,2]", "(1, 2]"),
        ("(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)"),
        ("\\{1,2\\}", "\\{2,1\\}"),
        ("1, 2", "2,1"),
        ("-2 \\text{ and } 1", "1, -2"),
        ("2 \\pm \\sqrt{3}", "2-\\sqrt3, 2+\\sqrt{3}"),
        ("\\{5\\}", "5"),
        ("\\langle 1, 2 \\rangle", "(1,2)"),
    ],
    "matrices": [
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{bmatrix}1\\\\2\\end{bmatrix}"),
        ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}"),
        ("\\begin{pmatrix} 1/2 \\\\ 3 \\end{pmatrix}", "\\begin{pmatrix} 0.5 \\\\ 3 \\end{pmatrix}"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"),  # a column vector is the usual spelling of a vector
        ("\\begin{pmatrix} x & 1 \\\\ 0 & x^2 \\end{pmatrix}", "\\begin{bmatrix} x & 1 \\\\ 0 & x \\cdot x \\end{bmatrix}"),
    ],
    "complex": [
        ("3+4i", "4i+3"),
        ("(1+i)^2", "2i"),
        ("\\frac{1}{i}", "-i"),
    ],
    "text_and_choices": [
        ("\\text{Tuesday}", "Tuesday"),
        ("\\textbf{tuesday}", "\\text{Tuesday}"),
        ("\\text{(A)}", "A"),
        ("(b)", "\\text{(B)}"),
        ("\\text{C, F, H}", "C, H, F"),
    ],
    "float_tolerance": [
        ("1/3", "0.333333"),
        ("0.3333333", "\\frac{1}{3}"),
        ("\\sqrt{2}", "1.414214"),
    ],
}

DIFFERENT = {
    "numbers_units": [("18", "19"), ("1,000", "100"), ("5 cm", "6"), ("50\\%", "5")],
    "fractions": [("\\frac{1}{2}", "0.4"), ("\\frac12", "\\frac21"), ("-\\frac{7}{2}", "3.5")],
    "radicals_powers_pi_scientific": [("2\\sqrt{2}", "\\sqrt{6}"), ("\\pi", "3.14"), ("1.5 \\times 10^{3}", "150")],
    "algebra": [("2(x+1)", "2x+1"), ("x^2-1", "(x-1)^2"), ("x", "y")],
    "equations": [("x=3", "4"), ("y = 2x+1", "y=2x-1"), ("2x = 6", "6")],
    "tuples_intervals_sets": [
        ("(1,2)", "(2,1)"),
        ("(1,2)", "2,1"),
        ("[1,2)", "[1,2]"),
        ("(1,2)", "[1,2]"),
        ("\\{1,2\\}", "\\{1,3\\}"),
        ("1, 2", "1, 2, 3"),
        ("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty, 2] \\cup (3, \\infty)"),
        ("(3,1)", "(5,2)"),
    ],
    "matrices": [
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}"),
        ("\\begin{pmatrix}1 & 2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(2, 1)"),
        ("\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}"),
    ],
    "complex": [("3+4i", "3-4i"), ("i", "1")],
    "text_and_choices": [("\\text{Tuesday}", "Monday"), ("\\text{(A)}", "B"), ("\\text{odd}", "5")],
    "float_tolerance": [("1/3", "0.33"), ("70000", "70000.5"), ("\\sqrt{2}", "1.41")],
}


def _cases(table: dict[str, list[tuple[str, str]]]) -> list:
    return [pytest.param(a, b, id=f"{family}:{a}~{b}") for family, pairs in table.items() for a, b in pairs]


def test_every_family_has_positive_and_negative_cases() -> None:
    assert set(EQUAL) == set(DIFFERENT)


@pytest.mark.parametrize(("prediction", "reference"), _cases(EQUAL))
def test_equivalent(prediction: str, reference: str) -> None:
    assert is_equivalent(prediction, reference)
    assert is_equivalent(reference, prediction)


@pytest.mark.parametrize(("prediction", "reference"), _cases(DIFFERENT))
def test_not_equivalent(prediction: str, reference: str) -> None:
    assert not is_equivalent(prediction, reference)
    assert not is_equivalent(reference, prediction)


@pytest.mark.parametrize(("a", "b"), [("", ""), ("  ", "5"), ("5", ""), ("$$", "$$"), ("\\boxed{}", "\\boxed{}"), ("\\text{}", "")])
def test_empty_answers_never_match(a: str, b: str) -> None:
    assert not is_equivalent(a, b)


def test_non_strings_never_match() -> None:
    assert not is_equivalent(None, "1")  # type: ignore[arg-type]
    assert not is_equivalent(1, 1)  # type: ignore[arg-type]


def test_relative_tolerance_is_configurable() -> None:
    assert not is_equivalent("0.33", "\\frac{1}{3}")
    assert is_equivalent("0.33", "\\frac{1}{3}", rel_tol=0.02)
    assert not is_equivalent("0.3333333", "\\frac{1}{3}", rel_tol=0.0)
    # the tolerance is relative, and two terminating decimals must agree exactly
    assert is_equivalent("333333.3", "\\frac{1000000}{3}")
    assert not is_equivalent("1000000", "1000000.5", rel_tol=0.01)
    with pytest.raises(ValueError, match="rel_tol"):
        is_equivalent("1", "1", rel_tol=-1)


def test_normalize_removes_presentation_only() -> None:
    assert normalize("$\\left( 1 ,\\! 2 \\right)$") == "( 1 ,2 )"
    assert normalize("\\boxed{\\dfrac{1}{2}}") == "\\frac{1}{2}"
    assert normalize("5\\text{ cm}^2") == "5"
    assert normalize("\\text{Tuesday}") == "\\text{Tuesday}"
    assert normalize("1 \\text{ and } 2") == "1,2"
    assert normalize("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}") == "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"


def test_top_level_split_respects_brackets_and_environments() -> None:
    assert split_top_level("(1,2),[3,4),\\{5,6\\}", ",") == ["(1,2)", "[3,4)", "\\{5,6\\}"]
    assert split_top_level("\\begin{pmatrix}1,2\\end{pmatrix},3", ",") == ["\\begin{pmatrix}1,2\\end{pmatrix}", "3"]
    assert split_top_level("(0,1)\\cup(2,3)\\cupdot", "\\cup") == ["(0,1)", "(2,3)\\cupdot"]


def test_fast_path_parses_plain_numbers_exactly() -> None:
    assert parse_number("1,234.50").value == pytest.approx(1234.5)  # type: ignore[union-attr]
    assert parse_number("-\\frac{3}{4}").value == -0.75  # type: ignore[union-attr]
    assert parse_number("1.5\\times10^{3}").value == 1500  # type: ignore[union-attr]
    assert parse_number("1e999999999") is None  # would build a billion-digit integer
    assert parse_number("1" * 1000) is None
    assert parse_number("x+1") is None


def test_guards_refuse_blow_ups_and_keep_ordinary_answers() -> None:
    for hostile in ("9^{9^{9^9}}", "(10^{100000})!", "2^{1000000}", "1" * 2000, "{" * 40 + "1" + "}" * 40, "100000!"):
        assert refusal(hostile), hostile
    for fine in ("2^{3^2}", "x^{n+1}", "10!", "\\frac{1}{2004!}", "(n+1)!", "e^{i\\pi}", "\\frac{1}{2^{10}}", "10^{100}"):
        assert refusal(fine) is None, fine
    assert bounded_value("3^{2}") == 9
    assert bounded_value("9^{9^{9^9}}") is None
