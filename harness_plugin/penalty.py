"""The antidistillation penalty Δ: how much each next token would raise the proxy's downstream loss.

    Δ(v) = ⟨g, ∇_θ log p(v | x; θ_P)⟩ ≈ [log p(v | x; θ_P + εg) − log p(v | x; θ_P − εg)] / (2ε)

`fd` keeps the two perturbed proxy copies θ_P ± εg with one KV cache, so a decoding step costs two single-token
proxy forwards, run as one batched forward where the architecture allows it (`twin.py`).

`head` (opt-in, cheaper) is the exact directional derivative restricted to the unembedding matrix W:
Δ_head(v) = (G h)_v − Σ_u p_u (G h)_u, with G = g's block for W and h the proxy's final hidden state: one cached
proxy forward and one extra [vocab × hidden] product per step instead of two proxy forwards.

`jvp` computes the exact full directional derivative with forward-mode AD (one model and a tangent); it
re-runs the whole prefix every step (forward-mode tangents have no KV cache) and serves as the reference.

Each method is a small class (`FiniteDifferenceDelta`, `HeadDelta`, `JvpDelta`) that turns the new tokens of a
step into Δ; `AntidistillationPenalty` is the facade that checks its inputs, keeps the KV cache between calls and
reports NaN/inf or a broken continuation.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from . import twin
from .decoding import cache_keyword, position_ids_from_mask
from .errors import AntidistillError, NonFinitePenaltyError
from .gradient import ProxyGradient
from .loading import resolve_dtype
from .names import PENALTY_METHODS

PenaltyMethod = Literal["fd", "jvp", "head"]


def _as_gradient(gradient: ProxyGradient | Mapping[str, torch.Tensor] | str | os.PathLike[str],
                 proxy: torch.nn.Module) -> ProxyGradient:
    if isinstance(gradient, (str, os.PathLike)):
        return ProxyGradient.load(gradient, proxy=proxy)
    if not isinstance(gradient, ProxyGradient):
        gradient = ProxyGradient(dict(gradient))
    gradient.check_matches(proxy)
    return gradient


class FiniteDifferenceDelta:
    """Δ ≈ [log p(· | θ_P + εg) − log p(· | θ_P − εg)] / (2ε) from the two perturbed copies' cached forwards."""

    def __init__(self, proxy: PreTrainedModel, gradient: ProxyGradient, eps: float, vocab_size: int,
                 dtype: torch.dtype, device: torch.device, transposed_head: bool = True) -> None:
        self.eps, self.vocab_size = eps, vocab_size
        self.twin: PreTrainedModel | None = None
        self.copies: tuple[PreTrainedModel, PreTrainedModel] | None = None
        self.cache_keyword = cache_keyword(proxy)
        weights = twin.PerturbedWeights(proxy, gradient, eps, dtype, device, transposed_head)
        try:
            model, plus, minus = twin.build_twin(proxy, weights)
            twin.check_twin(model, proxy, plus, minus, vocab_size, dtype, device)
        except (twin.TwinUnsupported, RuntimeError, TypeError, ValueError, IndexError) as error:
            warnings.warn(f"the proxy's two perturbed copies cannot run as one batched forward ({error}); "
                          "running them one after the other (same result, more per-step overhead)", stacklevel=4)
            del weights
            self.copies = (twin.perturbed_copy(proxy, gradient, +eps, dtype, device),
                           twin.perturbed_copy(proxy, gradient, -eps, dtype, device))
        else:
            self.twin = model

    @property
    def batching(self) -> str:
        """How the copies run: "batched" (one forward over a doubled batch) or "sequential" (two forwards)."""
        return "batched" if self.twin is not None else "sequential"

    def new_cache(self) -> tuple[DynamicCache, ...]:
        return tuple(DynamicCache() for _ in range(1 if self.twin is not None else 2))

    def __call__(self, new_ids: torch.Tensor, attention_mask: torch.Tensor, new_positions: torch.Tensor,
                 cache: tuple[DynamicCache, ...]) -> torch.Tensor:
        kw = self.cache_keyword
        if self.twin is not None:
            double = lambda t: torch.cat([t, t])  # noqa: E731
            out = self.twin(input_ids=double(new_ids), attention_mask=double(attention_mask),
                            position_ids=double(new_positions), use_cache=True, logits_to_keep=1, **{kw: cache[0]})
            # one fused log-softmax over both copies' rows (faster than logsumexp arithmetic), then one pass
            log_probs = torch.log_softmax(out.logits[:, -1, : self.vocab_size].float(), dim=-1)
            rows = new_ids.shape[0]
            return (log_probs[:rows] - log_probs[rows:]).mul_(0.5 / self.eps)
        assert self.copies is not None
        plus, minus = (
            torch.log_softmax(model(input_ids=new_ids, attention_mask=attention_mask, position_ids=new_positions,
                                    use_cache=True, logits_to_keep=1, **{kw: part}).logits[:, -1, : self.vocab_size]
                              .float(), dim=-1)
            for model, part in zip(self.copies, cache))
        return (plus - minus).mul_(0.5 / self.eps)


