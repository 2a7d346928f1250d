"""The penalty's fast paths: both fd copies in one batched forward, and the opt-in head-only penalty."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_plugin import AntidistillationPenalty, ProxyGradient, SamplerConfig, generate
from harness_plugin import twin as twin_module
from harness_plugin.decoding import position_ids_from_mask
from harness_plugin.errors import AntidistillError, NonFinitePenaltyError

PROMPTS = ["Tom has 3 apples and buys 5 more.", "A train travels", "Solve for x: 2x + 3 = 7, so x ="]
COMPLETIONS = [" 3 + 5 = 8. #### 8", " 60 km in 2 hours. #### 30", " 2. Final Answer: 2"]


@pytest.fixture(scope="module", params=["proxy", "proxy_gpt2"])
def setup(request, tiny_dir):
    """A proxy (Llama with its own head, or GPT-2 with a tied head), its tokenizer and a real gradient."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / request.param).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / request.param)
    traces = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    return model, tokenizer, ProxyGradient.compute(model, tokenizer, traces, progress=False)


@pytest.fixture(scope="module")
def generation_setup(tiny_dir):
    """Teacher, proxy, their tokenizer and a gradient of one trace: enough to generate under antidistillation."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "teacher")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dir / "teacher").eval()
    proxy = AutoModelForCausalLM.from_pretrained(tiny_dir / "proxy").eval()
    gradient = ProxyGradient.compute(proxy, tokenizer, [{"prompt": PROMPTS[0], "completion": COMPLETIONS[0]}],
                                     progress=False)
    return tokenizer, teacher, proxy, gradient


def padded_steps(tokenizer, steps: int = 4, seed: int = 0):
    """Left-padded prompts growing by one random token per step, as during generation."""
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield ids, mask
        new = torch.randint(3, len(tokenizer), (len(rows), 1), generator=generator)
        ids, mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)


def test_batched_copies_equal_sequential_copies(setup, monkeypatch):
    model, tokenizer, gradient = setup
    batched = AntidistillationPenalty(model, gradient, eps=1e-3)
    assert batched.batching == "batched"

    def unsupported(*args, **kwargs):
        raise twin_module.TwinUnsupported("forced for the test")

    monkeypatch.setattr(twin_module, "build_twin", unsupported)
    with pytest.warns(UserWarning, match="one after the other"):
        sequential = AntidistillationPenalty(model, gradient, eps=1e-3)
    assert sequential.batching == "sequential"
    for ids, mask in padded_steps(tokenizer):
        torch.testing.assert_close(batched(ids, mask), sequential(ids, mask), rtol=1e-4, atol=1e-3)


def test_batched_copies_hold_two_proxies_and_no_third(setup):
    """Memory: θ+εg and θ−εg once each (a tied head shares the embedding's storage), no extra base copy."""
    model, _, gradient = setup
    penalty = AntidistillationPenalty(model, gradient, eps=1e-3)
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in penalty.estimator.twin.parameters()}
    proxy_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied tensors counted once
    assert sum(storages.values()) == 2 * proxy_bytes


def head_only_oracle(model, gradient, ids, mask):
    """d/dt log p(·|x; W + tG) at t = 0 for the unembedding W alone, by forward-mode AD through the model."""
    head = model.get_output_embeddings()
    path = next(name for name, module in model.named_modules() if module is head)
    canonical = next(name for name, p in model.named_parameters() if p is head.weight)
    positions = position_ids_from_mask(mask)

    def last_log_probs(weight):
        out = torch.func.functional_call(model, {f"{path}.weight": weight}, args=(), tie_weights=False, kwargs={
            "input_ids": ids, "attention_mask": mask, "position_ids": positions})
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    _, tangent = torch.func.jvp(last_log_probs, (head.weight.detach(),), (gradient.tensors[canonical],))
    return tangent


def test_head_penalty_is_the_exact_head_only_derivative(setup):
    model, tokenizer, gradient = setup
    penalty = AntidistillationPenalty(model, gradient, method="head")
    for ids, mask in padded_steps(tokenizer):
        expected = head_only_oracle(model, gradient, ids, mask)
        got = penalty(ids, mask)
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert expected.std() > 0


def test_speculative_cache_reuse_is_undone_when_the_prefix_differs(setup):
    """A call of the same batch size and a longer, unrelated sequence must not reuse the cache."""
    model, tokenizer, gradient = setup
    for method in ("fd", "head"):
        penalty = AntidistillationPenalty(model, gradient, eps=1e-3, method=method)
        short = torch.tensor([tokenizer(PROMPTS[1])["input_ids"]])
        longer = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
        assert longer.shape[1] > short.shape[1] and not torch.equal(longer[:, : short.shape[1]], short)
        penalty(short)
        fresh = AntidistillationPenalty(model, gradient, eps=1e-3, method=method)
        torch.testing.assert_close(penalty(longer), fresh(longer))


