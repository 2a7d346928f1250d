"""Tiny real `transformers` models and tokenizers, built locally (no hub), for tests across the project."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have? 3 + 5 = 8. #### 8",
    "A train travels 60 km in 2 hours. What is its speed? 60 / 2 = 30 km per hour. #### 30",
    "Anna is 12 years old. Her brother is 4 years older. 12 + 4 = 16. The answer is 16.",
    "The fraction one half equals 0.5 and \\frac{1}{2} is written \\boxed{\\frac{1}{2}}.",
    "Solve for x: 2x + 3 = 7, so x = 2. Final Answer: 2",
] * 4
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_tokenizer(directory: str | Path, vocab_size: int = 320, corpus: list[str] | None = None,
                    extra_tokens: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with BOS/EOS/PAD and a chat template, saved to `directory`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + (extra_tokens or []),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus or CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.add_bos_token = False
    fast.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def _ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def build_llama(directory: str | Path, tokenizer: PreTrainedTokenizerFast, hidden: int = 32, layers: int = 2,
                seed: int = 0, vocab_rows: int | None = None, tie: bool = False) -> LlamaForCausalLM:
    """A random tiny Llama (rotary positions), saved to `directory`; `vocab_rows` pads the embedding."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_rows or len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=tie, **_ids(tokenizer))
    model = LlamaForCausalLM(config)
    _spread_logits(model)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return LlamaForCausalLM.from_pretrained(directory)


def build_gpt2(directory: str | Path, tokenizer: PreTrainedTokenizerFast, hidden: int = 32, layers: int = 2,
               seed: int = 0) -> GPT2LMHeadModel:
    """A random tiny GPT-2 (absolute positions: wrong position ids show up in its outputs)."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=4, n_positions=512,
                        **_ids(tokenizer))
    model = GPT2LMHeadModel(config)
    _spread_logits(model)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return GPT2LMHeadModel.from_pretrained(directory)


def _spread_logits(model: torch.nn.Module) -> None:
    """Scale the output layer so a random model's distribution is far from uniform (Δ is then informative)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)  # type: ignore[union-attr,operator]
