"""GSM8K, GSM8K-Platinum, MATH and MATH-500 as lists of raw records, from one place for every caller.

With `$ANTIDISTILL_DATA_DIR` set, `<dir>/<dataset>/<split>.jsonl` (the layout of the project's offline copy);
otherwise the Hugging Face hub. The lm-eval tasks and the benchmark suite both read through `load_records`, so they
score the same problems (one MATH source, GSM8K-Platinum without the questions it rejected).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .names import DATA_DIR_VARIABLE

# (dataset folder, split) -> (hub dataset, hub config, hub split)
HUB: dict[tuple[str, str], tuple[str, str | None, str]] = {
    ("gsm8k", "train"): ("openai/gsm8k", "main", "train"),
    ("gsm8k", "test"): ("openai/gsm8k", "main", "test"),
    ("gsm8k_platinum", "test"): ("madrylab/gsm8k-platinum", "main", "test"),
    ("math", "train"): ("DigitalLearningGmbH/MATH-lighteval", "default", "train"),
    ("math", "test"): ("DigitalLearningGmbH/MATH-lighteval", "default", "test"),
    ("math500", "test"): ("HuggingFaceH4/MATH-500", None, "test"),
}


def data_dir() -> Path | None:
    """The offline data folder, or None to read from the hub."""
    value = os.environ.get(DATA_DIR_VARIABLE)
    return Path(value).expanduser() if value else None


def offline_path(dataset: str, split: str) -> Path | None:
    root = data_dir()
    return None if root is None else root / dataset / f"{split}.jsonl"


def load_records(dataset: str, split: str) -> list[dict[str, Any]]:
    """Every record of one split, as the source stores it; one error naming the fix when it cannot be read."""
    if (dataset, split) not in HUB:
        known = ", ".join(f"{d}/{s}" for d, s in HUB)
        raise ValueError(f"unknown dataset split {dataset}/{split}: use one of {known}")
    path = offline_path(dataset, split)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(
                f"{DATA_DIR_VARIABLE}={data_dir()} is set but {path} does not exist: put the {dataset} {split} split "
                f"there as jsonl (layout <dir>/<dataset>/<split>.jsonl), or unset {DATA_DIR_VARIABLE} to use the hub.")
        from .io import read_jsonl

        return read_jsonl(path)
    name, config, hub_split = HUB[(dataset, split)]
    try:
        import datasets

        rows = [dict(row) for row in datasets.load_dataset(name, config, split=hub_split)]
    except Exception as error:
        raise RuntimeError(
            f"could not load {name} ({hub_split}) from the Hugging Face hub: {type(error).__name__}: {error}. "
            f"Without network access, set {DATA_DIR_VARIABLE} to a folder holding {dataset}/{split}.jsonl.") from error
    # GSM8K-Platinum marks the questions it dropped as "rejected"; they are not part of the benchmark.
    return [row for row in rows if row.get("cleaning_status") != "rejected"]
