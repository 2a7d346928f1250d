"""Answer forcing (the paper's second accuracy), once for lm-eval and the suite.

After a trace, write the forcing string (the paper's "**Final Answer** \\[\\boxed{"; an open reasoning block is
closed first) and let the model finish the answer greedily within a token budget. Only the answer asked for is
kept: the continuation up to the brace that closes the box the forcing string opened. How the model continues
greedily is the caller's (HFLM's batching in lm-eval, `generate` sharded over processes in the suite).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

THINK_CLOSE = "</think>"


def think_close(tokenizer: Any) -> str:
    """What closes an open reasoning block for this tokenizer ("\\n</think>" where it has the token, else "")."""
    return f"\n{THINK_CLOSE}" if THINK_CLOSE in tokenizer.get_vocab() else ""


def forcing_suffix(trace: str, forcing: str, close_thinking: str = "") -> str:
    """The text written after `trace`: the reasoning block closed when the trace left it open, then `forcing`."""
    return (close_thinking if close_thinking and THINK_CLOSE not in trace else "") + forcing


def cut_at_box_close(continuation: str) -> str:
    """The forced continuation up to the brace that closes the box the forcing prompt opened (all of it if none).

    The model often rambles on after the box; only the boxed answer is what answer forcing asks for.
    """
    from .answers.latex import matching_close

    close = matching_close("{" + continuation, 0)
    return continuation if close is None else continuation[:close]


def force_answers(prompts: Sequence[str], traces: Sequence[str], budgets: Sequence[int],
                  continue_greedily: Callable[[list[str], int], list[str]], forcing: str,
                  close_thinking: str = "") -> list[str | None]:
    """Per trace: the forcing suffix and the model's kept answer after it (None where the budget is 0).

    `continue_greedily(texts, max_new_tokens)` returns each text's greedy continuation; it is called once per
    distinct budget, so every answer gets exactly its own budget.
    """
    suffixes = [forcing_suffix(trace, forcing, close_thinking) for trace in traces]
    forced: list[str | None] = [None] * len(traces)
    for budget in sorted({b for b in budgets if b > 0}):
        rows = [i for i, b in enumerate(budgets) if b == budget]
        continuations = continue_greedily([prompts[i] + traces[i] + suffixes[i] for i in rows], budget)
        for i, continuation in zip(rows, continuations):
            kept = cut_at_box_close(continuation) if forcing.endswith("{") else continuation
            forced[i] = suffixes[i] + kept
    return forced
