"""Loading teachers, proxies and tokenizers by hub name or local folder, with safe defaults."""

from __future__ import annotations

import os
import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import AntidistillError
from .names import DTYPE_SPELLINGS


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU, bf16 on CUDA unless asked otherwise; fp16 warns about overflow."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPE_SPELLINGS:
            raise AntidistillError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16")
        dtype = getattr(torch, DTYPE_SPELLINGS[dtype])
    if dtype == torch.float16:
        warnings.warn(
            "fp16 can overflow to inf/NaN logits (the reference code's failure mode); "
            "prefer bfloat16 or float32", stacklevel=3)
    return dtype


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(name_or_path: str | os.PathLike[str], revision: str | None = None,
                   trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A tokenizer with a pad token (EOS when it has none), for batched left-padded generation."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision,
                                                  trust_remote_code=trust_remote_code)
    except OSError as error:
        raise AntidistillError(f"cannot load a tokenizer from {name_or_path!r}: {error}. Give a local folder made "
                               "by save_pretrained or a hub name (the hub needs network access).") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str | os.PathLike[str], dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None, revision: str | None = None,
               trust_remote_code: bool = False) -> PreTrainedModel:
    """A causal LM in eval mode on `device` (CUDA if present) in `dtype` (fp32 on CPU, bf16 on CUDA)."""
    device = torch.device(device) if device is not None else default_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=resolve_dtype(dtype, device),
                                                     revision=revision, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise AntidistillError(f"cannot load a model from {name_or_path!r}: {error}. Give a local folder made by "
                               "save_pretrained or a hub name (the hub needs network access).") from None
    return model.to(device).eval()
