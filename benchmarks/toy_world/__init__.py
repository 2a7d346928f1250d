"""The toy world: the paper's experiment offline on a laptop CPU.

A synthetic GSM8K-like world (plus a MATH-like family with `\\boxed{}` answers), its own tokenizers, and tiny
Hugging Face models built and trained locally: a Llama-style teacher, a GPT-NeoX-style student with a tokenizer of
its own, and a proxy trained like that student but in the teacher's tokenizer (it never sees a worked solution).
`build_toy_world("toy")` returns the cached world (building it first when needed); every later stage loads its
models with `AutoModelForCausalLM`.

Heavy libraries are imported lazily, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "PRESETS",
    "Preset",
    "ToyWorld",
    "accuracy_table",
    "build_toy_world",
    "default_cache_dir",
    "get_preset",
    "world_diagnostics",
    "world_hash",
]

if TYPE_CHECKING:
    from benchmarks.toy_world.build import (
        ToyWorld,
        accuracy_table,
        build_toy_world,
        default_cache_dir,
        world_diagnostics,
        world_hash,
    )
    from benchmarks.toy_world.presets import PRESETS, Preset, get_preset

_WHERE = {
    "ToyWorld": "build",
    "accuracy_table": "build",
    "build_toy_world": "build",
    "default_cache_dir": "build",
    "world_hash": "build",
    "world_diagnostics": "build",
    "PRESETS": "presets",
    "Preset": "presets",
    "get_preset": "presets",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"benchmarks.toy_world.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'benchmarks.toy_world' has no attribute {name!r}")
