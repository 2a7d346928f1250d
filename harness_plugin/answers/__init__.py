r"""Safe answer checking for GSM8K and MATH: extraction, equivalence and scoring.

Every accuracy number in the project flows through these three functions::

    from harness_plugin.answers import extract_answer, is_equivalent, score

    extract_answer("... so she earns $18 a day.\n#### 18", "gsm8k")   # "18"
    is_equivalent(r"\dfrac{\sqrt{2}}{2}", r"\frac{1}{\sqrt2}")         # True
    score(model_text, r"\left( 3, \frac{\pi}{2} \right)", "math")     # extract, then compare

Safety: model text is never executed. Plain numbers are decided with ``fractions.Fraction``; everything
else is parsed by latex2sympy2_extended's ANTLR grammar inside a worker process that is killed after
``timeout`` seconds (default 1 s; waiting for a free worker included), which works from any thread. A comparison
cut off by the limit is ``Verdict.UNDECIDED`` (``judge``), which ``score`` counts as not correct. Oversized inputs (power towers, huge
factorials, deep nesting, very long strings) are refused before any evaluation.
"""

from __future__ import annotations

from harness_plugin.answers.compare import (
    DEFAULT_REL_TOL,
    DEFAULT_TIMEOUT_S,
    Verdict,
    clear_cache,
    is_equivalent,
    judge_equivalence,
)
from harness_plugin.answers.extract import canonical_dataset, extract_answer, reference_answer
from harness_plugin.answers.worker import shutdown


def judge(
    text: str,
    reference: str,
    dataset: str,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Verdict:
    """Extract the final answer of ``text`` and judge it against ``reference`` (three-valued, see ``Verdict``).

    ``reference`` may be the gold answer or a whole reference solution (GSM8K ``#### n``, MATH ``\\boxed{}``).
    A text without an extractable answer is DIFFERENT.
    """
    prediction = extract_answer(text, dataset)
    if prediction is None:
        return Verdict.DIFFERENT
    gold = reference_answer(reference, dataset) if isinstance(reference, str) else reference
    return judge_equivalence(prediction, gold, rel_tol=rel_tol, timeout=timeout)


def score(
    text: str,
    reference: str,
    dataset: str,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """``judge`` as a bool: only EQUIVALENT scores (an undecided comparison scores False; count it with ``judge``)."""
    return judge(text, reference, dataset, rel_tol=rel_tol, timeout=timeout) is Verdict.EQUIVALENT


def warm_up(wait: bool = True) -> None:
    """Start the symbolic workers now instead of on the first symbolic comparison (optional).

    ``wait=False`` returns at once and lets them load in the background (call it while a model generates).
    """
    from harness_plugin.answers.worker import get_pool

    get_pool().warm_up(wait)


__all__ = [
    "DEFAULT_REL_TOL",
    "DEFAULT_TIMEOUT_S",
    "Verdict",
    "canonical_dataset",
    "clear_cache",
    "extract_answer",
    "is_equivalent",
    "judge",
    "judge_equivalence",
    "reference_answer",
    "score",
    "shutdown",
    "warm_up",
]
