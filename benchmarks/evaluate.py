"""Greedy accuracy of a causal LM on a list of problems, and plain batched greedy generation.

Used by the toy world's build (teacher, proxy and student accuracies) and by the benchmark suite (student and
teacher accuracy on the test split). Prompts are the problem text in the model's own chat template, so a
student with another tokenizer than the teacher is asked in its own format. Answers are scored with
`harness_plugin.answers.score` (the project's safe sympy checker).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.toy_world.vocab import format_prompt
from harness_plugin.progress import progress_enabled


def load_model_and_tokenizer(model_dir: str | Path, tokenizer: Any = None) -> tuple[Any, Any]:
    """Load a checkpoint (no remote code) and its tokenizer, left-padded for batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    elif isinstance(tokenizer, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    return model.eval(), tokenizer


@torch.no_grad()
def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int = 64,
    max_new_tokens: int = 160,
    desc: str = "generate",
) -> list[str]:
    """Greedy completions of `prompts` (exact model input text), decoded without special tokens.

    Prompts are batched by length to keep padding small, padded on the left, and returned in input order.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token (e.g. to its eos token)")
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, dynamic_ncols=True,
                      disable=not progress_enabled()):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            outputs[i] = text
    return outputs


def score_answer(text: str, reference: str, dataset: str = "gsm8k") -> bool:
    """True when the final answer in `text` is equivalent to `reference` (a final answer, not a solution)."""
    from harness_plugin.answers import score

    return bool(score(text, reference, dataset))


def evaluate_accuracy(
    model: Any,
    tokenizer: Any = None,
    problems: Sequence[dict] = (),
    dataset: str = "gsm8k",
    batch_size: int = 64,
    max_new_tokens: int = 160,
    desc: str = "evaluate",
) -> tuple[float, list[dict]]:
    """Greedy accuracy on `problems` ({"question", "final"} or GSM8K {"question", "answer"} records).

    `model` is a loaded model or a checkpoint directory; `tokenizer` a tokenizer, a directory, or None to
    load it from the model directory. Returns (accuracy, per-sample records with prompt, completion, correct).
    """
    if isinstance(model, (str, Path)):
        model, tokenizer = load_model_and_tokenizer(model, tokenizer)
    elif tokenizer is None or isinstance(tokenizer, (str, Path)):
        raise ValueError("pass the tokenizer (object or directory) along with a loaded model")
    if not problems:
        raise ValueError("no problems to evaluate on")
    prompts = [format_prompt(tokenizer, p["question"]) for p in problems]
    completions = generate_completions(model, tokenizer, prompts, batch_size, max_new_tokens, desc)
    records = []
    for problem, prompt, completion in zip(problems, prompts, completions):
        reference = problem.get("final") or problem["answer"].split("####")[-1].strip()
        records.append(
            {
                "question": problem["question"],
                "reference": reference,
                "prompt": prompt,
                "completion": completion,
                "correct": score_answer(completion, reference, dataset),
            }
        )
    accuracy = sum(r["correct"] for r in records) / len(records)
    return accuracy, records


ANSWER_FORCING = "\n#### "


def forced_accuracy(
    model: Any,
    tokenizer: Any,
    records: list[dict],
    prefix: str = ANSWER_FORCING,
    max_new_tokens: int = 6,
    batch_size: int = 64,
    dataset: str = "gsm8k",
) -> float:
    """Answer-forced accuracy (as the paper reports beside raw accuracy): after each completion of
    `evaluate_accuracy`, write `prefix` and let the model finish the answer greedily. Adds `forced_completion`
    and `correct_af` to each record."""
    prompts = [r["prompt"] + r["completion"] + prefix for r in records]
    continuations = generate_completions(model, tokenizer, prompts, batch_size, max_new_tokens, "answer forcing")
    for record, continuation in zip(records, continuations):
        record["forced_completion"] = record["completion"] + prefix + continuation
        record["correct_af"] = score_answer(record["forced_completion"], record["reference"], dataset)
    return sum(r["correct_af"] for r in records) / max(1, len(records))
