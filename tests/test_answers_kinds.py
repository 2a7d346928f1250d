"""The ways models write answers that the checker once missed (issue 14), one group per kind.

Each case is written from a kind, not copied from a failing example: no box and no cue, several boxes, a
sentence after "Final Answer:", a later statement after an earlier box, decimal commas, labelled golds, list
forms, scaled equations, reordered products, and ratios or times that must not compare as divisions by zero.
"""

from __future__ import annotations

import pytest

from harness_plugin.answers import extract_answer, is_equivalent, reference_answer, score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer \\[ 9 \\]", "9"),
        ("Answer $ 9 $", "9"),
        ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
        ("We solve it. The matrix is $$\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}$$ and we are done.",
         "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}"),
        ("First $a = 2$, so the value is \\( 14 \\) in the end, as we said.", "14"),
        ("It costs $\\$5$ and $3$ more, so $8", "3"),  # a $ left open does not swallow the text
        ("no math at all", None),
    ],
)
def test_without_box_or_cue_the_last_math_span_is_the_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text, "math") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So $x = \\boxed{2}$ or $x = \\boxed{-3}$.", "2, -3"),
        ("(a) \\boxed{5}\n(b) \\boxed{7}", "5, 7"),
        ("The roots are \\boxed{1}, \\boxed{1} and \\boxed{4}.", "1, 4"),  # a repeated box is one root
        ("We first got \\boxed{3} but that was wrong.\n\nRedoing the sum carefully gives \\boxed{4}.", "4"),
    ],
)
def test_a_final_group_of_boxes_is_read_together(text: str, expected: str) -> None:
    assert extract_answer(text, "math") == expected


def test_several_boxes_in_a_gold_solution_are_all_the_answer() -> None:
    gold = "The first root is \\boxed{2}. After a long factorisation of the cubic, the other is \\boxed{5}."
    assert reference_answer(gold, "math") == "2, 5"
    assert score("x = \\boxed{5} or x = \\boxed{2}", gold, "math")
    assert not score("x = \\boxed{5}", gold, "math")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Final Answer: The largest $n$ is 34", "34"),
        ("Final Answer: the two solutions are $2$ and $3$", "2 and 3"),
        ("Final Answer: The answer is $\\frac{3}{4}$, as shown above", "\\frac{3}{4}"),
        ("Final Answer: $x = 5$", "x = 5"),
        ("Final Answer: She pays $\\$36$ for them, as computed", "\\$36"),
    ],
)
def test_a_sentence_after_a_final_answer_cue_gives_its_math(text: str, expected: str) -> None:
    assert extract_answer(text, "math") == expected


def test_a_later_final_answer_statement_beats_an_earlier_box() -> None:
    text = "A first try gives \\boxed{4}. Checking it again, the count was off by two. The final answer is $6$."
    assert extract_answer(text, "math") == "6"
    assert extract_answer("So \\boxed{5}. Redone: the final answer is $\\$36$.", "math") == "\\$36"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("The total is 1000,99 euros.", "1000.99"), ("It weighs 2,74 kg", "2.74"), ("She has 1,000 coins.", "1000"),
     ("#### 12,50", "12.5")],
)
def test_decimal_commas_in_prose(text: str, expected: str) -> None:
    assert extract_answer(text, "gsm8k") == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("1000,99", "1000.99", True),
        ("2,74", "2.74", True),
        ("1,000", "1000", True),  # thousands separator, not a decimal comma
        ("2,3", "2.3", False),  # one digit after the comma: a list of two numbers
        ("2,74", "2.75", False),
        ("20, 504", "504, 20", True),  # a list of two roots, not 504.20
        ("504,20", "20,504", False),
    ],
)
def test_decimal_commas_in_answers(prediction: str, reference: str, expected: bool) -> None:
    assert is_equivalent(prediction, reference) is expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("(3, 2)", "(p,q)=(3,2)", True),
        ("(2, 3)", "(p,q)=(3,2)", False),
        ("4, 5", "AB=4, CD=5", True),
        ("1", "|AB|=1", True),
        ("11:21", "V_1:V_2=11:21", True),
        ("1", "A:B=1", True),
        ("(x, y) = (5, 8) \\text{ and } (8, 5)", "(5,8),(8,5)", True),
        ("(x, y) = (5, 8)", "(5,8),(8,5)", False),
        ("x^2 = 4", "4", False),  # only a name may label a value
    ],
)
def test_labelled_values(prediction: str, reference: str, expected: bool) -> None:
    assert is_equivalent(prediction, reference) is expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("2, 2, 3", "2, 3", True),
        ("\\{1, 1, 4\\}", "\\{4, 1\\}", True),
        ("(1; 2)", "(1, 2)", True),
        ("(1; 2)", "(2, 1)", False),
        ("3; 5", "5, 3", True),
    ],
)
def test_list_forms(prediction: str, reference: str, expected: bool) -> None:
    assert is_equivalent(prediction, reference) is expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("2x + 2y = 4", "x + y = 2", True),
        ("-x - y = -2", "x + y = 2", True),
        ("x + y = 3", "x + y = 2", False),
        ("x + z = 2", "x + y = 2", False),
        ("ba + dc", "ab + cd", True),
        ("ba + dc", "ab + ce", False),
    ],
)
def test_scaled_equations_and_reordered_products(prediction: str, reference: str, expected: bool) -> None:
    assert is_equivalent(prediction, reference) is expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("1:00", "12:00", False),
        ("1:00", "2:00", False),
        ("12:00", "12:00", True),
        ("2:4", "1:2", True),
        ("2:3", "3:2", False),
        ("1:1", "1", True),
        ("3:2", "1.5", True),
        ("1:2:3", "2:4:6", True),
        ("1:0", "2:0", False),
    ],
)
def test_ratios_and_times_are_not_divisions(prediction: str, reference: str, expected: bool) -> None:
    assert is_equivalent(prediction, reference) is expected
