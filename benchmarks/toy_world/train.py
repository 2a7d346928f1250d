"""Tiny model definitions and the plain training loop that pretrains them on the CPU.

Why a hand-written loop rather than HF `Trainer` here: the toy world is built once, single-process, under a
minutes budget, and a bare AdamW loop over pre-tokenised examples has no per-step overhead to speak of. The
benchmark suite's distillation (`benchmarks/distill.py`) uses `Trainer`, because that one must scale out.
Models are ordinary `LlamaForCausalLM` / `GPTNeoXForCausalLM` (or `GPT2LMHeadModel`), saved with `save_pretrained`, so every later stage
loads them through `AutoModelForCausalLM` exactly like real checkpoints.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from harness_plugin.progress import progress_enabled


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a tiny model; `arch` is "llama" (teacher family), "gpt_neox" or "gpt2" (student families)."""

    arch: str
    hidden: int
    layers: int
    heads: int
    intermediate: int = 0  # llama only; 0 means 3 * hidden
    max_positions: int = 320


@dataclass(frozen=True)
class TrainSpec:
    """How long and how hard to train. `steps` is the budget knob of the presets."""

    steps: int
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    min_lr_ratio: float = 0.1


def make_model(spec: ModelSpec, tokenizer, seed: int) -> torch.nn.Module:
    """A freshly initialised model whose vocabulary and special ids match `tokenizer` exactly."""
    torch.manual_seed(seed)
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if spec.arch == "llama":
        config = LlamaConfig(
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate or 3 * spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=spec.max_positions,
            tie_word_embeddings=True,
            **common,
        )
        return LlamaForCausalLM(config)
    if spec.arch == "gpt2":
        config = GPT2Config(
            n_embd=spec.hidden,
            n_layer=spec.layers,
            n_head=spec.heads,
            n_positions=spec.max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
        return GPT2LMHeadModel(config)
    if spec.arch == "gpt_neox":
        config = GPTNeoXConfig(
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate or 4 * spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            max_position_embeddings=spec.max_positions,
            rotary_pct=1.0,
            tie_word_embeddings=True,
            **common,
        )
        return GPTNeoXForCausalLM(config)
    raise ValueError(f"unknown architecture {spec.arch!r}: use 'llama', 'gpt2' or 'gpt_neox'")


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_len: int) -> list[tuple[list[int], int]]:
    """Tokenise (prompt, target) pairs; returns (ids, n_prompt_tokens) with the loss on the target only.

    Prompt and target are tokenised separately and concatenated, so the boundary is exact (no search for a
    template string). An empty prompt means plain language modelling on the whole text.
    """
    out = []
    for prompt, target in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        t = tokenizer(target, add_special_tokens=False)["input_ids"]
        ids = (p + t)[:max_len]
        if len(ids) <= len(p):
            continue
        out.append((ids, len(p)))
    if not out:
        raise ValueError("no example has a supervised token left after truncation: raise max_len")
    return out


# A training example: token ids, the number of prompt tokens (not supervised), and optionally the positions
# whose label is masked (tokens replaced by noise: context to read past, never a target to learn).
Example = tuple[list[int], int] | tuple[list[int], int, tuple[int, ...]]


# Characters whose tokens carry a solution's arithmetic: noise there would train results under a wrong operator.
_ARITHMETIC_CHARS = frozenset("0123456789+-*/=#")


def noise_vocabulary(tokenizer) -> tuple[list[int], set[int]]:
    """(replaceable, protected) token ids for `perturbed_copies`, from the tokenizer's decoded token texts.

    Protected: special tokens and every token with a digit, an operator, `=` or `#` in it. Why operators too: the
    loss stays on the result digits after a replaced token, so replacing `+` by `*` in the context would teach
    the teacher to write `a + b` for `a * b` (measured: unprotected noise cost a plain-line teacher 11 points).
    Replaceable: every other token (words, spaces, punctuation), so noise looks like odd wording, never like maths.
    """
    special = set(tokenizer.all_special_ids)
    protected = set(special)
    for token_id in range(len(tokenizer)):
        if token_id not in special and set(tokenizer.decode([token_id])) & _ARITHMETIC_CHARS:
            protected.add(token_id)
    return [i for i in range(len(tokenizer)) if i not in protected], protected


