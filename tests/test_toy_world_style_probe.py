"""The style probe: the entropy a perfect teacher has along its greedy path through the generator's styles."""

from __future__ import annotations

import math
from dataclasses import replace

from benchmarks.toy_world.presets import PRESETS
from benchmarks.toy_world.style_probe import greedy_path_entropies, oracle_share, word_tokens


def test_greedy_path_follows_the_most_frequent_token_and_measures_its_branching() -> None:
    solutions = [["a", "b", "."]] * 3 + [["a", "c", "."]] + [["d"]]
    path = greedy_path_entropies(solutions)
    assert [token for token, _ in path] == ["a", "b", "."]
    first = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    second = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(path[0][1], first) and math.isclose(path[1][1], second) and path[2][1] == 0.0


def test_word_tokens_keep_digits_single_and_spaces_on_words() -> None:
    assert word_tokens("It makes 12 toys.\n#### 12") == ["It", " makes", " 1", "2", " toys", ".", "\n", "####", " 1", "2"]


def test_plain_solutions_leave_a_perfect_teacher_no_choice_and_styles_do() -> None:
    plain = replace(PRESETS["toy"], solution_styles=False)
    assert oracle_share(plain, word_tokens, problems=6, samples=30)["share"] == 0.0
    styled = oracle_share(PRESETS["toy"], word_tokens, problems=6, samples=60)
    assert 0.0 < styled["share"] < 1.0
