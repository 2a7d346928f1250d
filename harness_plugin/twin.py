"""The proxy's two perturbed copies θ_P ± εg for the finite-difference penalty, built once per penalty.

Where the architecture allows it (every parameter sits in a leaf module: true of HF decoders), both copies run as
*one* batched forward, the "twin": the batch is doubled, and every weight is stored stacked as [2, ...] so that the
first half of the rows meets θ_P + εg and the second half θ_P − εg (one `bmm` per linear layer, one pass of the
model's Python code, attention and cache bookkeeping instead of two). `check_twin` proves it equal to two separate
copies on a test input; otherwise the caller falls back to `perturbed_copy` twice. Either way the memory is two
proxy copies plus their caches.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from .decoding import cache_keyword
from .gradient import ProxyGradient


def param_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its canonical name (the first one, as in `named_parameters()` and in the gradient)."""
    names: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), name)
    return names


def cast_buffers(model: nn.Module, dtype: torch.dtype, device: torch.device | None = None) -> None:
    """Floating buffers follow the proxy dtype, except rotary frequencies (kept in fp32, as HF does); all of them
    move to `device` when given (the copies may live on another device than the source proxy)."""
    for buffer_name, buffer in model.named_buffers():
        if buffer.is_floating_point() and "inv_freq" not in buffer_name:
            buffer.data = buffer.data.to(device=device, dtype=dtype)
        elif device is not None:
            buffer.data = buffer.data.to(device)


class TwinUnsupported(Exception):
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
            raise TwinUnsupported("an embedding is called without the doubled batch")
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
            raise TwinUnsupported(f"{type(self.plus).__name__} takes more than one tensor")
        x = args[0]
        half = x.shape[0] // 2
        a, b = self.plus(x[:half]), self.minus(x[half:])
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise TwinUnsupported(f"{type(self.plus).__name__} does not return one tensor")
        return torch.cat([a, b])


def _conv1d_class() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - very old or very new transformers
        return None
    return Conv1D


class PerturbedWeights:
    """θ_P ± εg for each proxy tensor, added in fp32 and cast once; tied tensors are built once and shared.

    A linear unembedding is stacked transposed, [2, in, out] (see `_StackedLinear`), unless `transposed_head` is
    off; everything else as [2, *shape]. `natural()` gives the [2, *shape] view of either. The sums are formed on
    `device` one tensor at a time, so the source proxy can stay elsewhere (on the CPU) in fp32.
    """

    def __init__(self, proxy: PreTrainedModel, gradient: ProxyGradient, eps: float, dtype: torch.dtype,
                 device: torch.device, transposed_head: bool = True) -> None:
        self.names = param_names(proxy)
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


def build_twin(proxy: PreTrainedModel, weights: PerturbedWeights) -> tuple[PreTrainedModel, dict[str, torch.Tensor],
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
            raise TwinUnsupported(f"module {name!r} holds parameters and submodules")
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
    cast_buffers(twin, weights.dtype, weights.device)
    twin.requires_grad_(False)
    return twin, plus, minus


@torch.no_grad()
def check_twin(twin: PreTrainedModel, proxy: PreTrainedModel, plus: dict[str, torch.Tensor],
               minus: dict[str, torch.Tensor], vocab_size: int, dtype: torch.dtype, device: torch.device) -> None:
    """Two prompts and one cached step through the twin must equal each copy run on its own.

    Catches architectures whose layers mix batch rows or do not keep the batch first (e.g. token-sorting
    mixture-of-experts): the twin's results would be wrong, so the caller uses two separate copies instead.
    """
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (2, 4), generator=generator).to(device)
    buffers = {n: (b.to(device, dtype) if b.is_floating_point() and "inv_freq" not in n else b.to(device))
               for n, b in proxy.named_buffers()}
    positions = torch.arange(4, device=device).expand(2, 4)
    mask = torch.ones_like(ids)
    chunks = (slice(0, 3), slice(3, 4))
    cache = DynamicCache()
    kw = cache_keyword(proxy)
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
            tolerance = 1e-4 if dtype == torch.float32 else 5e-2
            if not (got - expected).abs().max().item() <= tolerance * scale:
                raise TwinUnsupported("the batched copies disagree with separate copies on a test input")


def perturbed_copy(proxy: PreTrainedModel, gradient: ProxyGradient, scale: float, dtype: torch.dtype,
                   device: torch.device) -> PreTrainedModel:
    """θ_P + scale·g as a model of its own, added in fp32 and cast once to `dtype` (the fallback to the twin)."""
    model = copy.deepcopy(proxy).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            step = gradient.tensors[name].to(device, torch.float32)
            parameter.data = (parameter.data.to(device, torch.float32) + scale * step).to(dtype)
        cast_buffers(model, dtype, device)
    model.requires_grad_(False)
    return model
