"""Scoring traces with the safe answer checker, raw and answer-forced (as the paper reports both)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness_plugin.answers import score


def accuracy(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def score_records(records: list[dict[str, Any]], dataset: str) -> dict[str, float]:
    """Adds `correct` (and `correct_af` where a forced answer exists) to each record; returns the accuracies."""
    for record in records:
        record["correct"] = bool(score(record["completion"], record["reference"], dataset))
        if "forced_completion" in record:
            record["correct_af"] = bool(score(record["forced_completion"], record["reference"], dataset))
    result = {"accuracy": accuracy([r["correct"] for r in records]), "n": len(records)}
    if records and all("correct_af" in r for r in records):
        result["accuracy_af"] = accuracy([r["correct_af"] for r in records])
    return result
