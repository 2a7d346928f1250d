"""Answer forcing's text: what is written after a trace, which continuation is kept, and each answer's budget."""

from __future__ import annotations

from harness_plugin.answer_forcing import force_answers, forcing_suffix
from harness_plugin.prompts import ANSWER_FORCING_PROMPT


def test_each_answer_gets_its_own_budget_and_only_the_box_it_was_asked_for():
    calls: list[tuple[list[str], int]] = []

    def continue_greedily(texts: list[str], max_new_tokens: int) -> list[str]:
        calls.append((texts, max_new_tokens))
        return [f"{len(text)}{'x' * max_new_tokens}}}\\] and more" for text in texts]

    prompts, traces = ["P1 ", "P2 ", "P3 "], ["a", "bb", "ccc"]
    forced = force_answers(prompts, traces, [4, 0, 2], continue_greedily, ANSWER_FORCING_PROMPT)
    assert sorted(budget for _, budget in calls) == [2, 4]  # one call per distinct budget, none for 0
    assert forced[1] is None
    for i, budget in ((0, 4), (2, 2)):
        context = prompts[i] + traces[i] + ANSWER_FORCING_PROMPT
        assert forced[i] == ANSWER_FORCING_PROMPT + f"{len(context)}{'x' * budget}}}"  # cut after the box's brace


def test_a_forcing_string_without_a_box_keeps_the_whole_continuation():
    forced = force_answers(["Q "], ["7 + 5 = 12"], [3], lambda texts, n: [" 12\nmore"] * len(texts), "\n#### ")
    assert forced == ["\n####  12\nmore"]


def test_an_open_reasoning_block_is_closed_before_the_forcing_string():
    assert forcing_suffix("<think>so 12", "F", "\n</think>") == "\n</think>F"
    assert forcing_suffix("<think>so</think> 12", "F", "\n</think>") == "F"
    assert forcing_suffix("so 12", "F", "") == "F"
