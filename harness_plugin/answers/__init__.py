r"""Safe answer checking for GSM8K and MATH: extraction, equivalence and scoring.

Every accuracy number in the project flows through these three functions::

    from harness_plugin.answers import extract_answer, is_equivalent, score

    extract_answer("... so she earns $18 a day.\n#### 18", "gsm8k")   # "18"
    is_equivalent(r"\dfrac{\sqrt{2}}{2}", r"\frac{1}{\sqrt2}")         # True
    score(model_text, r"\left( 3, \frac{\pi}{2} \right)", "math")     # extract, then compare

Safety: model text is never executed. Plain numbers are decided with ``fractions.Fraction``; everything
else is parsed by latex2sympy2_extended's ANTLR grammar inside a worker process that is killed after
``timeout`` seconds (default 1 s), which works from any thread. Oversized inputs (power towers, huge
factorials, deep nesting, very long strings) are refused before any evaluation.
"""

from __future__ import annotations

from harness_plugin.answers.compare import (
    DEFAULT_REL_TOL,
    DEFAULT_TIMEOUT_S,
    clear_cache,
    is_equivalent,
)
from harness_plugin.answers.extract import canonical_dataset, extract_answer, reference_answer
from harness_plugin.answers.worker import shutdown


def score(
    text: str,
    reference: str,
    dataset: str,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """Extract the final answer of ``text`` and compare it with ``reference``.

    ``reference`` may be the gold answer or a whole reference solution (GSM8K ``#### n``, MATH ``\\boxed{}``).
    A text without an extractable answer scores False.
    """
    prediction = extract_answer(text, dataset)
    if prediction is None:
        return False
    gold = reference_answer(reference, dataset) if isinstance(reference, str) else reference
    return is_equivalent(prediction, gold, rel_tol=rel_tol, timeout=timeout)


def warm_up() -> None:
    """Start a symbolic worker now instead of on the first symbolic comparison (optional)."""
    from harness_plugin.answers.worker import get_pool

    get_pool().warm_up()


__all__ = [
    "DEFAULT_REL_TOL",
    "DEFAULT_TIMEOUT_S",
    "canonical_dataset",
    "clear_cache",
    "extract_answer",
    "is_equivalent",
    "reference_answer",
    "score",
    "shutdown",
    "warm_up",
]
