"""The toy world's greedy evaluation (benchmarks.evaluate) against one-prompt-at-a-time `model.generate`."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.evaluate import evaluate_accuracy, forced_accuracy, generate_completions
from harness_plugin.answers import score
from harness_plugin.prompts import format_prompt

QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A train travels 60 km in 2 hours.",
    "Anna is 12.",
    "Solve for x: 2x + 3 = 7, so x is what number in the end?",
    "What is 3 + 5?",
]


def _alone(model, tokenizer, text: str, max_new_tokens: int) -> str:
    """Greedy continuation of one text, unpadded, up to the first EOS (the oracle)."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.fixture(scope="module")
def teacher(tiny_dir):
    return (AutoModelForCausalLM.from_pretrained(tiny_dir / "teacher").eval(),
            AutoTokenizer.from_pretrained(tiny_dir / "teacher"))


def test_completions_come_back_in_input_order(teacher) -> None:
    model, tokenizer = teacher
    prompts = [format_prompt(tokenizer, q) for q in QUESTIONS]  # lengths out of order: batches are sorted
    completions = generate_completions(model, tokenizer, prompts, batch_size=2, max_new_tokens=8)
    assert completions == [_alone(model, tokenizer, p, 8) for p in prompts]


def test_accuracy_and_answer_forcing(teacher, tiny_dir) -> None:
    model, tokenizer = teacher
    problems = [{"question": q, "final": "8"} for q in QUESTIONS]
    accuracy, records = evaluate_accuracy(tiny_dir / "teacher", None, problems, batch_size=3, max_new_tokens=6)
    assert [r["prompt"] for r in records] == [format_prompt(tokenizer, q) for q in QUESTIONS]
    assert [r["completion"] for r in records] == [_alone(model, tokenizer, r["prompt"], 6) for r in records]
    assert accuracy == sum(bool(score(r["completion"], "8", "gsm8k")) for r in records) / len(records)

    forced = forced_accuracy(model, tokenizer, records, prefix="\n#### ", max_new_tokens=3, batch_size=2)
    for r in records:
        prefix = r["completion"] + "\n#### "
        assert r["forced_completion"] == prefix + _alone(model, tokenizer, r["prompt"] + prefix, 3)
        assert r["correct_af"] == bool(score(r["forced_completion"], "8", "gsm8k"))
    assert forced == sum(r["correct_af"] for r in records) / len(records)


def test_a_loaded_model_needs_its_tokenizer(teacher) -> None:
    model, _ = teacher
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate_accuracy(model, None, [{"question": "q", "final": "1"}])
