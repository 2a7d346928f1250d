"""The antidistillation penalty Δ: how much each next token would raise the proxy's downstream loss.

    Δ(v) = ⟨g, ∇_θ log p(v | x; θ_P)⟩ ≈ [log p(v | x; θ_P + εg) − log p(v | x; θ_P − εg)] / (2ε)

`fd` keeps two perturbed proxy copies, each with its own KV cache, so a decoding step costs two single-token proxy
forwards. `jvp` computes the exact directional derivative with forward-mode AD (one model and a tangent); it
re-runs the whole prefix every step and serves as the reference for `fd`.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import warnings
from collections.abc import Mapping
from typing import Literal

import torch
from transformers import DynamicCache, PreTrainedModel

from .errors import AntidistillError, NonFinitePenaltyError
from .gradient import ProxyGradient

PenaltyMethod = Literal["fd", "jvp"]
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The proxy dtype: fp32 on CPU, bf16 on CUDA unless asked otherwise; fp16 warns about overflow."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise AntidistillError(f"unknown proxy dtype {dtype!r}: use one of float32, bfloat16, float16")
        dtype = _DTYPES[dtype]
    if dtype == torch.float16:
        warnings.warn(
            "an fp16 proxy can overflow to inf/NaN logits (the reference code's failure mode); "
            "prefer bfloat16 or float32", stacklevel=3)
    return dtype


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift absolute positions."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def cache_keyword(model: torch.nn.Module) -> str:
    """`cache` in transformers >= 5.x (where `past_key_values` is deprecated), else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _as_gradient(gradient: ProxyGradient | Mapping[str, torch.Tensor] | str | os.PathLike[str],
                 proxy: torch.nn.Module) -> ProxyGradient:
    if isinstance(gradient, (str, os.PathLike)):
        return ProxyGradient.load(gradient, proxy=proxy)
    if not isinstance(gradient, ProxyGradient):
        gradient = ProxyGradient(dict(gradient))
    gradient.check_matches(proxy)
    return gradient


class AntidistillationPenalty:
    """Callable `(input_ids, attention_mask) -> Δ` for the last position, float32, shape [batch, vocab].

    Call `reset()` before each new generation. Caches are also dropped whenever a call does not continue the
    previous one (another batch size, a shorter or unrelated sequence), so a stale cache is never used.
    """

    def __init__(
        self,
        proxy: PreTrainedModel,
        gradient: ProxyGradient | Mapping[str, torch.Tensor] | str | os.PathLike[str],
        eps: float = 1e-2,
        method: PenaltyMethod = "fd",
        vocab_size: int | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise AntidistillError(f"eps must be a finite number > 0 (the finite-difference step), got {eps!r}")
        if method not in ("fd", "jvp"):
            raise AntidistillError(f"unknown penalty method {method!r}: use 'fd' or 'jvp'")
        self.gradient = _as_gradient(gradient, proxy)
        self.eps = float(eps)
        self.method: PenaltyMethod = method
        self.device = next(proxy.parameters()).device
        self.dtype = resolve_dtype(dtype, self.device)
        width = proxy.get_output_embeddings().weight.shape[0]  # type: ignore[union-attr,operator]
        self.vocab_size = int(vocab_size or width)
        if self.vocab_size > width:
            raise AntidistillError(f"vocab_size {self.vocab_size} exceeds the proxy's {width} output rows")
        self.proxy_name = str(getattr(proxy.config, "_name_or_path", type(proxy).__name__))
        self.step = 0
        if method == "fd":
            self._plus = self._perturbed_copy(proxy, +self.eps)
            self._minus = self._perturbed_copy(proxy, -self.eps)
            self._cache_keyword = cache_keyword(proxy)
        else:
            self._proxy = copy.deepcopy(proxy).to(self.dtype).eval()
            if hasattr(self._proxy, "set_attn_implementation"):
                self._proxy.set_attn_implementation("eager")  # every op of the eager path has a forward-mode rule
        self.reset()

    @property
    def grad_norm(self) -> float:
        return self.gradient.norm

    def describe(self) -> dict[str, object]:
        """The settings to record next to every run."""
        return {"penalty": self.method, "eps": self.eps, "grad_norm": self.grad_norm,
                "proxy": self.proxy_name, "proxy_dtype": str(self.dtype).removeprefix("torch.")}

    def _perturbed_copy(self, proxy: PreTrainedModel, scale: float) -> PreTrainedModel:
        """θ_P + scale·g, added in fp32 and cast once to the proxy dtype."""
        model = copy.deepcopy(proxy).eval()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                step = self.gradient.tensors[name].to(parameter.device)
                parameter.data = (parameter.data.float() + scale * step).to(self.dtype)
            for buffer_name, buffer in model.named_buffers():
                if buffer.is_floating_point() and "inv_freq" not in buffer_name:
                    buffer.data = buffer.data.to(self.dtype)
        model.requires_grad_(False)
        return model

    def reset(self) -> None:
        """Forget all cached state; the next call runs the whole prompt."""
        self._caches: tuple[DynamicCache, DynamicCache] | None = None
        self._seen: torch.Tensor | None = None
        self.step = 0

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        if self.method == "fd":
            delta = self._finite_difference(input_ids, attention_mask)
        else:
            delta = self._jvp(input_ids, attention_mask)
        self.step += 1
        if not bool(torch.isfinite(delta).all()):
            raise NonFinitePenaltyError(
                f"the antidistillation penalty has NaN/inf entries at decoding step {self.step} with the proxy in "
                f"{str(self.dtype).removeprefix('torch.')} (eps={self.eps}): run the proxy in float32 or bfloat16, "
                "or choose a larger eps.")
        return delta

    def _continues_cache(self, input_ids: torch.Tensor) -> bool:
        seen = self._seen
        return (
            self._caches is not None and seen is not None and seen.shape[0] == input_ids.shape[0]
            and input_ids.shape[1] > seen.shape[1] and torch.equal(input_ids[:, : seen.shape[1]], seen)
        )

    @torch.no_grad()
    def _finite_difference(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = position_ids_from_mask(attention_mask)
        if self._continues_cache(input_ids):
            assert self._caches is not None and self._seen is not None
            start = self._seen.shape[1]
            caches = self._caches
        else:
            start = 0
            caches = (DynamicCache(), DynamicCache())
        new_ids, new_positions = input_ids[:, start:], positions[:, start:]
        log_probs = []
        for model, cache in zip((self._plus, self._minus), caches):
            out = model(input_ids=new_ids, attention_mask=attention_mask, position_ids=new_positions,
                        use_cache=True, logits_to_keep=1, **{self._cache_keyword: cache})
            log_probs.append(torch.log_softmax(out.logits[:, -1, : self.vocab_size].float(), dim=-1))
        self._caches, self._seen = caches, input_ids
        return (log_probs[0] - log_probs[1]) / (2 * self.eps)

    def _jvp(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model = self._proxy
        params = {n: p.detach() for n, p in model.named_parameters()}
        buffers = {n: b for n, b in model.named_buffers()}
        tangents = {n: self.gradient.tensors[n].to(self.device, p.dtype) for n, p in params.items()}
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": position_ids_from_mask(attention_mask), "use_cache": False, "logits_to_keep": 1}

        def last_log_probs(parameters: dict[str, torch.Tensor]) -> torch.Tensor:
            out = torch.func.functional_call(model, (parameters, buffers), args=(), kwargs=kwargs)
            return torch.log_softmax(out.logits[:, -1, : self.vocab_size].float(), dim=-1)

        _, delta = torch.func.jvp(last_log_probs, (params,), (tangents,))
        return delta.float()
