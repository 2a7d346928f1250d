"""Names of samplers, penalty methods, dtypes and loss-token sets, in a module without torch so CLIs and configs can list them cheaply."""

from __future__ import annotations

SAMPLERS: tuple[str, ...] = ("ads", "permutation", "temperature")
SAMPLER_LONG_NAMES = {"ads": "antidistillation", "permutation": "permutation", "temperature": "temperature"}
# Every spelling a user may type for a sampler (CLI, lm-eval model_args, figure filters) -> its short name.
SAMPLER_SPELLINGS = {**{short: short for short in SAMPLERS}, **{long: short for short, long in SAMPLER_LONG_NAMES.items()},
                     "antidistill": "ads", "temp": "temperature", "perm": "permutation"}
PENALTY_METHODS: tuple[str, ...] = ("fd", "jvp", "head")
# Every spelling of a floating dtype -> torch's name for it (torch.float32, ...); "auto" picks per device.
DTYPE_SPELLINGS = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                   "float16": "float16", "fp16": "float16", "half": "float16"}
DTYPE_NAMES: tuple[str, ...] = ("auto", *DTYPE_SPELLINGS)
# Which completion tokens the proxy gradient's downstream loss ℓ covers (harness_plugin.gradient).
LOSS_TOKENS: tuple[str, ...] = ("all", "digits")
# The offline data folder (<dir>/<dataset>/<split>.jsonl, the layout of ../shared/data) read instead of the hub.
DATA_DIR_VARIABLE = "ANTIDISTILL_DATA_DIR"