def perturbed_copies(
    examples: Sequence[Example],
    replaceable: Sequence[int],
    protected: Collection[int],
    fraction: float,
    rate: tuple[float, float],
    seed: int,
) -> list[Example]:
    """Copies of a `fraction` of `examples` where a `rate` share of the completion's non-digit tokens is noise.

    Why: the paper's teacher recovers from odd tokens in its own context, which is what lets antidistillation
    spend its tilt on harmless-looking oddities. Each copy replaces a share (drawn uniformly in `rate`) of the
    completion tokens not in `protected` (digits, special tokens; the last token, EOS, is always kept) by tokens
    drawn uniformly from `replaceable`, and masks the loss at the replaced positions: the teacher learns to
    continue correctly after noise, never to write noise.
    """
    if not 0 <= fraction <= 1 or not 0 <= rate[0] <= rate[1] <= 1:
        raise ValueError(f"need 0 <= fraction <= 1 and 0 <= rate[0] <= rate[1] <= 1, got {fraction}, {rate}")
    if not replaceable:
        raise ValueError("no replacement tokens given")
    rng = random.Random(f"perturb-{seed}")
    chosen = rng.sample(range(len(examples)), int(round(len(examples) * fraction)))
    out: list[Example] = []
    for index in sorted(chosen):
        ids, n_prompt = list(examples[index][0]), examples[index][1]
        candidates = [i for i in range(n_prompt, len(ids) - 1) if ids[i] not in protected]
        k = min(len(candidates), max(1, round(len(candidates) * rng.uniform(*rate)))) if candidates else 0
        positions = tuple(sorted(rng.sample(candidates, k)))
        for i in positions:
            ids[i] = rng.choice(replaceable)
        out.append((ids, n_prompt, positions))
    return out


def _batch(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ex[0]) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        ids, n_prompt = example[0], example[1]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        if len(example) > 2:
            for i in example[2]:  # type: ignore[misc]
                labels[row, i] = -100
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _length_bucketed_epoch(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[int]:
    """One epoch's example order: shuffled, then sorted by length within windows of 32 batches, batches shuffled.

    Why: toy examples vary from about 40 to 150 tokens, so random batches are about a quarter padding (measured
    28%); sorting inside a window keeps batches random across the epoch while padding mostly disappears.
    """
    fresh = list(range(len(examples)))
    rng.shuffle(fresh)
    window = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(fresh), window):
        chunk = sorted(fresh[start : start + window], key=lambda i: len(examples[i][0]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return [i for batch in batches for i in batch]


def train_lm(
    model: torch.nn.Module,
    examples: Sequence[Example],
    spec: TrainSpec,
    pad_id: int,
    seed: int,
    desc: str,
    on_step: Callable[[int, float], None] | None = None,
    position: int | None = None,
) -> dict[str, float]:
    """Train with AdamW and a warmup + cosine schedule; returns final loss and timings (wall and CPU).

    `on_step(step, loss)` is called after every optimiser step (e.g. to evaluate during tuning); `position`
    is the progress bar's line, so models trained side by side each keep their own bar.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return (step + 1) / spec.warmup
        progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    order: list[int] = []
    wall, cpu = time.perf_counter(), time.process_time()
    ema = None
    bar = tqdm(range(spec.steps), desc=desc, leave=False, dynamic_ncols=True, position=position,
               disable=not progress_enabled())
    for step in bar:
        if len(order) < spec.batch_size:
            order.extend(_length_bucketed_epoch(examples, spec.batch_size, rng))
        idx, order = order[: spec.batch_size], order[spec.batch_size :]
        batch = _batch([examples[i] for i in idx], pad_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
        if on_step is not None:
            on_step(step + 1, loss.item())
    bar.close()
    model.eval()
    return {
        "final_loss": float(ema or 0.0),
        "steps": spec.steps,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
    }
