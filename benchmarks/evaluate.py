"""Greedy accuracy of a causal LM on a list of problems, raw and answer-forced.

Used by the toy world's build (teacher, proxy and student accuracies) and its probes; the benchmark suite
evaluates through `benchmarks.workbench`, sharded over processes. Prompts are the problem text in the model's own chat template, so a
student with another tokenizer than the teacher is asked in its own format. Answers are scored with
`harness_plugin.answers.score` (the project's safe sympy checker).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness_plugin.progress import progress_enabled
from harness_plugin.prompts import format_prompt


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int = 64,
    max_new_tokens: int = 160,
) -> list[str]:
    """Greedy completions of `prompts` (exact model input text), decoded without special tokens.

    `harness_plugin.generate` on the prompts sorted by length (batches of similar length pad little), returned in
    input order.
    """
    from harness_plugin import generate

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    traces = generate(model, tokenizer, [prompts[i] for i in order], sampler="temperature", tau=0.0,
                      max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress_enabled())
    outputs: list[str] = [""] * len(prompts)
    for i, trace in zip(order, traces):
        outputs[i] = trace.completion
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
) -> tuple[float, list[dict]]:
    """Greedy accuracy on `problems` ({"question", "final"} or GSM8K {"question", "answer"} records).

    `model` is a loaded model or a checkpoint directory; `tokenizer` a tokenizer, a directory, or None to
    load it from the model directory. Returns (accuracy, per-sample records with prompt, completion, correct).
    """
    if isinstance(model, (str, Path)):
        from harness_plugin.loading import load_model, load_tokenizer

        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(tokenizer or model)
        model = load_model(model, dtype="float32", device="cpu")  # where the toy world's models train
    elif tokenizer is None or isinstance(tokenizer, (str, Path)):
        raise ValueError("pass the tokenizer (object or directory) along with a loaded model")
    if not problems:
        raise ValueError("no problems to evaluate on")
    prompts = [format_prompt(tokenizer, p["question"]) for p in problems]
    completions = generate_completions(model, tokenizer, prompts, batch_size, max_new_tokens)
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
    `evaluate_accuracy`, write `prefix` and let the model finish the answer greedily
    (`harness_plugin.answer_forcing`). Adds `forced_completion` and `correct_af` to each record."""
    from harness_plugin.answer_forcing import force_answers

    def continue_greedily(texts: list[str], budget: int) -> list[str]:
        return generate_completions(model, tokenizer, texts, batch_size, budget)

    forced = force_answers([r["prompt"] for r in records], [r["completion"] for r in records],
                           [max_new_tokens] * len(records), continue_greedily, prefix)
    for record, answer in zip(records, forced):
        record["forced_completion"] = record["completion"] + (answer or "")
        record["correct_af"] = score_answer(record["forced_completion"], record["reference"], dataset)
    return sum(r["correct_af"] for r in records) / max(1, len(records))
