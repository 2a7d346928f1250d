"""Distil a student by supervised fine-tuning on teacher traces (LoRA by default, full fine-tuning as an option).

This is the attacker in the paper's threat model: it only sees the teacher's text. So the student is prompted
with the problem in its OWN chat template (its tokenizer may be another family than the teacher's) and learns
the teacher's completion, with the loss on completion tokens only. The prompt is masked by its token length
(prompt and completion are tokenised separately and concatenated), never by searching for a template string,
and the run fails loudly if no token is supervised.

Training goes through HF `Trainer`, so `accelerate launch` scales it out unchanged and any `TrainerCallback`
(e.g. MLflow logging from the benchmark suite) can be attached; `on_log` is a lighter hook for per-step loss.
The output directory holds a plain merged checkpoint loadable by `AutoModelForCausalLM`, the tokenizer, the
LoRA adapter (when used) and `distill.json`; it is written in a temporary sibling and moved into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class DistillConfig:
    """Hyperparameters of student distillation. Defaults suit the toy world's ~1M-parameter student."""

    method: str = "lora"  # "lora" or "full"
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = 2e-3
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler_type: str = "cosine"
    max_length: int = 512
    seed: int = 0
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] = "all-linear"
    lora_modules_to_save: list[str] | None = None
    prompt_field: str = "question"  # "question": student's own chat template; "prompt": the trace's prompt as is
    logging_steps: int = 1
    extra_training_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ValueError(f"DistillConfig.method must be 'lora' or 'full', got {self.method!r}")
        if self.prompt_field not in ("question", "prompt"):
            raise ValueError(f"DistillConfig.prompt_field must be 'question' or 'prompt', got {self.prompt_field!r}")


def build_examples(tokenizer: Any, traces: Sequence[dict], config: DistillConfig) -> list[dict[str, list[int]]]:
    """Tokenise traces into input ids and labels with the prompt masked (-100) by its token length."""
    from harness_plugin.prompts import format_prompt

    examples, dropped = [], 0
    for i, trace in enumerate(traces):
        if config.prompt_field not in trace or "completion" not in trace:
            raise ValueError(
                f"trace {i} lacks {config.prompt_field!r} or 'completion': traces for a student with its own "
                "tokenizer need the raw problem text under 'question' (or set prompt_field='prompt' to reuse "
                "the teacher's prompt verbatim when both share a tokenizer)"
            )
        if config.prompt_field == "question":
            prompt = format_prompt(tokenizer, trace["question"])
        else:
            prompt = trace["prompt"]
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(trace["completion"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[: config.max_length]
        if len(ids) <= len(p_ids):
            dropped += 1
            continue
        examples.append({"input_ids": ids, "labels": [-100] * len(p_ids) + ids[len(p_ids) :]})
    if not examples:
        raise ValueError(
            f"none of the {len(traces)} traces has a supervised completion token within max_length="
            f"{config.max_length}: raise DistillConfig.max_length or check that completions are not empty"
        )
    if dropped:
        print(f"distill: dropped {dropped} traces whose completion fell beyond max_length={config.max_length}")
    return examples


class _Collator:
    """Right-pads input ids and labels of a batch (training needs no left padding)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        n = len(features)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for row, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[row, :k] = torch.tensor(f["input_ids"])
            labels[row, :k] = torch.tensor(f["labels"])
            mask[row, :k] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _log_callback(on_log: Callable[[int, dict], None]) -> Any:
    from transformers import TrainerCallback

    class _OnLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs:
                on_log(state.global_step, dict(logs))

    return _OnLog()


def distill_student(
    student_dir: str | Path,
    traces: Sequence[dict],
    output_dir: str | Path,
    config: DistillConfig | None = None,
    callbacks: Sequence[Any] = (),
    on_log: Callable[[int, dict], None] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Fine-tune the student at `student_dir` on `traces` ({"question", "completion"} records) into `output_dir`.

    Returns `output_dir`, which then holds a merged checkpoint and the student's tokenizer. Raises
    FileExistsError when it exists already (pass overwrite=True to replace it): the benchmark suite skips a
    stage whose output exists, so a finished student is never silently retrained.
    """
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from harness_plugin.loading import load_model, load_tokenizer
    from harness_plugin.progress import progress_enabled

    config = config or DistillConfig()
    progress = progress and progress_enabled()  # --no-progress reaches callers that do not pass it (the world build)
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists: remove it or pass overwrite=True to distil again")
    tokenizer = load_tokenizer(student_dir)
    examples = build_examples(tokenizer, traces, config)
    supervised = sum(sum(1 for t in e["labels"] if t != -100) for e in examples)
    if supervised == 0:  # unreachable given build_examples, kept as the invariant the loss relies on
        raise ValueError("no supervised tokens in the distillation data")

    torch.manual_seed(config.seed)
    model = load_model(student_dir, dtype="float32", device="cpu")  # the Trainer moves it where it trains
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            modules_to_save=config.lora_modules_to_save,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        args = TrainingArguments(
            output_dir=str(work / "trainer"),
            num_train_epochs=config.epochs,
            max_steps=config.max_steps,
            learning_rate=config.learning_rate,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            warmup_steps=config.warmup_ratio,
            weight_decay=config.weight_decay,
            lr_scheduler_type=config.lr_scheduler_type,
            logging_steps=config.logging_steps,
            save_strategy="no",
            report_to=[],
            seed=config.seed,
            remove_unused_columns=False,
            disable_tqdm=not progress,
            **config.extra_training_args,
        )
        all_callbacks = list(callbacks) + ([_log_callback(on_log)] if on_log else [])
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=examples,
            data_collator=_Collator(tokenizer.pad_token_id),
            callbacks=all_callbacks,
        )
        if not progress:  # with tqdm off, Trainer prints every log dict instead; --no-progress means quiet
            trainer.remove_callback(PrinterCallback)
        wall, cpu = time.perf_counter(), time.process_time()
        result = trainer.train()
        timing = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}

        final = work / "model"
        if config.method == "lora":
            model.save_pretrained(str(final / "adapter"))
            merged = model.merge_and_unload()
        else:
            merged = model
        if trainer.is_world_process_zero():
            merged.save_pretrained(str(final))
            tokenizer.save_pretrained(str(final))
            summary = {
                "config": asdict(config),
                "student_dir": str(student_dir),
                "n_traces": len(traces),
                "n_examples": len(examples),
                "supervised_tokens": supervised,
                "train_loss": result.training_loss,
                "global_steps": result.global_step,
                **timing,
            }
            (final / "distill.json").write_text(json.dumps(summary, indent=2))
            if output_dir.exists():
                shutil.rmtree(output_dir)
            os.replace(final, output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output_dir
