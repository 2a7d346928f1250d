"""The antidistillation penalty Δ: how much each next token would raise the proxy's downstream loss.

    Δ(v) = ⟨g, ∇_θ log p(v | x; θ_P)⟩ ≈ [log p(v | x; θ_P + εg) − log p(v | x; θ_P − εg)] / (2ε)

`fd` keeps the two perturbed proxy copies θ_P ± εg with one KV cache, so a decoding step costs two single-token
proxy forwards. Where the architecture allows it (every parameter sits in a leaf module: true of HF decoders),
both copies run as *one* batched forward: the batch is doubled, and every weight is stored stacked as [2, ...]
so that the first half of the rows meets θ_P + εg and the second half θ_P − εg (one `bmm` per linear layer, one
pass of the model's Python code, attention and cache bookkeeping instead of two). Otherwise it falls back to two
separate copies called one after the other. Either way the memory is two proxy copies plus their caches.

`head` (opt-in, cheaper) is the exact directional derivative restricted to the unembedding matrix W:
Δ_head(v) = (G h)_v − Σ_u p_u (G h)_u, with G = g's block for W and h the proxy's final hidden state: one cached
proxy forward and one extra [vocab × hidden] product per step instead of two proxy forwards.

`jvp` computes the exact full directional derivative with forward-mode AD (one model and a tangent); it
re-runs the whole prefix every step (forward-mode tangents have no KV cache) and serves as the reference.
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
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from .errors import AntidistillError, NonFinitePenaltyError
from .gradient import ProxyGradient
from .names import PENALTY_METHODS

PenaltyMethod = Literal["fd", "jvp", "head"]
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


def _param_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its canonical name (the first one, as in `named_parameters()` and in the gradient)."""
    names: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), name)
    return names


def _cast_buffers(model: nn.Module, dtype: torch.dtype, device: torch.device | None = None) -> None:
    """Floating buffers follow the proxy dtype, except rotary frequencies (kept in fp32, as HF does); all of them
    move to `device` when given (the copies may live on another device than the source proxy)."""
    for buffer_name, buffer in model.named_buffers():
        if buffer.is_floating_point() and "inv_freq" not in buffer_name:
            buffer.data = buffer.data.to(device=device, dtype=dtype)
        elif device is not None:
            buffer.data = buffer.data.to(device)


class _TwinUnsupported(Exception):
    """The proxy cannot run its two copies as one batched forward (the caller falls back to two copies)."""


