"""Two baselines, written from the description of the paper's released code in shared/DESIGN.md.

`reference`: two separately built proxy copies θ_P ± εg, each behind a small cache wrapper (the first call runs
the whole prompt and keeps the KV cache, later calls feed only the newest token), called one after the other from
a logits processor that adds λ_code/(2ε)·(z₊ − z₋) to the teacher's raw logits; HF then divides by τ and applies
top-p. `nocache`: the same processor, but each copy re-runs the whole prefix at every step, as a straightforward
logits processor does (given `logits_to_keep=1`, so only the prefix recomputation is measured, not the logits of
every past position).

Both sample from the same distribution as our `ads` sampler: z₊ − z₋ differs from
log p₊ − log p₋ by a constant per row, and λ_code = τ·λ. Their known faults that do not change speed are not
reproduced: caches are reset before each generation, and prompts in the benchmark are unpadded (the reference
passes no position ids).
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache, LogitsProcessor, PreTrainedModel

from harness_plugin.decoding import cache_keyword
from harness_plugin.gradient import ProxyGradient


def proxy_copy(proxy: PreTrainedModel, dtype: torch.dtype, device: torch.device | None = None,
               gradient: ProxyGradient | None = None, scale: float = 0.0) -> PreTrainedModel:
    """A separate full copy θ_P + scale·g on `device`: added in fp32, cast once to `dtype` (the reference's
    recipe; without a gradient, the proxy itself). Built tensor by tensor from the source, which may stay on the
    CPU in fp32: no whole second fp32 copy is made."""
    device = device if device is not None else next(proxy.parameters()).device
    names: dict[int, str] = {}
    for name, parameter in proxy.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), name)  # the canonical (first) name, as in the gradient
    placeholders = {id(p): torch.nn.Parameter(torch.empty(0), requires_grad=False) for p in proxy.parameters()}
    model = copy.deepcopy(proxy, memo=placeholders).eval()
    with torch.no_grad():
        for original in proxy.parameters():
            value = original.detach().to(device, torch.float32)
            if gradient is not None and scale:
                value = value + scale * gradient.tensors[names[id(original)]].to(device, torch.float32)
            placeholders[id(original)].data = value.to(dtype)  # tied tensors share their placeholder
        for name, buffer in model.named_buffers():
            cast = buffer.is_floating_point() and "inv_freq" not in name
            buffer.data = buffer.data.to(device=device, dtype=dtype if cast else None)
    return model.requires_grad_(False)


def perturbed_proxy(proxy: PreTrainedModel, gradient: ProxyGradient, scale: float,
                    dtype: torch.dtype, device: torch.device | None = None) -> PreTrainedModel:
    """The reference's copy θ_P + scale·g (see `proxy_copy`)."""
    return proxy_copy(proxy, dtype, device, gradient, scale)


class ProxyAlone:
    """One proxy copy doing the work a penalty copy does, and nothing else: the whole prompt once, then one token
    per step with its KV cache and the last position's logits (as many forwards as the teacher's `generate`).

    Its time per token is `t_proxy` of the measured floor. The tokens fed are random (speed does not depend on
    them) and drawn before the first forward; no sampling loop is charged, so the floor is the strictest one.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.keyword = cache_keyword(model)

    @torch.no_grad()
    def run(self, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        tokens = torch.randint(0, vocab, (ids.shape[0], new_tokens), generator=generator).to(ids.device)
        cache = DynamicCache()
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1, **{self.keyword: cache}).logits
        for step in range(new_tokens - 1):  # the teacher's last sampled token needs no forward
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits = self.model(input_ids=tokens[:, step:step + 1], attention_mask=mask,
                                position_ids=positions[:, -1:] + step + 1, use_cache=True, logits_to_keep=1,
                                **{self.keyword: cache}).logits
        return logits


class CachedProxy:
    """The reference's wrapper: whole prompt on the first call, then only the newest token with the cache."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.keyword = cache_keyword(model)
        self.cache: DynamicCache | None = None

    def reset(self) -> None:
        self.cache = None

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            self.cache = DynamicCache()
            new = input_ids
        else:
            new = input_ids[:, -1:]
        out = self.model(input_ids=new, use_cache=True, **{self.keyword: self.cache})
        return out.logits[:, -1].float()


class FullPrefixProxy:
    """No cache: the whole prefix through the proxy at every step (last position's logits only)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()


class ProxyDifferenceProcessor(LogitsProcessor):
    """Adds λ_code/(2ε)·(z₊ − z₋) to the teacher's raw logits; rows past the real vocabulary get -inf.

    Use with `generate(temperature=τ, top_p=...)`: HF divides by τ and truncates afterwards.
    """

    def __init__(self, plus: CachedProxy | FullPrefixProxy, minus: CachedProxy | FullPrefixProxy,
                 lam_code: float, eps: float, vocab_size: int) -> None:
        self.plus, self.minus = plus, minus
        self.scale = lam_code / (2 * eps)
        self.vocab_size = vocab_size

    def start(self) -> None:
        """Forget the previous generation (the reference code never does: its caches go stale)."""
        self.plus.reset()
        self.minus.reset()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        plus = self.plus(input_ids)
        minus = self.minus(input_ids)
        vocab = self.vocab_size
        out = scores.float().clone()
        out[:, :vocab] += self.scale * (plus[:, :vocab] - minus[:, :vocab]).to(out.device)
        out[:, vocab:] = float("-inf")
        return out  # type: ignore[return-value]


def reference_processor(plus: PreTrainedModel, minus: PreTrainedModel, lam: float, tau: float, eps: float,
                        vocab_size: int) -> ProxyDifferenceProcessor:
    """The reference code's sampler: λ_code = τ·λ, both copies behind cache wrappers."""
    return ProxyDifferenceProcessor(CachedProxy(plus), CachedProxy(minus), tau * lam, eps, vocab_size)


def nocache_processor(plus: PreTrainedModel, minus: PreTrainedModel, lam: float, tau: float, eps: float,
                      vocab_size: int) -> ProxyDifferenceProcessor:
    """The same, re-running both copies over the whole prefix at every step."""
    return ProxyDifferenceProcessor(FullPrefixProxy(plus), FullPrefixProxy(minus), tau * lam, eps, vocab_size)
