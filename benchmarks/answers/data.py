"""The gold answers the benchmark starts from: MATH-500, MATH test and GSM8K test, read from the offline data folder."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from harness_plugin.io import read_jsonl
from harness_plugin.names import DATA_DIR_VARIABLE


def default_data() -> str:
    """$ANTIDISTILL_DATA_DIR, else the offline copy beside a development checkout (../shared/data), else the variable's name.

    The checkout is found from this file (editable installs) or from the working folder (a wheel installed by tox,
    run from the checkout), so both development set-ups read the same folder.
    """
    if os.environ.get(DATA_DIR_VARIABLE):
        return os.environ[DATA_DIR_VARIABLE]
    for checkout in (Path(__file__).resolve().parents[2], Path.cwd().resolve()):
        beside_checkout = checkout.parent / "shared" / "data"
        if beside_checkout.is_dir():
            return str(beside_checkout)
    return f"${DATA_DIR_VARIABLE}"


@dataclass(frozen=True)
class Gold:
    source: str  # "math500" | "math" | "gsm8k"
    dataset: str  # "math" | "gsm8k" (extraction rules)
    index: int
    answer: str
    solution: str
    group: str  # subject, for picking hard cross pairs




def hendrycks_answer(solution: str) -> str | None:
    """The MATH reference extraction (Hendrycks et al.): last ``\\boxed``/``\\fbox``, braces counted naively.

    Deliberately independent of ``harness_plugin.answers`` so that "gold vs the solution's final answer" tests
    our extraction against the dataset's own convention.
    """
    index = solution.rfind("\\boxed")
    if index < 0:
        index = solution.rfind("\\fbox")
        if index < 0:
            return None
    if solution.startswith("\\boxed ", index):
        return solution[index + len("\\boxed ") :].split("$")[0].strip()
    depth = 0
    for i in range(index, len(solution)):
        if solution[i] == "{":
            depth += 1
        elif solution[i] == "}":
            depth -= 1
            if depth == 0:
                boxed = solution[index : i + 1]
                opening = boxed.find("{")
                return boxed[opening + 1 : -1]
    return None


def load_golds(data_dir: Path, limit: int | None, seed: int) -> list[Gold]:
    """MATH-500 (its ``answer`` field), MATH test (Hendrycks extraction) and GSM8K test (after ``####``)."""
    rng = random.Random(seed)
    sources: list[list[Gold]] = []
    rows = read_jsonl(data_dir / "math500" / "test.jsonl")
    sources.append(
        [Gold("math500", "math", i, r["answer"], r["solution"], r["subject"]) for i, r in enumerate(rows)]
    )
    rows = read_jsonl(data_dir / "math" / "test.jsonl")
    math_golds = []
    for i, row in enumerate(rows):
        answer = hendrycks_answer(row["solution"])
        if answer is not None and answer.strip():
            math_golds.append(Gold("math", "math", i, answer, row["solution"], row["type"]))
    sources.append(math_golds)
    rows = read_jsonl(data_dir / "gsm8k" / "test.jsonl")
    sources.append(
        [
            Gold("gsm8k", "gsm8k", i, r["answer"].split("####")[-1].strip(), r["answer"], "gsm8k")
            for i, r in enumerate(rows)
        ]
    )
    golds: list[Gold] = []
    for source in sources:
        if limit is not None and len(source) > limit:
            source = sorted(rng.sample(source, limit), key=lambda gold: gold.index)
        golds.extend(source)
    return golds


