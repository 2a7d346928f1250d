"""The two checkers side by side (ours and math-verify), run over pairs into per-set tallies."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.answers.pairs import Pair


@dataclass
class Tally:
    pairs: int = 0
    correct: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)




# ------------------------------------------------------------------------------------------------ checkers

WHOLE_TEXT_KINDS = ("solution", "styled")  # the prediction is a whole text: extract, then compare


def ours(cold: bool = True) -> Callable[[Pair], bool]:
    from harness_plugin.answers import clear_cache, is_equivalent, score

    def check(pair: Pair) -> bool:
        if cold:
            clear_cache()  # time a real decision, not a memo lookup
        if pair.kind in WHOLE_TEXT_KINDS:
            return score(pair.prediction, pair.reference, pair.dataset)
        return is_equivalent(pair.prediction, pair.reference)

    return check


def math_verify() -> Callable[[Pair], bool]:
    """math-verify as documented: gold parsed from ``$…$``, predictions with its default extraction."""
    import logging

    from math_verify import LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    def check(pair: Pair) -> bool:
        gold = parse(f"${pair.reference}$", extraction_config=[LatexExtractionConfig()])
        if pair.kind in WHOLE_TEXT_KINDS:
            prediction = parse(pair.prediction)
        else:
            prediction = parse(f"${pair.prediction}$", extraction_config=[LatexExtractionConfig()])
        return bool(verify(gold, prediction))

    return check


def run_checker(name: str, check: Callable[[Pair], bool], pairs: list[Pair], examples: int) -> dict[str, Tally]:
    from tqdm import tqdm

    tallies: dict[str, Tally] = defaultdict(Tally)
    for pair in tqdm(pairs, desc=name, unit="pair", mininterval=2.0, file=sys.stderr):
        start = time.perf_counter()
        try:
            verdict = bool(check(pair))
        except Exception:
            verdict = False
        elapsed = time.perf_counter() - start
        family = f"{pair.kind}:{pair.family}" if pair.kind in ("rewrite", "styled") else None
        for key in (pair.kind, f"{pair.kind}/{pair.source}", family):
            if key is None:
                continue
            tally = tallies[key]
            tally.pairs += 1
            tally.latencies.append(elapsed)
            if verdict == pair.expected:
                tally.correct += 1
                continue
            if verdict:
                tally.false_positives += 1
            else:
                tally.false_negatives += 1
            if len(tally.failures) < examples and ":" not in key and "/" not in key:
                shown = pair.prediction if pair.kind != "solution" else "…" + pair.prediction[-160:]
                tally.failures.append(
                    {"source": pair.source, "family": pair.family, "prediction": shown, "reference": pair.reference}
                )
    return tallies


