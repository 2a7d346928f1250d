"""Vocabulary alignment between teacher and proxy.

The penalty is a vector over the vocabulary, so teacher and proxy must agree on what every index means. We check
the tokenizers themselves (not just sizes) and work on the tokenizer's real vocabulary: embedding rows beyond it
(padding to a multiple of 64, say) were never trained and must never be sampled. The reference code resizes
embeddings instead, which makes those rows sampleable.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from .errors import VocabularyMismatchError


def real_vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """Number of token ids the tokenizer can produce, added tokens included."""
    return len(tokenizer)


def _describe(tokenizer: PreTrainedTokenizerBase, name: str | None) -> str:
    return f"{name or getattr(tokenizer, 'name_or_path', '?') or '?'} (vocab {len(tokenizer)})"


def check_same_tokenizer(
    teacher_tokenizer: PreTrainedTokenizerBase,
    proxy_tokenizer: PreTrainedTokenizerBase,
    teacher_name: str | None = None,
    proxy_name: str | None = None,
) -> None:
    """Raise `VocabularyMismatchError` unless both tokenizers map the same strings to the same ids."""
    teacher_desc, proxy_desc = _describe(teacher_tokenizer, teacher_name), _describe(proxy_tokenizer, proxy_name)
    fix = "Antidistillation needs a proxy with the teacher's tokenizer: pick a proxy of the teacher's model family."
    teacher_vocab, proxy_vocab = teacher_tokenizer.get_vocab(), proxy_tokenizer.get_vocab()
    if teacher_vocab != proxy_vocab:
        differing = sorted(set(teacher_vocab.items()) ^ set(proxy_vocab.items()), key=lambda kv: kv[1])[:5]
        raise VocabularyMismatchError(
            f"teacher {teacher_desc} and proxy {proxy_desc} have different vocabularies "
            f"(first differing entries: {differing}). {fix}"
        )
    for attribute in ("bos_token_id", "eos_token_id"):
        if getattr(teacher_tokenizer, attribute) != getattr(proxy_tokenizer, attribute):
            raise VocabularyMismatchError(
                f"teacher {teacher_desc} and proxy {proxy_desc} disagree on {attribute}: "
                f"{getattr(teacher_tokenizer, attribute)} vs {getattr(proxy_tokenizer, attribute)}. {fix}"
            )


def check_model_covers_vocab(model: torch.nn.Module, vocab_size: int, role: str) -> int:
    """Return the model's output width after checking that it has a row for every real token."""
    width = model.get_output_embeddings().weight.shape[0]  # type: ignore[operator,union-attr]
    if width < vocab_size:
        name = getattr(getattr(model, "config", None), "_name_or_path", "?")
        raise VocabularyMismatchError(
            f"{role} {name} outputs {width} logits but the tokenizer has {vocab_size} tokens: "
            "the model and tokenizer do not belong together."
        )
    return int(width)