def test_head_is_a_sampler_option(generation_setup):
    tokenizer, teacher, proxy, gradient = generation_setup
    assert SamplerConfig(penalty="head").penalty == "head"
    kwargs = dict(sampler="ads", proxy=proxy, gradient=gradient, tau=1.0, top_p=1.0, max_new_tokens=8, seed=3,
                  progress=False)
    clean = generate(teacher, tokenizer, PROMPTS, lam=0.0, **kwargs)
    poisoned = generate(teacher, tokenizer, PROMPTS, lam=50.0, penalty_method="head", **kwargs)
    assert [t.token_ids for t in clean] != [t.token_ids for t in poisoned]


@pytest.mark.parametrize("method", ["fd", "head"])
def test_deferred_checks_give_the_same_penalty_without_a_per_step_sync(setup, method):
    """The GPU path (checks read back one step later) must not change Δ; here it runs on the CPU."""
    model, tokenizer, gradient = setup
    synced = AntidistillationPenalty(model, gradient, eps=1e-3, method=method, defer_checks=False)
    deferred = AntidistillationPenalty(model, gradient, eps=1e-3, method=method, defer_checks=True)
    assert not synced.defer_checks and deferred.defer_checks
    for step, (ids, mask) in enumerate(padded_steps(tokenizer, steps=5)):
        expected = synced(ids, mask)
        got = deferred(ids, mask, continues=step > 0)
        assert torch.equal(got, expected)
        assert deferred._pending is not None  # the verdict waits for the next call instead of a host sync
    deferred.check()
    assert deferred._pending is None


def test_deferred_checks_still_catch_a_sequence_that_does_not_continue(setup):
    model, tokenizer, gradient = setup
    penalty = AntidistillationPenalty(model, gradient, eps=1e-3, defer_checks=True)
    steps = list(padded_steps(tokenizer, steps=2))
    penalty(*steps[0])
    other = steps[1][0].flip(0)  # same batch, one token longer, but the rows belong to other prompts
    penalty(other, steps[1][1], continues=True)  # deferred: no error yet
    with pytest.raises(AntidistillError, match="does not extend"):
        penalty.check()
    # without the promise the same call is detected at once and recomputed (the previous behaviour)
    penalty.reset()
    penalty(*steps[0])
    fresh = AntidistillationPenalty(model, gradient, eps=1e-3, defer_checks=True)
    torch.testing.assert_close(penalty(other, steps[1][1]), fresh(other, steps[1][1]))


def test_deferred_nan_is_reported_with_its_step_and_kept_out_of_the_sampler(setup):
    model, tokenizer, gradient = setup
    generator = torch.Generator().manual_seed(0)  # θ ± εg overflows to inf: Δ is NaN
    huge = ProxyGradient({name: torch.randn(t.shape, generator=generator) * 1e38
                          for name, t in gradient.tensors.items()})
    steps = list(padded_steps(tokenizer, steps=2))
    with pytest.raises(NonFinitePenaltyError, match="step 1"):
        AntidistillationPenalty(model, huge, eps=1.0, defer_checks=False)(*steps[0])
    deferred = AntidistillationPenalty(model, huge, eps=1.0, defer_checks=True)
    delta = deferred(*steps[0])
    assert torch.isfinite(delta).all()  # zeroed where non-finite, so sampling this step cannot fail on the device
    with pytest.raises(NonFinitePenaltyError, match="step 1"):
        deferred(*steps[1], continues=True)


def test_generate_passes_continuation_so_the_penalty_defers_and_tokens_are_identical(generation_setup):
    tokenizer, teacher, proxy, gradient = generation_setup
    kwargs = dict(sampler="ads", proxy=proxy, gradient=gradient, tau=1.0, top_p=1.0, max_new_tokens=6, seed=3,
                  lam=50.0, progress=False)
    tokens = {}
    for defer in (False, True):
        penalty = AntidistillationPenalty(proxy, gradient, eps=1e-2, defer_checks=defer)
        calls = []
        original = penalty._cached

        def spy(ids, mask, continues=False, original=original, calls=calls):
            calls.append(continues)
            return original(ids, mask, continues)

        penalty._cached = spy
        tokens[defer] = [t.token_ids for t in generate(teacher, tokenizer, PROMPTS, penalty=penalty, **kwargs)]
        assert calls == [False] + [True] * (len(calls) - 1) and len(calls) > 2  # prompt, then continuations
        assert penalty._pending is None  # generate() read the last step's verdict (processor.finish())
    assert tokens[True] == tokens[False]


def test_transposed_head_layout_is_an_ablation_with_the_same_penalty(setup):
    model, tokenizer, gradient = setup
    transposed = AntidistillationPenalty(model, gradient, eps=1e-3)
    linear = AntidistillationPenalty(model, gradient, eps=1e-3, transposed_head=False)
    assert transposed.batching == linear.batching == "batched"
    head = model.get_output_embeddings().weight  # [vocab, hidden]
    shapes = {p.shape for p in linear.estimator.twin.parameters()}
    if isinstance(model.get_output_embeddings(), torch.nn.Linear):
        assert (2, head.shape[1], head.shape[0]) in {p.shape for p in transposed.estimator.twin.parameters()}
        assert (2, head.shape[1], head.shape[0]) not in shapes
    for ids, mask in padded_steps(tokenizer):
        torch.testing.assert_close(linear(ids, mask), transposed(ids, mask), rtol=1e-4, atol=1e-3)
