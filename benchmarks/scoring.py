"""Scoring traces with the safe answer checker, raw and answer-forced (as the paper reports both)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness_plugin.answers import Verdict, judge


def accuracy(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def mean_teacher_logprob(records: list[dict[str, Any]]) -> float:
    """The teacher's mean log-probability per generated token over all traces (how far sampling strayed)."""
    total = sum(sum(r["teacher_logprobs"]) for r in records)
    count = sum(len(r["teacher_logprobs"]) for r in records)
    return total / count if count else 0.0


def score_records(records: list[dict[str, Any]], dataset: str) -> dict[str, float]:
    """Adds `correct` (and `correct_af` where a forced answer exists) to each record; returns the accuracies.

    A comparison the checker could not finish in time scores as not correct and is flagged (`undecided` on the
    record), and `undecided` in the result counts the records with one, so a busy machine cannot hide in the
    accuracy.
    """
    undecided = 0
    for record in records:
        verdicts = [judge(record["completion"], record["reference"], dataset)]
        record["correct"] = verdicts[0] is Verdict.EQUIVALENT
        if "forced_completion" in record:
            verdicts.append(judge(record["forced_completion"], record["reference"], dataset))
            record["correct_af"] = verdicts[1] is Verdict.EQUIVALENT
        if Verdict.UNDECIDED in verdicts:
            record["undecided"] = True
            undecided += 1
    result = {"accuracy": accuracy([r["correct"] for r in records]), "n": len(records), "undecided": undecided}
    if records and all("correct_af" in r for r in records):
        result["accuracy_af"] = accuracy([r["correct_af"] for r in records])
    return result
