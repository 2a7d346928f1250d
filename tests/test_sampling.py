"""Logits processors and generate(): λ = 0 equals plain HF sampling, permutation, vocabulary handling."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from harness_plugin import (
    AntidistillationLogitsProcessor,
    AntidistillationPenalty,
    PermutationLogitsProcessor,
    ProxyGradient,
    SamplerConfig,
    VocabularyMismatchError,
    check_same_tokenizer,
    generate,
)
from harness_plugin.errors import AntidistillError
from harness_plugin.generation import _left_pad
from harness_plugin.tokens import encode_prompt

PROMPTS = ["Tom has 3 apples and buys", "A train travels 60 km in 2 hours. What is", "Anna"]
TRACES = [{"prompt": p, "completion": " 3 + 5 = 8. #### 8"} for p in PROMPTS]


@pytest.fixture(scope="module")
def models(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "teacher")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dir / "teacher").eval()
    proxy = AutoModelForCausalLM.from_pretrained(tiny_dir / "proxy").eval()
    gradient = ProxyGradient.compute(proxy, tokenizer, TRACES, progress=False)
    return teacher, proxy, tokenizer, gradient


def test_lambda_zero_gives_plain_hf_sampling_token_for_token(models):
    teacher, proxy, tokenizer, gradient = models
    for tau, top_p in ((1.0, 1.0), (0.7, 0.9)):
        ours = generate(teacher, tokenizer, PROMPTS, sampler="ads", proxy=proxy, gradient=gradient, lam=0.0,
                        tau=tau, top_p=top_p, max_new_tokens=12, seed=5, batch_size=3, progress=False)
        ids, mask = _left_pad([encode_prompt(tokenizer, p) for p in PROMPTS], tokenizer.pad_token_id, "cpu")
        torch.manual_seed(5)
        plain = teacher.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=tau, top_p=top_p,
                                 top_k=0, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
        for row, trace in enumerate(ours):
            expected = plain[row, ids.shape[1]:].tolist()
            assert trace.token_ids == expected[: len(trace.token_ids)]
        assert any(t.num_tokens > 0 for t in ours)


def test_antidistillation_changes_samples_and_records_teacher_logprobs(models):
    teacher, proxy, tokenizer, gradient = models
    kwargs = dict(proxy=proxy, gradient=gradient, tau=1.0, top_p=1.0, max_new_tokens=16, seed=3, progress=False)
    clean = generate(teacher, tokenizer, PROMPTS, sampler="ads", lam=0.0, **kwargs)
    poisoned = generate(teacher, tokenizer, PROMPTS, sampler="ads", lam=50.0, **kwargs)
    assert [t.token_ids for t in clean] != [t.token_ids for t in poisoned]
    for trace in poisoned:
        assert len(trace.teacher_logprobs) == trace.num_tokens
        assert all(lp <= 0 for lp in trace.teacher_logprobs)
    # tokens pushed by Δ are less likely under the teacher on average
    mean = lambda traces: sum(sum(t.teacher_logprobs) for t in traces) / sum(t.num_tokens for t in traces)  # noqa: E731
    assert mean(poisoned) < mean(clean)


def test_teacher_logprobs_match_a_forward_pass(models):
    teacher, _, tokenizer, _ = models
    trace = generate(teacher, tokenizer, PROMPTS[:1], sampler="temperature", tau=1.0, top_p=1.0,
                     max_new_tokens=8, seed=1, progress=False)[0]
    ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[0]) + trace.token_ids])
    logp = torch.log_softmax(teacher(input_ids=ids).logits[0].float(), dim=-1)
    start = ids.shape[1] - trace.num_tokens
    expected = [logp[start + i - 1, tok].item() for i, tok in enumerate(trace.token_ids)]
    assert trace.teacher_logprobs == pytest.approx(expected, abs=1e-4)


def test_permutation_keeps_magnitudes_moves_values_and_is_seeded(models):
    _, proxy, tokenizer, gradient = models
    vocab = len(tokenizer)
    penalty = AntidistillationPenalty(proxy, gradient, eps=1e-3, vocab_size=vocab)
    processor = PermutationLogitsProcessor(penalty, lam=1.0, tau=1.0, vocab_size=vocab, seed=7)
    delta = torch.randn(4, vocab)
    processor.start(None)
    first = processor.permute(delta)
    for row in range(4):
        torch.testing.assert_close(first[row].abs().sort().values, delta[row].abs().sort().values)
    assert (first != delta).float().mean() > 0.9
    assert not torch.equal(first[0], processor.permute(delta)[0])  # fresh every step
    processor.start(None)
    torch.testing.assert_close(processor.permute(delta), first)  # same seed, same permutations
    processor.start(None, seed=8)
    assert not torch.equal(processor.permute(delta), first)


def test_processor_output_is_tilted_log_probs_with_extra_rows_masked(models):
    _, proxy, tokenizer, gradient = models
    vocab = len(tokenizer)
    penalty = AntidistillationPenalty(proxy, gradient, eps=1e-3, vocab_size=vocab)
    processor = AntidistillationLogitsProcessor(penalty, lam=0.5, tau=0.8, vocab_size=vocab)
    ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[0])])
    scores = torch.randn(1, vocab + 6)
    processor.start(torch.ones_like(ids))
    out = processor(ids, scores.clone())
    penalty.reset()
    expected = torch.log_softmax(scores[:, :vocab], -1) / 0.8 + 0.5 * penalty(ids)
    torch.testing.assert_close(out[:, :vocab], expected)
    assert torch.isinf(out[:, vocab:]).all()


def test_padded_embedding_rows_are_never_sampled(tiny_dir, tmp_path, models):
    from tiny_models import build_llama

    _, _, tokenizer, _ = models
    padded = build_llama(tmp_path / "padded", tokenizer, hidden=32, vocab_rows=len(tokenizer) + 64, seed=9)
    with torch.no_grad():
        padded.lm_head.weight[len(tokenizer):] = 100.0  # untrained rows that would win every step
    traces = generate(padded, tokenizer, PROMPTS, sampler="temperature", tau=1.0, max_new_tokens=10, progress=False)
    assert all(tok < len(tokenizer) for t in traces for tok in t.token_ids)


def test_bad_settings_give_one_clear_error(tiny_dir, models):
    teacher, proxy, tokenizer, gradient = models
    other = AutoTokenizer.from_pretrained(tiny_dir / "other_tokenizer")
    with pytest.raises(VocabularyMismatchError, match="vocab"):
        check_same_tokenizer(tokenizer, other, "teacher-x", "proxy-y")
    with pytest.raises(VocabularyMismatchError, match="proxy-y"):
        check_same_tokenizer(tokenizer, other, "teacher-x", "proxy-y")
    with pytest.raises(VocabularyMismatchError):
        generate(teacher, tokenizer, PROMPTS, sampler="ads", proxy=proxy, gradient=gradient, lam=1.0,
                 proxy_tokenizer=other, progress=False)
    for bad in (dict(lam=-1.0), dict(eps=0.0), dict(tau=0.0), dict(sampler="beam"), dict(top_p=0.0)):
        with pytest.raises(AntidistillError):
            SamplerConfig(**{"sampler": "ads", **bad})
    with pytest.raises(AntidistillError, match="needs a proxy"):
        generate(teacher, tokenizer, PROMPTS, sampler="ads", lam=1.0, progress=False)


def test_processor_composes_with_hf_generate_directly(models):
    """Users can hand the processor to any `generate` call, as the README shows."""
    teacher, proxy, tokenizer, gradient = models
    vocab = len(tokenizer)
    processor = AntidistillationLogitsProcessor(
        AntidistillationPenalty(proxy, gradient, eps=1e-2, vocab_size=vocab), lam=2.0, tau=0.9, vocab_size=vocab)
    ids, mask = _left_pad([encode_prompt(tokenizer, p) for p in PROMPTS], tokenizer.pad_token_id, "cpu")
    processor.start(mask)
    out = teacher.generate(input_ids=ids, attention_mask=mask, logits_processor=LogitsProcessorList([processor]),
                           do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=6,
                           pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]
