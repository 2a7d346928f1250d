"""Antidistillation sampling (Savani et al., arXiv 2504.13146) for Hugging Face `transformers` models.

The teacher's next-token distribution is tilted by Δ, the directional derivative of a proxy student's downstream
loss, so that sampled traces stay useful to readers but make poor distillation data.

Names are imported lazily (PEP 562), so `import harness_plugin.answers` or the lm-eval hook do not pay for torch.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not imported from typing: this module runs at every interpreter start (the lm-eval hook)

__version__ = "0.1.0"

_EXPORTS = {
    "AntidistillError": "errors",
    "GradientMismatchError": "errors",
    "NonFinitePenaltyError": "errors",
    "VocabularyMismatchError": "errors",
    "GeneratedTrace": "generation",
    "generate": "generation",
    "ProxyGradient": "gradient",
    "AntidistillationPenalty": "penalty",
    "AntidistillationLogitsProcessor": "sampling",
    "PermutationLogitsProcessor": "sampling",
    "SamplerConfig": "sampling",
    "TeacherLogProbRecorder": "sampling",
    "check_same_tokenizer": "vocab",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .errors import (
        AntidistillError,
        GradientMismatchError,
        NonFinitePenaltyError,
        VocabularyMismatchError,
    )
    from .generation import GeneratedTrace, generate
    from .gradient import ProxyGradient
    from .penalty import AntidistillationPenalty
    from .sampling import (
        AntidistillationLogitsProcessor,
        PermutationLogitsProcessor,
        SamplerConfig,
        TeacherLogProbRecorder,
    )
    from .vocab import check_same_tokenizer


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
