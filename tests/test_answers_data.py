"""Self-agreement on a sample of the shared GSM8K, MATH and MATH-500 data (skipped when the data is absent)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness_plugin.answers import extract_answer, is_equivalent, score

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE = 150

pytestmark = pytest.mark.skipif(
    not (DATA / "math500" / "test.jsonl").exists(), reason=f"shared data not found at {DATA}"
)


def _sample(relative: str) -> list[dict]:
    with (DATA / relative).open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return random.Random(0).sample(rows, min(SAMPLE, len(rows)))


def test_math500_gold_agrees_with_itself_and_its_solution() -> None:
    for row in _sample("math500/test.jsonl"):
        assert is_equivalent(row["answer"], row["answer"])
        assert score(row["solution"], row["answer"], "math"), (extract_answer(row["solution"], "math"), row["answer"])


def test_math_solution_answer_matches_its_boxed_gold() -> None:
    from benchmarks.answers import hendrycks_answer

    for row in _sample("math/test.jsonl"):
        gold = hendrycks_answer(row["solution"])
        assert gold is not None
        assert is_equivalent(gold, gold)
        assert score(row["solution"], gold, "math")


def test_gsm8k_gold_agrees_with_its_solution() -> None:
    for row in _sample("gsm8k/test.jsonl"):
        gold = row["answer"].split("####")[-1].strip()
        assert score(row["answer"], gold, "gsm8k")
        # the body without the #### line still ends on the gold number for most rows; the cue is stronger
        assert score(row["answer"].split("####")[0] + f"The answer is {gold}.", gold, "gsm8k")


def test_gold_answers_of_different_problems_do_not_match() -> None:
    rows = _sample("math500/test.jsonl")
    answers = [row["answer"] for row in rows]
    mismatched = 0
    for a, b in zip(answers, answers[1:]):
        if a.replace(" ", "") != b.replace(" ", "") and is_equivalent(a, b):
            mismatched += 1
    assert mismatched == 0