class _StackedLinear(nn.Module):
    """`nn.Linear` for both copies; rows of the first batch half use copy 0, the rest copy 1.

    The weight is [2, out, in] as in nn.Linear, or with `transposed=True` [2, in, out] contiguous: measured on CPU
    (MKL), the wide unembedding's product with the few rows of a decoding step is up to 2x faster in the
    transposed layout, while the square-ish layer weights are ~10% faster in nn.Linear's.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.unsqueeze(1), requires_grad=False)
        self.transposed = transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(2, -1, x.shape[-1])  # batch-major: the first half of all rows is the first batch half
        weight = self.weight if self.transposed else self.weight.transpose(1, 2)
        out = torch.bmm(rows, weight) if self.bias is None else torch.baddbmm(self.bias, rows, weight)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class _StackedConv1D(nn.Module):
    """GPT-2's `Conv1D` (y = x W + b, W [in, out]) for both copies: weight [2, in, out]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias.unsqueeze(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.baddbmm(self.bias, x.reshape(2, -1, x.shape[-1]), self.weight)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class _StackedEmbedding(nn.Module):
    """`nn.Embedding` for both copies: one [2·V, d] table; ids of the second batch half are offset by V.

    With `columns=True` the table is a tied unembedding stored as [2, d, V] (the layout its linear layer wants):
    the few looked-up rows are then gathered as columns, which keeps one copy of the tensor in memory.
    """

    def __init__(self, weight: torch.Tensor, columns: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.columns = columns

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = ids.shape[0]
        if rows % 2:
            raise _TwinUnsupported("an embedding is called without the doubled batch")
        if self.columns:
            half = rows // 2
            parts = [self.weight[i].index_select(1, part.reshape(-1)).T.reshape(*part.shape, -1)
                     for i, part in enumerate((ids[:half], ids[half:]))]
            return torch.cat(parts)
        vocab = self.weight.shape[1]
        offset = torch.arange(2, device=ids.device).repeat_interleave(rows // 2) * vocab
        return F.embedding(ids + offset.view(-1, *([1] * (ids.dim() - 1))), self.weight.view(-1, self.weight.shape[-1]))


class _SplitLeaf(nn.Module):
    """Any other leaf with parameters (norms, ...): its two perturbed copies, each on its half of the batch."""

    def __init__(self, plus: nn.Module, minus: nn.Module) -> None:
        super().__init__()
        self.plus, self.minus = plus, minus

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            raise _TwinUnsupported(f"{type(self.plus).__name__} takes more than one tensor")
        x = args[0]
        half = x.shape[0] // 2
        a, b = self.plus(x[:half]), self.minus(x[half:])
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise _TwinUnsupported(f"{type(self.plus).__name__} does not return one tensor")
        return torch.cat([a, b])


def _conv1d_class() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - very old or very new transformers
        return None
    return Conv1D


class _PerturbedWeights:
    """θ_P ± εg for each proxy tensor, added in fp32 and cast once; tied tensors are built once and shared.

    A linear unembedding is stacked transposed, [2, in, out] (see `_StackedLinear`), unless `transposed_head` is
    off; everything else as [2, *shape]. `natural()` gives the [2, *shape] view of either. The sums are formed on
    `device` one tensor at a time, so the source proxy can stay elsewhere (on the CPU) in fp32.
    """

    def __init__(self, proxy: PreTrainedModel, gradient: ProxyGradient, eps: float, dtype: torch.dtype,
                 device: torch.device, transposed_head: bool = True) -> None:
        self.names = _param_names(proxy)
        self.gradient, self.eps, self.dtype, self.device = gradient, eps, dtype, device
        head = proxy.get_output_embeddings()
        self.transposed = {id(head.weight)} if transposed_head and type(head) is nn.Linear else set()
        self._stacked: dict[int, torch.Tensor] = {}

    def stacked(self, parameter: torch.Tensor) -> torch.Tensor:
        """Index 0 is θ + εg, index 1 is θ − εg."""
        key = id(parameter)
        if key not in self._stacked:
            step = self.gradient.tensors[self.names[key]].to(self.device, torch.float32)
            base = parameter.detach().to(self.device, torch.float32)
            pair = [(base + self.eps * step).to(self.dtype), (base - self.eps * step).to(self.dtype)]
            if key in self.transposed:
                pair = [t.T for t in pair]
            self._stacked[key] = torch.stack(pair)
        return self._stacked[key]

    def natural(self, parameter: torch.Tensor) -> torch.Tensor:
        stacked = self.stacked(parameter)
        return stacked.transpose(1, 2) if id(parameter) in self.transposed else stacked


def _build_twin(proxy: PreTrainedModel, weights: _PerturbedWeights) -> tuple[PreTrainedModel, dict[str, torch.Tensor],
                                                                             dict[str, torch.Tensor]]:
    """The proxy with every parameterised leaf replaced by its two-copy version, plus θ₊ and θ₋ by name.

    The parameters are not deep-copied (a memo maps them to empty placeholders), so building the twin needs no
    third proxy copy in memory.
    """
    placeholders = {id(p): nn.Parameter(torch.empty(0), requires_grad=False) for p in proxy.parameters()}
    twin = copy.deepcopy(proxy, memo=placeholders).eval()
    originals = dict(proxy.named_modules())
    conv1d = _conv1d_class()
    plus: dict[str, torch.Tensor] = {}
    minus: dict[str, torch.Tensor] = {}
    for name, module in list(twin.named_modules()):
        own = dict(originals[name].named_parameters(recurse=False))
        if not own:
            continue
        if any(True for _ in module.children()):
            raise _TwinUnsupported(f"module {name!r} holds parameters and submodules")
        for value in own.values():  # by canonical name: tied tensors appear once
            natural = weights.natural(value)
            plus[weights.names[id(value)]], minus[weights.names[id(value)]] = natural[0], natural[1]
        kind = type(module)
        replacement: nn.Module
        if kind is nn.Linear and set(own) <= {"weight", "bias"}:
            bias = weights.stacked(own["bias"]) if "bias" in own else None
            replacement = _StackedLinear(weights.stacked(own["weight"]), bias,
                                         transposed=id(own["weight"]) in weights.transposed)
        elif kind is nn.Embedding and set(own) == {"weight"} and module.max_norm is None:
            columns = id(own["weight"]) in weights.transposed  # tied to a linear unembedding
            replacement = _StackedEmbedding(weights.stacked(own["weight"]), columns=columns)
        elif conv1d is not None and kind is conv1d and set(own) == {"weight", "bias"}:
            replacement = _StackedConv1D(weights.stacked(own["weight"]), weights.stacked(own["bias"]))
        else:
            copies = []
            for index in (0, 1):
                leaf = copy.deepcopy(module)
                for key, value in own.items():
                    setattr(leaf, key, nn.Parameter(weights.natural(value)[index], requires_grad=False))
                copies.append(leaf)
            replacement = _SplitLeaf(*copies)
        parent_name, _, attribute = name.rpartition(".")
        setattr(twin.get_submodule(parent_name) if parent_name else twin, attribute, replacement)
    _cast_buffers(twin, weights.dtype, weights.device)
    twin.requires_grad_(False)
    return twin, plus, minus


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
        self._cache_keyword = cache_keyword(proxy)
        #: how the fd copies run: "batched" (one forward over a doubled batch) or "sequential" (two forwards)
        self.batching: str | None = None
        if method == "fd":
            self._build_finite_difference(proxy)
        elif method == "head":
            self._build_head(proxy)
        else:
            self._build_jvp(proxy)
        self.reset()

    @property
    def grad_norm(self) -> float:
        return self.gradient.norm

    def describe(self) -> dict[str, object]:
        """The settings to record next to every run."""
        return {"penalty": self.method, "eps": self.eps, "grad_norm": self.grad_norm,
                "proxy": self.proxy_name, "proxy_dtype": str(self.dtype).removeprefix("torch.")}

    # -- construction -------------------------------------------------------------------------------------------

    def _build_finite_difference(self, proxy: PreTrainedModel) -> None:
        weights = _PerturbedWeights(proxy, self.gradient, self.eps, self.dtype, self.device, self.transposed_head)
        try:
            twin, plus, minus = _build_twin(proxy, weights)
            self._check_twin(twin, proxy, plus, minus)
        except (_TwinUnsupported, RuntimeError, TypeError, ValueError, IndexError) as error:
            warnings.warn(f"the proxy's two perturbed copies cannot run as one batched forward ({error}); "
                          "running them one after the other (same result, more per-step overhead)", stacklevel=3)
            del weights
            self._twin = None
            self._plus = self._perturbed_copy(proxy, +self.eps)
            self._minus = self._perturbed_copy(proxy, -self.eps)
            self.batching = "sequential"
        else:
            self._twin = twin
            self.batching = "batched"

    @torch.no_grad()
    def _check_twin(self, twin: PreTrainedModel, proxy: PreTrainedModel, plus: dict[str, torch.Tensor],
                    minus: dict[str, torch.Tensor]) -> None:
        """Two prompts and one cached step through the twin must equal each copy run on its own.

        Catches architectures whose layers mix batch rows or do not keep the batch first (e.g. token-sorting
        mixture-of-experts): the twin's results would be wrong, so we use two separate copies instead.
        """
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.vocab_size, (2, 4), generator=generator).to(self.device)
        buffers = {n: (b.to(self.device, self.dtype) if b.is_floating_point() and "inv_freq" not in n
                       else b.to(self.device)) for n, b in proxy.named_buffers()}
        positions = torch.arange(4, device=self.device).expand(2, 4)
        mask = torch.ones_like(ids)
        chunks = (slice(0, 3), slice(3, 4))
        cache = DynamicCache()
        kw = self._cache_keyword
        twin_logits = [twin(input_ids=ids[:, part], attention_mask=mask[:, : part.stop],
                            position_ids=positions[:, part], use_cache=True, **{kw: cache}).logits[:, -1]
                       for part in chunks]
        for row, params in ((0, plus), (1, minus)):
            own_cache = DynamicCache()
            for step, part in enumerate(chunks):
                inputs = {"input_ids": ids[row:row + 1, part], "attention_mask": mask[row:row + 1, : part.stop],
                          "position_ids": positions[row:row + 1, part], "use_cache": True, kw: own_cache}
                expected = torch.func.functional_call(proxy, (params, buffers), args=(),
                                                      kwargs=inputs).logits[0, -1].float()
                got = twin_logits[step][row].float()
                if not bool(torch.isfinite(expected).all()):
                    return  # nothing to compare: the first real call reports the NaN/inf penalty
                scale = expected.abs().max().item() + 1.0
                tolerance = 1e-4 if self.dtype == torch.float32 else 5e-2
                if not (got - expected).abs().max().item() <= tolerance * scale:
                    raise _TwinUnsupported("the batched copies disagree with separate copies on a test input")

    def _perturbed_copy(self, proxy: PreTrainedModel, scale: float) -> PreTrainedModel:
        """θ_P + scale·g, added in fp32 and cast once to the proxy dtype."""
        model = copy.deepcopy(proxy).eval()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                step = self.gradient.tensors[name].to(self.device, torch.float32)
                parameter.data = (parameter.data.to(self.device, torch.float32) + scale * step).to(self.dtype)
            _cast_buffers(model, self.dtype, self.device)
        model.requires_grad_(False)
        return model

    def _build_head(self, proxy: PreTrainedModel) -> None:
        head = proxy.get_output_embeddings()
        if type(head) is not nn.Linear:
            raise AntidistillError(f"penalty 'head' needs a linear unembedding, but {self.proxy_name} has "
                                   f"{type(head).__name__}: use --penalty fd")
        for attribute in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
            if getattr(proxy.config, attribute, None) not in (None, 1, 1.0):
                raise AntidistillError(f"penalty 'head' needs logits = W·h, but {self.proxy_name} rescales its "
                                       f"logits ({attribute}): use --penalty fd")
        names = _param_names(proxy)
        path = next(name for name, module in proxy.named_modules() if module is head)
        gradient = self.gradient.tensors[names[id(head.weight)]][: self.vocab_size].to(self.device, self.dtype)
        bias_gradient = (None if head.bias is None else
                         self.gradient.tensors[names[id(head.bias)]][: self.vocab_size].to(self.device).float())
        fused = _TangentHead(head.weight.detach().to(self.device, self.dtype), gradient,
                             None if head.bias is None else head.bias.detach().to(self.device, self.dtype),
                             bias_gradient)
        # copy the proxy without its unembedding (replaced by the fused head), unless the input embedding is tied
        # to it and needs it
        tied = any(p is head.weight for n, p in proxy.named_parameters(remove_duplicate=False)
                   if not n.startswith(path + "."))
        skip = [t for t in (head.weight, head.bias) if t is not None and not (tied and t is head.weight)]
        model = copy.deepcopy(proxy, memo={id(t): nn.Parameter(torch.empty(0), requires_grad=False) for t in skip})
        parent_name, _, attribute = path.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, fused)
        for parameter in model.parameters():
            parameter.data = parameter.data.to(self.device, self.dtype)
        _cast_buffers(model, self.dtype, self.device)
        self._proxy = model.eval().requires_grad_(False)
        self._head = fused

    def _build_jvp(self, proxy: PreTrainedModel) -> None:
        self._proxy = copy.deepcopy(proxy).to(self.device, self.dtype).eval()
        if hasattr(self._proxy, "set_attn_implementation"):
            self._proxy.set_attn_implementation("eager")  # every op of the eager path has a forward-mode rule
        self._params = {n: p.detach() for n, p in self._proxy.named_parameters()}
        self._buffers = dict(self._proxy.named_buffers())
        # once, on the proxy's device: converting g at every step would copy it host -> device every token
        self._tangents = {n: self.gradient.tensors[n].to(self.device, p.dtype) for n, p in self._params.items()}

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
        if self.method == "jvp":  # the slow exact reference: one sync per step costs it nothing
            delta = self._jvp(input_ids, attention_mask)
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
        cache = tuple(DynamicCache() for _ in range(2 if self.batching == "sequential" else 1))
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
        positions = position_ids_from_mask(attention_mask)
        new_ids, new_positions = input_ids[:, start:], positions[:, start:]
        kw = self._cache_keyword
        if self.method == "head":
            out = self._proxy(input_ids=new_ids, attention_mask=attention_mask, position_ids=new_positions,
                              use_cache=True, logits_to_keep=1, **{kw: cache[0]})
            return self._head_delta(out.logits[:, -1, : self.vocab_size])
        if self._twin is not None:
            double = lambda t: torch.cat([t, t])  # noqa: E731
            out = self._twin(input_ids=double(new_ids), attention_mask=double(attention_mask),
                             position_ids=double(new_positions), use_cache=True, logits_to_keep=1,
                             **{kw: cache[0]})
            # one fused log-softmax over both copies' rows (faster than logsumexp arithmetic), then one pass
            log_probs = torch.log_softmax(out.logits[:, -1, : self.vocab_size].float(), dim=-1)
            rows = input_ids.shape[0]
            return (log_probs[:rows] - log_probs[rows:]).mul_(0.5 / self.eps)
        plus, minus = (
            torch.log_softmax(model(input_ids=new_ids, attention_mask=attention_mask, position_ids=new_positions,
                                    use_cache=True, logits_to_keep=1, **{kw: part}).logits[:, -1, : self.vocab_size]
                              .float(), dim=-1)
            for model, part in zip((self._plus, self._minus), cache))
        return (plus - minus).mul_(0.5 / self.eps)

    def _head_delta(self, logits: torch.Tensor) -> torch.Tensor:
        """(G h)_v − Σ_u p_u (G h)_u: the derivative of log p(v) along g's unembedding block."""
        tangent, self._head.tangent = self._head.tangent, None
        assert tangent is not None
        tangent = tangent[:, -1].float()
        probs = torch.softmax(logits.float(), dim=-1)
        return tangent.sub_((probs * tangent).sum(-1, keepdim=True))

    def _jvp(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model, buffers = self._proxy, self._buffers
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": position_ids_from_mask(attention_mask), "use_cache": False, "logits_to_keep": 1}

        def last_log_probs(parameters: dict[str, torch.Tensor]) -> torch.Tensor:
            out = torch.func.functional_call(model, (parameters, buffers), args=(), kwargs=kwargs)
            return torch.log_softmax(out.logits[:, -1, : self.vocab_size].float(), dim=-1)

        _, delta = torch.func.jvp(last_log_probs, (self._params,), (self._tangents,))
        return delta.float()
