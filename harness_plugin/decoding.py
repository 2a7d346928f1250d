"""Calling an HF decoder step by step outside `generate()`: positions under left padding, the cache keyword."""

from __future__ import annotations

import inspect

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift absolute positions."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def cache_keyword(model: torch.nn.Module) -> str:
    """`cache` in transformers >= 5.x (where `past_key_values` is deprecated), else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
