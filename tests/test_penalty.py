"""The penalty Δ: agreement of fd, jvp and a brute-force oracle; sign; caching; padding; bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_plugin import AntidistillationPenalty, NonFinitePenaltyError, ProxyGradient
from harness_plugin.decoding import position_ids_from_mask
from harness_plugin.errors import AntidistillError, GradientMismatchError

PROMPTS = ["Tom has 3 apples and buys 5 more.", "A train travels", "Solve for x: 2x + 3 = 7, so x ="]
COMPLETIONS = [" 3 + 5 = 8. #### 8", " 60 km in 2 hours. #### 30", " 2. Final Answer: 2"]


def load(tiny_dir, name):
    return AutoModelForCausalLM.from_pretrained(tiny_dir / name).eval(), AutoTokenizer.from_pretrained(tiny_dir / name)


@pytest.fixture(scope="module")
def proxy(tiny_dir):
    return load(tiny_dir, "proxy")


@pytest.fixture(scope="module")
def gradient(proxy):
    model, tokenizer = proxy
    traces = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    return ProxyGradient.compute(model, tokenizer, traces, batch_size=2, progress=False)


def oracle_delta(model, gradient, input_ids):
    """⟨g, ∇_θ log p(v|x)⟩ for every v, one backward pass per vocabulary entry."""
    params = dict(model.named_parameters())
    logp = torch.log_softmax(model(input_ids=input_ids).logits[0, -1].float(), dim=-1)
    out = []
    for v in range(logp.shape[0]):
        grads = torch.autograd.grad(logp[v], list(params.values()), retain_graph=True, allow_unused=True)
        out.append(sum((gr * gradient.tensors[n]).sum() for n, gr in zip(params, grads) if gr is not None))
    return torch.stack(out).detach()


def test_fd_and_jvp_match_brute_force_oracle(proxy, gradient):
    model, tokenizer = proxy
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    oracle = oracle_delta(model, gradient, ids)
    fd = AntidistillationPenalty(model, gradient, eps=1e-3, method="fd")(ids)[0]
    jvp = AntidistillationPenalty(model, gradient, eps=1e-3, method="jvp")(ids)[0]
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(jvp, oracle, dim=0) > 0.99999
    assert torch.allclose(jvp, oracle, rtol=1e-3, atol=1e-3 * oracle.abs().max().item())
    assert cosine(fd, jvp, dim=0) > 0.999
    assert oracle.std() > 0  # a penalty that is not constant across the vocabulary


def test_sign_step_on_max_delta_token_raises_loss_more(proxy, gradient):
    """Δ(v) predicts how a distillation step towards token v changes the downstream loss ℓ."""
    model, tokenizer = proxy
    traces = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    ids = torch.tensor([tokenizer(PROMPTS[1])["input_ids"]])
    delta = AntidistillationPenalty(model, gradient, eps=1e-3, method="jvp")(ids)[0]

    def loss_after_step_on(token: int) -> float:
        student = AutoModelForCausalLM.from_pretrained(model.config._name_or_path)
        optimizer = torch.optim.SGD(student.parameters(), lr=1e-2)
        nll = -torch.log_softmax(student(input_ids=ids).logits[0, -1], dim=-1)[token]
        nll.backward()
        optimizer.step()
        return ProxyGradient.compute(student, tokenizer, traces, progress=False).metadata["loss"]

    assert loss_after_step_on(int(delta.argmax())) > loss_after_step_on(int(delta.argmin()))


@pytest.mark.parametrize("proxy_name", ["proxy", "proxy_gpt2"])
def test_cached_equals_uncached_over_left_padded_generation(tiny_dir, proxy_name):
    model, tokenizer = load(tiny_dir, proxy_name)
    traces = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)]
    gradient = ProxyGradient.compute(model, tokenizer, traces, progress=False)
    cached = AntidistillationPenalty(model, gradient, eps=1e-3)
    uncached = AntidistillationPenalty(model, gradient, eps=1e-3)
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    generator = torch.Generator().manual_seed(0)
    batched_steps = []
    for _ in range(6):
        uncached.reset()
        a, b = cached(ids, mask), uncached(ids, mask)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
        batched_steps.append(a)
        new = torch.randint(3, len(tokenizer), (len(rows), 1), generator=generator)
        ids, mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    # each prompt alone (no padding) gives the same Δ as its row in the padded batch
    for row in range(len(rows)):
        single = AntidistillationPenalty(model, gradient, eps=1e-3)
        alone = ids[row, width - len(rows[row]):].unsqueeze(0)
        for step, batched in enumerate(batched_steps):
            prefix = alone[:, : len(rows[row]) + step]
            torch.testing.assert_close(single(prefix)[0], batched[row], rtol=1e-4, atol=1e-3)


def test_cache_is_dropped_when_a_call_does_not_follow_on(proxy, gradient):
    model, tokenizer = proxy
    penalty = AntidistillationPenalty(model, gradient, eps=1e-3)
    first = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    other = torch.tensor([tokenizer(PROMPTS[2])["input_ids"]])
    penalty(first)
    fresh = AntidistillationPenalty(model, gradient, eps=1e-3)
    torch.testing.assert_close(penalty(other), fresh(other))


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(mask)[:, -2:].tolist() == [[0, 1], [2, 3]]


def test_bad_eps_and_method(proxy, gradient):
    model, _ = proxy
    for eps in (0, -1e-3, float("nan")):
        with pytest.raises(AntidistillError, match="eps"):
            AntidistillationPenalty(model, gradient, eps=eps)
    with pytest.raises(AntidistillError, match="method"):
        AntidistillationPenalty(model, gradient, method="exact")


def test_gradient_of_another_model_is_rejected(tiny_dir, gradient, tmp_path):
    other, _ = load(tiny_dir, "proxy_gpt2")
    gradient.save(tmp_path / "g")
    with pytest.raises(GradientMismatchError, match="Recompute it for this proxy"):
        AntidistillationPenalty(other, tmp_path / "g")
    with pytest.raises(GradientMismatchError, match="antidistill gradient"):
        AntidistillationPenalty(other, tmp_path / "missing")


def test_non_finite_penalty_names_step_and_dtype(proxy, gradient):
    model, tokenizer = proxy
    poisoned = ProxyGradient({k: torch.full_like(v, float("inf")) for k, v in gradient.tensors.items()})
    penalty = AntidistillationPenalty(model, poisoned, eps=1e-3)
    with pytest.raises(NonFinitePenaltyError, match=r"step 1 .*float32"):
        penalty(torch.tensor([tokenizer(PROMPTS[0])["input_ids"]]))