class _TangentHead(nn.Module):
    """The proxy's unembedding fused with g's block for it: one product gives the logits W·h and G·h.

    The weight is [d, width + vocab], contiguous: columns [0, width) are Wᵀ, the rest Gᵀ (real vocabulary only).
    The model sees the logits; `tangent` keeps G·h (+ the bias gradient) for the penalty.
    """

    def __init__(self, weight: torch.Tensor, gradient: torch.Tensor, bias: torch.Tensor | None,
                 bias_gradient: torch.Tensor | None) -> None:
        super().__init__()
        self.width = weight.shape[0]
        self.weight = nn.Parameter(torch.cat([weight.T, gradient.T], dim=1).contiguous(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.bias_gradient = bias_gradient
        self.tangent: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = hidden @ self.weight
        logits, tangent = out[..., : self.width], out[..., self.width:]
        self.tangent = tangent if self.bias_gradient is None else tangent + self.bias_gradient
        return logits if self.bias is None else logits + self.bias


class _PendingCheck:
    """One step's verdicts computed on the device (Δ finite, the cache continued the right sequence).

    On CUDA they are copied to pinned host memory behind an event, so reading them later waits for that step
    alone, never for work queued after it (the teacher's next forward). Elsewhere they are read directly.
    """

    def __init__(self, step: int, flags: torch.Tensor) -> None:
        self.step = step
        self.event: torch.cuda.Event | None = None
        if flags.device.type == "cuda":
            self.flags = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            self.flags.copy_(flags, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(flags.device))
        else:
            self.flags = flags

    def read(self) -> tuple[bool, bool]:
        if self.event is not None:
            self.event.synchronize()
        finite, continued = (bool(x) for x in self.flags.tolist())
        return finite, continued


class HeadDelta:
    """Δ_head(v) = (G h)_v − Σ_u p_u (G h)_u: the exact derivative of log p(v) along g's unembedding block alone.

    One cached proxy forward whose unembedding is fused with G (`_TangentHead`), so a step costs one proxy forward
    and one wider product.
    """

    def __init__(self, proxy: PreTrainedModel, gradient: ProxyGradient, vocab_size: int, dtype: torch.dtype,
                 device: torch.device, proxy_name: str) -> None:
        head = proxy.get_output_embeddings()
        if type(head) is not nn.Linear:
            raise AntidistillError(f"penalty 'head' needs a linear unembedding, but {proxy_name} has "
                                   f"{type(head).__name__}: use --penalty fd")
        for attribute in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
            if getattr(proxy.config, attribute, None) not in (None, 1, 1.0):
                raise AntidistillError(f"penalty 'head' needs logits = W·h, but {proxy_name} rescales its "
                                       f"logits ({attribute}): use --penalty fd")
        self.vocab_size = vocab_size
        self.cache_keyword = cache_keyword(proxy)
        names = twin.param_names(proxy)
        path = next(name for name, module in proxy.named_modules() if module is head)
        block = gradient.tensors[names[id(head.weight)]][: vocab_size].to(device, dtype)
        bias_block = (None if head.bias is None else
                      gradient.tensors[names[id(head.bias)]][: vocab_size].to(device).float())
        fused = _TangentHead(head.weight.detach().to(device, dtype), block,
                             None if head.bias is None else head.bias.detach().to(device, dtype), bias_block)
        # copy the proxy without its unembedding (replaced by the fused head), unless the input embedding is tied
        # to it and needs it
        tied = any(p is head.weight for n, p in proxy.named_parameters(remove_duplicate=False)
                   if not n.startswith(path + "."))
        skip = [t for t in (head.weight, head.bias) if t is not None and not (tied and t is head.weight)]
        model = copy.deepcopy(proxy, memo={id(t): nn.Parameter(torch.empty(0), requires_grad=False) for t in skip})
        parent_name, _, attribute = path.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, fused)
        for parameter in model.parameters():
            parameter.data = parameter.data.to(device, dtype)
        twin.cast_buffers(model, dtype, device)
        self.proxy = model.eval().requires_grad_(False)
        self.head = fused

    def new_cache(self) -> tuple[DynamicCache, ...]:
        return (DynamicCache(),)

    def __call__(self, new_ids: torch.Tensor, attention_mask: torch.Tensor, new_positions: torch.Tensor,
                 cache: tuple[DynamicCache, ...]) -> torch.Tensor:
        out = self.proxy(input_ids=new_ids, attention_mask=attention_mask, position_ids=new_positions,
                         use_cache=True, logits_to_keep=1, **{self.cache_keyword: cache[0]})
        tangent, self.head.tangent = self.head.tangent, None
        assert tangent is not None
        tangent = tangent[:, -1].float()
        probs = torch.softmax(out.logits[:, -1, : self.vocab_size].float(), dim=-1)
        return tangent.sub_((probs * tangent).sum(-1, keepdim=True))


class JvpDelta:
    """The exact Δ by forward-mode AD along g (one model and a tangent); no KV cache, so every step re-runs the
    whole prefix: the slow reference the other methods are checked against."""

    def __init__(self, proxy: PreTrainedModel, gradient: ProxyGradient, vocab_size: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.vocab_size = vocab_size
        self.proxy = copy.deepcopy(proxy).to(device, dtype).eval()
        if hasattr(self.proxy, "set_attn_implementation"):
            self.proxy.set_attn_implementation("eager")  # every op of the eager path has a forward-mode rule
        self.params = {n: p.detach() for n, p in self.proxy.named_parameters()}
        self.buffers = dict(self.proxy.named_buffers())
        # once, on the proxy's device: converting g at every step would copy it host -> device every token
        self.tangents = {n: gradient.tensors[n].to(device, p.dtype) for n, p in self.params.items()}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model, buffers = self.proxy, self.buffers
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": position_ids_from_mask(attention_mask), "use_cache": False, "logits_to_keep": 1}

        def last_log_probs(parameters: dict[str, torch.Tensor]) -> torch.Tensor:
            out = torch.func.functional_call(model, (parameters, buffers), args=(), kwargs=kwargs)
            return torch.log_softmax(out.logits[:, -1, : self.vocab_size].float(), dim=-1)

        _, delta = torch.func.jvp(last_log_probs, (self.params,), (self.tangents,))
        return delta.float()


class AntidistillationPenalty:
    """Callable `(input_ids, attention_mask) -> Δ` for the last position, float32, shape [batch, vocab].

    Call `reset()` before each new generation. Caches are also dropped whenever a call does not continue the
    previous one (another batch size, a shorter or unrelated sequence), so a stale cache is never used.
    `method`: "fd" (default), "jvp" (exact, re-runs the prefix: slow) or "head" (exact for the unembedding
    alone, about half the cost of "fd").

    `device`: where the copies live (default: the proxy's), so a source proxy in fp32 can stay on the CPU while
    the copies are built on a GPU tensor by tensor. `transposed_head` (fd): store the twin's unembedding
    [2, in, out] (faster on CPU); off keeps nn.Linear's layout (an ablation of the perf benchmark).
    `defer_checks` (default: on CUDA): the per-step verdicts (Δ finite; the cache continued the right sequence)
    are read back one step later instead of stalling the host at every step; see `__call__` and `check()`.
    """

    def __init__(
        self,
        proxy: PreTrainedModel,
        gradient: ProxyGradient | Mapping[str, torch.Tensor] | str | os.PathLike[str],
        eps: float = 1e-2,
        method: PenaltyMethod = "fd",
        vocab_size: int | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        transposed_head: bool = True,
        defer_checks: bool | None = None,
    ) -> None:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise AntidistillError(f"eps must be a finite number > 0 (the finite-difference step), got {eps!r}")
        if method not in PENALTY_METHODS:
            raise AntidistillError(f"unknown penalty method {method!r}: use 'fd', 'jvp' or 'head'")
        self.gradient = _as_gradient(gradient, proxy)
        self.eps = float(eps)
        self.method: PenaltyMethod = method
        self.device = torch.device(device) if device is not None else next(proxy.parameters()).device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = resolve_dtype(dtype, self.device)
        self.transposed_head = bool(transposed_head)
        self.defer_checks = self.device.type == "cuda" if defer_checks is None else bool(defer_checks)
        self._pending: _PendingCheck | None = None
        width = proxy.get_output_embeddings().weight.shape[0]  # type: ignore[union-attr,operator]
        self.vocab_size = int(vocab_size or width)
        if self.vocab_size > width:
            raise AntidistillError(f"vocab_size {self.vocab_size} exceeds the proxy's {width} output rows")
        self.proxy_name = str(getattr(proxy.config, "_name_or_path", type(proxy).__name__))
        self.step = 0
        self.estimator: FiniteDifferenceDelta | HeadDelta | JvpDelta
        if method == "fd":
            self.estimator = FiniteDifferenceDelta(proxy, self.gradient, self.eps, self.vocab_size, self.dtype,
                                                   self.device, self.transposed_head)
        elif method == "head":
            self.estimator = HeadDelta(proxy, self.gradient, self.vocab_size, self.dtype, self.device,
                                       self.proxy_name)
        else:
            self.estimator = JvpDelta(proxy, self.gradient, self.vocab_size, self.dtype, self.device)
        self.reset()

    @property
    def batching(self) -> str | None:
        """How the fd copies run: "batched" (one forward over a doubled batch) or "sequential" (two forwards)."""
        return self.estimator.batching if isinstance(self.estimator, FiniteDifferenceDelta) else None

    @property
    def grad_norm(self) -> float:
        return self.gradient.norm

    def describe(self) -> dict[str, object]:
        """The settings to record next to every run."""
        return {"penalty": self.method, "eps": self.eps, "grad_norm": self.grad_norm,
                "proxy": self.proxy_name, "proxy_dtype": str(self.dtype).removeprefix("torch.")}

    # -- decoding -----------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all cached state; the next call runs the whole prompt.

        A verdict still pending from the previous generation (see `check()`) is read first and raises.
        """
        self.check()
        self._cache: tuple[DynamicCache, ...] | None = None
        self._seen: torch.Tensor | None = None
        self.step = 0

    def check(self) -> None:
        """Raise for a deferred verdict of an earlier step: NaN/inf in Δ, or a `continues=True` call that did not
        continue. Free when nothing is pending; call it after a generation (the logits processors' `finish()`
        does) so that the last step is checked too."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        finite, continued = pending.read()
        if not continued:
            raise AntidistillError(
                f"decoding step {pending.step} was called with continues=True, but its sequence does not extend the "
                "previous call's: call reset() (a logits processor's start()) before each new generation")
        if not finite:
            raise self._non_finite(pending.step)

    def _non_finite(self, step: int) -> NonFinitePenaltyError:
        return NonFinitePenaltyError(
            f"the antidistillation penalty has NaN/inf entries at decoding step {step} with the proxy in "
            f"{str(self.dtype).removeprefix('torch.')} (eps={self.eps}): run the proxy in float32 or bfloat16, "
            "or choose a larger eps.")

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 continues: bool = False) -> torch.Tensor:
        """Δ for the last position of every row.

        `continues=True` is the caller's promise that `input_ids` extends the previous call's sequence (as within
        one `generate()` after `reset()`). With `defer_checks` the prefix comparison and the NaN check then run
        on the device and are read back at the next call (or `check()`), so no step waits for the device; a NaN
        Δ is zeroed for that one step (a NaN probability would be a device-side assert in CUDA's sampler) and
        raises `NonFinitePenaltyError` naming its step. Without the promise, a call that does not continue the
        previous one is detected at once and recomputed from the whole sequence (one host sync per step).
        """
        self.check()  # the previous step's verdict: finished on the device by now, so reading it does not stall
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        if isinstance(self.estimator, JvpDelta):  # the slow exact reference: one sync per step costs it nothing
            delta = self.estimator(input_ids, attention_mask)
            finite: bool | None = bool(torch.isfinite(delta).all())
        else:
            delta, finite = self._cached(input_ids, attention_mask, continues)
        self.step += 1
        if finite is False:
            raise self._non_finite(self.step)
        return delta

    def _cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                continues: bool = False) -> tuple[torch.Tensor, bool | None]:
        """Δ from the cached proxy state, and whether it is finite (None: deferred to the next call).

        When the call looks like a continuation (same batch, longer sequence) we run on the cache at once and
        check that the prefix really matches in the same synchronisation as the NaN check; on a mismatch (rare:
        a caller reusing the penalty without `reset()`), we start again from the whole sequence. With
        `continues` and `defer_checks`, both checks are deferred instead (no synchronisation at all).
        """
        seen = self._seen
        resumable = (self._cache is not None and seen is not None and seen.shape[0] == input_ids.shape[0]
                     and input_ids.shape[1] > seen.shape[1])
        if continues and self._cache is not None and not resumable:
            raise AntidistillError(
                "continues=True, but the sequence is not a longer one of the same batch: call reset() (a logits "
                "processor's start()) before each new generation")
        if resumable:
            assert seen is not None and self._cache is not None
            start = seen.shape[1]
            same_prefix = (input_ids[:, :start] == seen).all()
            delta = self._step(input_ids, attention_mask, start, self._cache)
            if continues and self.defer_checks:
                self._seen = input_ids
                return self._defer(delta, same_prefix), None
            prefix_ok, finite = torch.stack([same_prefix, torch.isfinite(delta).all()]).tolist()
            if prefix_ok:
                self._seen = input_ids
                return delta, bool(finite)
        assert not isinstance(self.estimator, JvpDelta)
        cache = self.estimator.new_cache()
        delta = self._step(input_ids, attention_mask, 0, cache)
        self._cache, self._seen = cache, input_ids
        if self.defer_checks:
            return self._defer(delta, None), None
        return delta, bool(torch.isfinite(delta).all())

    def _defer(self, delta: torch.Tensor, same_prefix: torch.Tensor | None) -> torch.Tensor:
        finite = torch.isfinite(delta).all()
        continued = torch.ones_like(finite) if same_prefix is None else same_prefix
        self._pending = _PendingCheck(self.step + 1, torch.stack([finite, continued]))
        return delta.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)

    @torch.no_grad()
    def _step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
              cache: tuple[DynamicCache, ...]) -> torch.Tensor:
        """Δ from the tokens after `start`, continuing `cache` (which then holds the whole sequence)."""
        assert not isinstance(self.estimator, JvpDelta)
        positions = position_ids_from_mask(attention_mask)
        return self.estimator(input_ids[:, start:], attention_mask, positions[:, start:], cache)
