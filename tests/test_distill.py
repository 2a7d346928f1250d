"""Student distillation: prompt masking by token length, LoRA and full fine-tuning, atomic output, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from toy_world_fixtures import smoke_world  # noqa: F401

from benchmarks.distill import DistillConfig, build_examples, distill_student


def _traces(world, n: int = 12) -> list[dict]:
    return [
        {"question": r["question"], "prompt": "<teacher prompt, unused>", "completion": r["answer"]}
        for r in world.train[:n]
    ]


def _completion_nll(model_dir, traces) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    total, count = 0.0, 0
    for ex in build_examples(tok, traces, DistillConfig()):
        ids = torch.tensor([ex["input_ids"]])
        labels = torch.tensor([ex["labels"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        n = int((labels[0, 1:] != -100).sum())
        total, count = total + loss.item() * n, count + n
    return total / count


def test_prompt_is_masked_by_its_token_length_in_the_students_template(smoke_world) -> None:  # noqa: F811
    from transformers import AutoTokenizer

    world, _ = smoke_world
    tok = AutoTokenizer.from_pretrained(world.student_dir)
    traces = _traces(world, 4)
    for trace, ex in zip(traces, build_examples(tok, traces, DistillConfig())):
        n_prompt = sum(1 for t in ex["labels"] if t == -100)
        prompt = tok.decode(ex["input_ids"][:n_prompt])
        assert prompt.startswith("<|im_start|>user\n") and trace["question"] in prompt
        assert prompt.endswith("<|im_start|>assistant\n")
        supervised = [t for t in ex["labels"] if t != -100]
        assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
        assert tok.decode(supervised) == trace["completion"] + tok.eos_token


def test_bad_traces_fail_clearly(smoke_world) -> None:  # noqa: F811
    from transformers import AutoTokenizer

    world, _ = smoke_world
    tok = AutoTokenizer.from_pretrained(world.student_dir)
    with pytest.raises(ValueError, match="question"):
        build_examples(tok, [{"prompt": "p", "completion": "c"}], DistillConfig())
    with pytest.raises(ValueError, match="max_length"):
        build_examples(tok, _traces(world, 2), DistillConfig(max_length=8))
    with pytest.raises(ValueError, match="lora"):
        DistillConfig(method="qlora")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_distillation_learns_the_traces_and_writes_atomically(smoke_world, tmp_path, method) -> None:  # noqa: F811
    from transformers import AutoModelForCausalLM

    world, _ = smoke_world
    traces = _traces(world, 12)
    before = _completion_nll(world.student_dir, traces)
    logs: list[tuple[int, dict]] = []
    config = DistillConfig(method=method, max_steps=12, batch_size=4, learning_rate=1e-2, lora_r=8, lora_alpha=16)
    out = distill_student(world.student_dir, traces, tmp_path / "student", config,
                          on_log=lambda step, entry: logs.append((step, entry)))
    assert out == tmp_path / "student"
    assert [p.name for p in tmp_path.iterdir()] == ["student"], "no temporary directory may be left behind"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "gpt_neox"
    assert not any("lora" in name for name, _ in model.named_parameters()), "the saved student must be merged"
    summary = json.loads((out / "distill.json").read_text())
    assert summary["n_examples"] == 12 and summary["supervised_tokens"] > 0
    assert summary["config"]["method"] == method
    assert (out / "adapter").is_dir() == (method == "lora")
    losses = [entry["loss"] for _, entry in logs if "loss" in entry]
    assert len(losses) >= 10, "the loss must be reported at every step"
    after = _completion_nll(out, traces)
    # LoRA adapts a near-random smoke student slowly (its embeddings stay frozen); full fine-tuning fast.
    margin = 0.005 if method == "lora" else 0.1
    assert after < before - margin, f"distillation did not learn the traces: NLL {before:.3f} -> {after:.3f}"
    base = AutoModelForCausalLM.from_pretrained(world.student_dir).state_dict()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, base[k])]
    assert changed, "the saved student must differ from the undistilled one"
    if method == "lora":
        assert not any("wte" in k or "wpe" in k for k in changed), "LoRA must leave the embeddings alone"
    with pytest.raises(FileExistsError, match="overwrite"):
        distill_student(world.student_dir, traces, out, config)


def test_without_progress_the_trainer_prints_no_log_dicts(smoke_world, tmp_path, capfd) -> None:  # noqa: F811
    world, _ = smoke_world
    logs: list[dict] = []
    config = DistillConfig(method="full", max_steps=3, batch_size=4, logging_steps=1)
    distill_student(world.student_dir, _traces(world, 4), tmp_path / "student", config, progress=False,
                    on_log=lambda step, entry: logs.append(entry))
    out = capfd.readouterr().out
    assert "'loss'" not in out and "train_runtime" not in out, out
    assert any("loss" in entry for entry in logs), "the log hook must still see every loss"
