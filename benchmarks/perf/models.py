"""The models a perf run times: random-initialised Llamas of realistic shape, or checkpoints; FLOPs and sizes.

Speed does not depend on the weights, so random models with the shapes of real ones measure what matters
without a download. FLOPs per token are counted from the matrix multiplies a decoding step does (2 per weight of
every linear layer, the unembedding included, the embedding lookup not), which is the standard estimate; the
attention over the context adds a term that grows with length and is reported separately.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from harness_plugin.gradient import ProxyGradient


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int

    def config(self, vocab: int) -> LlamaConfig:
        # no EOS: random models must not stop early, every row generates exactly the tokens asked for
        return LlamaConfig(vocab_size=vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
                           num_hidden_layers=self.layers, num_attention_heads=self.heads,
                           num_key_value_heads=self.kv_heads, max_position_embeddings=8192,
                           bos_token_id=None, eos_token_id=None, pad_token_id=0, tie_word_embeddings=False)


# (teacher, proxy). With a 32k vocabulary the proxy costs about half the teacher per token, as in the paper.
SHAPES: dict[str, tuple[LlamaShape, LlamaShape]] = {
    "realistic": (LlamaShape(1024, 8, 2816, 16, 4), LlamaShape(768, 6, 2048, 12, 4)),
    "small": (LlamaShape(384, 4, 1024, 6, 2), LlamaShape(256, 2, 704, 4, 2)),
    "tiny": (LlamaShape(64, 2, 128, 4, 2), LlamaShape(32, 2, 64, 4, 2)),
    # the paper's pair as Llamas: a Qwen2.5-7B-like teacher (7.6B with vocab 152064) and a Qwen2.5-3B-like proxy
    # (3.1B); for a GPU (about 15 GB + 6 GB per proxy copy in bf16)
    "7b-3b": (LlamaShape(3584, 28, 18944, 28, 4), LlamaShape(2048, 36, 11008, 16, 2)),
}


@contextlib.contextmanager
def _building_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """New parameters are created on `device` in `dtype`: no CPU copy, no cast (7B shapes take seconds on a GPU,
    minutes on a CPU)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def random_models(shape: str, vocab: int, device: torch.device, teacher_dtype: torch.dtype,
                  seed: int = 0) -> tuple[PreTrainedModel, PreTrainedModel]:
    """A random teacher (in its dtype) and proxy (fp32, like a proxy loaded to compute its gradient), both built
    directly on `device`."""
    teacher_shape, proxy_shape = SHAPES[shape]
    torch.manual_seed(seed)
    with _building_on(device, teacher_dtype):
        teacher = LlamaForCausalLM(teacher_shape.config(vocab)).eval()
    with _building_on(device, torch.float32):
        proxy = LlamaForCausalLM(proxy_shape.config(vocab)).eval()
    teacher.config._name_or_path = f"random-{shape}-teacher"
    proxy.config._name_or_path = f"random-{shape}-proxy"
    return teacher, proxy


def random_token_gradient(proxy: PreTrainedModel, vocab: int, seed: int = 0, batch: int = 2,
                          length: int = 32) -> ProxyGradient:
    """g of the proxy's NLL on random tokens: the right names, shapes and scale, no data needed."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator).to(next(proxy.parameters()).device)
    proxy.zero_grad(set_to_none=True)
    proxy(input_ids=ids, labels=ids).loss.backward()
    tensors = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().cpu()
               for name, p in proxy.named_parameters()}
    proxy.zero_grad(set_to_none=True)
    return ProxyGradient(tensors, {"loss_convention": "mean NLL of random tokens (speed benchmark only)"})


def matmul_weights(model: nn.Module) -> int:
    """Weights multiplied per token: every linear layer (a tied unembedding too), not the embedding lookup."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            total += module.weight.numel()
    return total


def flops_per_token(model: nn.Module) -> int:
    return 2 * matmul_weights(model)


def _text_config(model: PreTrainedModel) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def kv_bytes_per_token(model: PreTrainedModel, dtype: torch.dtype) -> int:
    """KV-cache bytes one sequence adds per token (keys and values of every layer)."""
    config = _text_config(model)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.finfo(dtype).bits // 8


def attention_flops_per_token(model: PreTrainedModel, context: int) -> int:
    """Scores and weighted sum over `context` cached positions, every layer and head."""
    config = _text_config(model)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 4 * config.num_hidden_layers * heads * head_dim * context


def weight_bytes(model: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of the parameters and buffers (tied tensors once), optionally as if cast to `dtype`."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        size = tensor.element_size() if dtype is None or not tensor.is_floating_point() else \
            torch.finfo(dtype).bits // 8
        total += tensor.numel() * size
    return total


def describe_model(model: PreTrainedModel) -> dict[str, Any]:
    """Name, shape and per-token FLOPs of a model, for the results file."""
    config = _text_config(model)
    info: dict[str, Any] = {
        "name": str(getattr(model.config, "_name_or_path", "") or type(model).__name__),
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "matmul_weights": matmul_weights(model),
        "flops_per_token": flops_per_token(model),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                "num_key_value_heads"):
        info[key] = getattr(config, key, None)
    return info


def shape_summary(shape: str) -> dict[str, Any]:
    teacher, proxy = SHAPES[shape]
    return {"teacher": asdict(teacher), "proxy": asdict(proxy)}
