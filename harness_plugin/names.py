"""Names of samplers, penalty methods, dtypes and loss-token sets, in a module without torch so CLIs and configs can list them cheaply."""

from __future__ import annotations

SAMPLERS: tuple[str, ...] = ("ads", "permutation", "temperature")
SAMPLER_LONG_NAMES = {"ads": "antidistillation", "permutation": "permutation", "temperature": "temperature"}
PENALTY_METHODS: tuple[str, ...] = ("fd", "jvp", "head")
DTYPE_NAMES: tuple[str, ...] = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
# Which completion tokens the proxy gradient's downstream loss ℓ covers (harness_plugin.gradient).
LOSS_TOKENS: tuple[str, ...] = ("all", "digits")
# The offline data folder (<dir>/<dataset>/<split>.jsonl, the layout of ../shared/data) read instead of the hub.
DATA_DIR_VARIABLE = "ANTIDISTILL_DATA_DIR"
