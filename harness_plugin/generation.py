"""One small entry point: generate traces from a teacher under a given sampler, in batches, with statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from .errors import AntidistillError
from .gradient import ProxyGradient
from .penalty import AntidistillationPenalty
from .sampling import (
    AntidistillationLogitsProcessor,
    PermutationLogitsProcessor,
    SamplerConfig,
    TeacherLogProbRecorder,
)
from .tokens import encode_prompt
from .vocab import check_model_covers_vocab, check_same_tokenizer, real_vocab_size


@dataclass
class GeneratedTrace:
    """One sampled completion with the teacher's log-prob of each of its tokens."""

    prompt: str
    completion: str
    token_ids: list[int]
    teacher_logprobs: list[float]
    finished: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_teacher_logprob(self) -> float:
        return sum(self.teacher_logprobs) / len(self.teacher_logprobs) if self.teacher_logprobs else 0.0

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("extra")
        record.update(self.extra)
        record["num_tokens"] = self.num_tokens
        return record


def build_processor(
    config: SamplerConfig,
    vocab_size: int,
    penalty: AntidistillationPenalty | None,
) -> AntidistillationLogitsProcessor | PermutationLogitsProcessor | None:
    """The logits processor for a sampler; None for greedy decoding."""
    if config.greedy:
        return None
    if config.sampler == "permutation":
        return PermutationLogitsProcessor(penalty, config.lam, config.tau, vocab_size, seed=config.seed)
    return AntidistillationLogitsProcessor(penalty if config.sampler == "ads" else None,
                                           config.lam if config.sampler == "ads" else 0.0, config.tau, vocab_size)


def build_penalty(
    config: SamplerConfig,
    teacher_tokenizer: PreTrainedTokenizerBase,
    proxy: PreTrainedModel | None,
    gradient: ProxyGradient | str | None,
    proxy_tokenizer: PreTrainedTokenizerBase | None = None,
    proxy_dtype: str | torch.dtype | None = None,
    names: tuple[str, str] | None = None,
) -> AntidistillationPenalty | None:
    """Check the proxy against the teacher's tokenizer and build Δ's computer, when the sampler needs one.

    `names`: how to call teacher and proxy in a tokenizer mismatch error (their hub names or folders).
    """
    if not config.needs_penalty:
        return None
    if proxy is None or gradient is None:
        raise AntidistillError(f"--sampler {config.sampler} with lam > 0 needs a proxy model and its gradient "
                               "(`antidistill gradient` computes one)")
    if proxy_tokenizer is not None:
        check_same_tokenizer(teacher_tokenizer, proxy_tokenizer, *(names or ()))
    vocab = real_vocab_size(teacher_tokenizer)
    check_model_covers_vocab(proxy, vocab, "proxy")
    return AntidistillationPenalty(proxy, gradient, eps=config.eps, method=config.penalty,  # type: ignore[arg-type]
                                   vocab_size=vocab, dtype=proxy_dtype)


def _left_pad(rows: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def generate(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: SamplerConfig | None = None,
    *,
    proxy: PreTrainedModel | None = None,
    gradient: ProxyGradient | str | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    penalty: AntidistillationPenalty | None = None,
    proxy_dtype: str | torch.dtype | None = None,
    proxy_tokenizer: PreTrainedTokenizerBase | None = None,
    progress: bool = True,
    **sampling: Any,
) -> list[GeneratedTrace]:
    """Sample one completion per prompt (prompts are exact model input text, chat template already applied).

    The sampler is `config` (a `SamplerConfig`), or its fields as keywords: `sampler` "ads" (antidistillation),
    "permutation" (the control) or "temperature" (λ ignored; τ = 0 is greedy), `tau`, `lam`, `eps`, `top_p`,
    `top_k`, `seed` and `penalty_method` ("fd", "head", "jvp"). Pass a prebuilt `penalty` to reuse its proxy copies
    across calls. Batch b uses seed `seed + b`.
    """
    if config is None:
        if "penalty_method" in sampling:
            sampling["penalty"] = sampling.pop("penalty_method")
        unknown = sorted(set(sampling) - {f.name for f in fields(SamplerConfig)})
        if unknown:
            raise AntidistillError(f"generate() got unknown sampler settings {unknown}: use sampler, tau, lam, eps, "
                                   "top_p, top_k, seed and penalty_method")
        config = SamplerConfig(**sampling)
    elif sampling:
        raise AntidistillError(f"generate() got config= and also {sorted(sampling)}: give one of them")
    seed = config.seed
    if batch_size < 1 or max_new_tokens < 1:
        raise AntidistillError("batch_size and max_new_tokens must be >= 1")
    vocab = real_vocab_size(tokenizer)
    check_model_covers_vocab(teacher, vocab, "teacher")
    if penalty is None:
        penalty = build_penalty(config, tokenizer, proxy, gradient, proxy_tokenizer, proxy_dtype)
    processor = build_processor(config, vocab, penalty)
    device = next(teacher.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(teacher, tokenizer)
    traces: list[GeneratedTrace] = []
    batches = range(0, len(prompts), batch_size)
    for number, start in enumerate(tqdm(batches, desc=f"generate ({config.sampler})", unit="batch",
                                        disable=not progress)):
        batch_prompts = list(prompts[start:start + batch_size])
        input_ids, attention_mask = _left_pad([encode_prompt(tokenizer, p) for p in batch_prompts], pad_id, device)
        recorder = TeacherLogProbRecorder()
        processors = LogitsProcessorList([recorder])
        if processor is not None:
            processor.start(attention_mask, seed=seed + number)
            processors.append(processor)
        torch.manual_seed(seed + number)
        with torch.no_grad():
            sequences = teacher.generate(
                input_ids=input_ids, attention_mask=attention_mask, logits_processor=processors,
                do_sample=not config.greedy, temperature=1.0, top_p=config.top_p if not config.greedy else None,
                top_k=config.top_k if not config.greedy else None, repetition_penalty=1.0,
                max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_ids,
            )
        if processor is not None:
            processor.finish()
        new_tokens = sequences[:, input_ids.shape[1]:].cpu()
        logprobs = recorder.finish(sequences)
        for row, prompt in enumerate(batch_prompts):
            tokens, finished = _until_eos(new_tokens[row].tolist(), eos_ids)
            traces.append(GeneratedTrace(
                prompt=prompt,
                completion=tokenizer.decode(tokens, skip_special_tokens=True),
                token_ids=tokens,
                teacher_logprobs=[round(float(x), 5) for x in logprobs[row, : len(tokens)]],
                finished=finished,
            ))
    return traces


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    return sorted(ids)


def _until_eos(tokens: list[int], eos_ids: Sequence[int]) -> tuple[list[int], bool]:
    for index, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:index], True
    return tokens, False
