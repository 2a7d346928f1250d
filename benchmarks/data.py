"""The benchmark's problems: train / holdout / test splits as {"id", "question", "reference"} records.

Real datasets come from `$ANTIDISTILL_DATA_DIR/<dataset>/<split>.jsonl` when that variable is set (the layout of
the project's offline copy), else from the Hugging Face hub. Splits follow the paper: GSM8K train = first 70% of
the train file, holdout = the last 30%, test = GSM8K-Platinum; MATH train shuffled with seed 42, then 70/30.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from harness_plugin.names import DATA_DIR_VARIABLE
from harness_plugin.problems import data_dir, load_records, offline_path

from .config import BenchConfig, ConfigError

# dataset -> (train source, test source)
SOURCES = {
    "gsm8k": (("gsm8k", "train"), ("gsm8k_platinum", "test")),
    "math": (("math", "train"), ("math", "test")),
    "math500": (("math", "train"), ("math500", "test")),
}


def required_files(config: BenchConfig) -> list[Path]:
    """The offline files a run will read (empty when the data comes from the hub or the toy world)."""
    if data_dir() is None or config["dataset"] == "toy":
        return []
    return [path for folder, split in SOURCES[config["dataset"]] if (path := offline_path(folder, split))]


def check_data_available(config: BenchConfig) -> None:
    missing = [str(p) for p in required_files(config) if not p.is_file()]
    if missing:
        raise ConfigError(f"missing data file(s) {', '.join(missing)}: point {DATA_DIR_VARIABLE} at a folder with the "
                          "layout gsm8k/, gsm8k_platinum/, math/, math500/, or unset it to use the Hugging Face hub")


def _reference(record: dict[str, Any], dataset: str) -> str | None:
    from harness_plugin.answers import extract_answer

    if dataset == "gsm8k":
        return str(record["answer"]).rsplit("####", 1)[-1].strip().replace(",", "")
    if isinstance(record.get("answer"), str) and record["answer"].strip():
        return record["answer"].strip()  # MATH-500 carries the extracted answer
    return extract_answer(str(record["solution"]), "math")


def _normalise(records: list[dict[str, Any]], dataset: str, prefix: str) -> list[dict[str, Any]]:
    """{"id", "question", "reference"} records; problems without a gold answer (MATH has a few empty `\\boxed{}`)
    are left out, since no answer could ever be scored right on them."""
    family = "gsm8k" if dataset == "gsm8k" else "math"
    out = []
    for index, record in enumerate(records):
        reference = _reference(record, family)
        if reference:
            out.append({"id": str(record.get("unique_id", record.get("id", f"{prefix}-{index}"))),
                        "question": record.get("question", record.get("problem")), "reference": reference})
    return out


def load_splits(config: BenchConfig, toy_splits: dict[str, list[dict[str, Any]]] | None = None
                ) -> dict[str, list[dict[str, Any]]]:
    """train / holdout / test problem lists, truncated to the configured sizes."""
    dataset = config["dataset"]
    if dataset == "toy":
        if toy_splits is None:
            raise ValueError("the toy dataset needs the toy world's splits")
        splits = {name: [{"id": r.get("id", f"toy-{name}-{i}"), "question": r["question"],
                          "reference": str(r["final"])} for i, r in enumerate(toy_splits[name])]
                  for name in ("train", "holdout", "test")}
    else:
        (train_folder, train_split), (test_folder, test_split) = SOURCES[dataset]
        family = "gsm8k" if dataset == "gsm8k" else "math"
        pool = _normalise(load_records(train_folder, train_split), family, "train")
        if family == "math":
            random.Random(config["data"]["split_seed"]).shuffle(pool)
        cut = int(len(pool) * config["data"]["train_fraction"])
        splits = {"train": pool[:cut], "holdout": pool[cut:],
                  "test": _normalise(load_records(test_folder, test_split), family, "test")}
    sizes = {"train": config["data"]["n_train"], "holdout": config["data"]["n_holdout"],
             "test": config["data"]["n_test"]}
    return {name: records[: sizes[name]] if sizes[name] else records for name, records in splits.items()}
