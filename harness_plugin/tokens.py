"""Turning prompts and (prompt, completion) traces into token ids the same way everywhere.

Prompts are the exact text given to the model (chat template already applied). Completions are tokenized on their
own and appended, which mirrors generation (new tokens follow the prompt's tokens) and makes prompt masking a
matter of the prompt's token length, never of searching for a template string.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's special tokens unless the text already starts with BOS."""
    bos = tokenizer.bos_token
    add_special = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])


@dataclass(frozen=True)
class EncodedTrace:
    input_ids: list[int]
    prompt_length: int

    @property
    def completion_length(self) -> int:
        return len(self.input_ids) - self.prompt_length


def encode_trace(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completion: str,
    append_eos: bool = True,
    max_length: int | None = None,
) -> EncodedTrace:
    """Prompt ids + completion ids (+ EOS), truncated on the right to `max_length` tokens."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if append_eos and tokenizer.eos_token_id is not None:
        completion_ids.append(int(tokenizer.eos_token_id))
    ids = prompt_ids + completion_ids
    if max_length is not None:
        ids = ids[:max_length]
    return EncodedTrace(ids, min(len(prompt_ids), len(ids)))
