"""ProxyGradient: the loss convention, saving and loading, bad input, and world-size independence."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_plugin import ProxyGradient
from harness_plugin.errors import AntidistillError, GradientMismatchError
from harness_plugin.io import write_jsonl
from harness_plugin.tokens import encode_trace

TRACES = [
    {"prompt": "Tom has 3 apples and buys 5 more.", "completion": " 3 + 5 = 8. #### 8"},
    {"prompt": "A train travels 60 km in 2 hours.", "completion": " 60 / 2 = 30. #### 30"},
    {"prompt": "Anna is 12 years old.", "completion": " 12 + 4 = 16. The answer is 16."},
    {"prompt": "Solve for x: 2x + 3 = 7.", "completion": " x = 2. Final Answer: 2"},
    {"prompt": "The fraction one half", "completion": " equals 0.5"},
]


@pytest.fixture(scope="module")
def proxy(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir / "proxy"), AutoTokenizer.from_pretrained(tiny_dir / "proxy")


def manual_gradient(model, tokenizer, traces, only_digits=False):
    """The definition, written out: mean NLL over all completion tokens of all traces (or over those whose text
    has a digit), one big sum."""
    model.zero_grad()
    total_nll, count = 0.0, 0
    for trace in traces:
        encoded = encode_trace(tokenizer, trace["prompt"], trace["completion"])
        ids = torch.tensor([encoded.input_ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        for position in range(encoded.prompt_length, len(encoded.input_ids)):
            token = encoded.input_ids[position]
            if only_digits and not any(ch.isdigit() for ch in tokenizer.decode([token])):
                continue
            total_nll = total_nll - logp[position - 1, token]
            count += 1
    (total_nll / count).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return grads, count


def test_gradient_is_the_mean_completion_nll_gradient_for_any_batch_size(proxy):
    model, tokenizer = proxy
    expected, count = manual_gradient(model, tokenizer, TRACES)
    for batch_size in (1, 3):
        gradient = ProxyGradient.compute(model, tokenizer, TRACES, batch_size=batch_size, progress=False)
        assert gradient.metadata["num_tokens"] == count
        for name, tensor in expected.items():
            torch.testing.assert_close(gradient.tensors[name], tensor, rtol=1e-4, atol=1e-6)
    assert gradient.metadata["norm"] == pytest.approx(
        float(torch.sqrt(sum((t.double() ** 2).sum() for t in expected.values()))), rel=1e-4)


def test_digit_only_loss_is_the_mean_nll_over_digit_tokens(proxy):
    model, tokenizer = proxy
    expected, count = manual_gradient(model, tokenizer, TRACES, only_digits=True)
    everything, all_count = manual_gradient(model, tokenizer, TRACES)
    assert 0 < count < all_count
    gradient = ProxyGradient.compute(model, tokenizer, TRACES, batch_size=2, progress=False, loss_tokens="digits")
    assert gradient.metadata["num_tokens"] == count and gradient.metadata["loss_tokens"] == "digits"
    for name, tensor in expected.items():
        torch.testing.assert_close(gradient.tensors[name], tensor, rtol=1e-4, atol=1e-6)
    with pytest.raises(AntidistillError, match="loss_tokens"):
        ProxyGradient.compute(model, tokenizer, TRACES, progress=False, loss_tokens="words")
    with pytest.raises(AntidistillError, match="none of"):
        ProxyGradient.compute(model, tokenizer, [{"prompt": "a", "completion": " no numbers here"}],
                              progress=False, loss_tokens="digits")


def test_prompt_tokens_are_not_supervised(proxy):
    model, tokenizer = proxy
    changed = [{"prompt": t["prompt"] + " extra words", "completion": t["completion"]} for t in TRACES]
    a = ProxyGradient.compute(model, tokenizer, TRACES, progress=False).metadata
    b = ProxyGradient.compute(model, tokenizer, changed, progress=False).metadata
    assert a["num_tokens"] == b["num_tokens"]  # the same completions, whatever the prompts


def test_save_load_round_trip_with_prefixes(proxy, tmp_path):
    model, tokenizer = proxy
    gradient = ProxyGradient.compute(model, tokenizer, TRACES, progress=False)
    gradient.save(tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "gradient.json").read_text())
    for key in ("norm", "num_tokens", "num_traces", "proxy_name", "dtype", "loss_convention", "traces_sha256"):
        assert key in meta
    loaded = ProxyGradient.load(tmp_path / "g", proxy=model)
    assert set(loaded.tensors) == set(gradient.tensors)
    # a gradient saved from DDP or torch.compile carries prefixes; it still loads
    tensors = load_file(str(tmp_path / "g" / "gradient.safetensors"))
    save_file({f"module._orig_mod.{k}": v for k, v in tensors.items()}, str(tmp_path / "g" / "gradient.safetensors"))
    prefixed = ProxyGradient.load(tmp_path / "g", proxy=model)
    torch.testing.assert_close(prefixed.tensors, loaded.tensors)


def test_missing_and_mismatched_gradient_files(proxy, tiny_dir, tmp_path):
    model, tokenizer = proxy
    with pytest.raises(GradientMismatchError, match="no proxy gradient"):
        ProxyGradient.load(tmp_path / "nowhere", proxy=model)
    ProxyGradient.compute(model, tokenizer, TRACES, progress=False).save(tmp_path / "g")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dir / "teacher")
    with pytest.raises(GradientMismatchError, match="shapes differ"):
        ProxyGradient.load(tmp_path / "g", proxy=teacher)


def test_gradient_of_another_checkpoint_with_the_same_shapes_is_refused(proxy, tmp_path):
    """Shapes match, weights do not: a gradient of one checkpoint must not steer sampling with another.
    The same weights in bf16 (the usual CUDA load of a proxy whose gradient came from fp32) still fit."""
    import copy

    model, tokenizer = proxy
    ProxyGradient.compute(model, tokenizer, TRACES, progress=False).save(tmp_path / "g")
    torch.manual_seed(1)
    for changed in ("model.layers.0.mlp.down_proj.weight", None):  # one matrix, then every parameter
        other = copy.deepcopy(model)
        with torch.no_grad():
            for name, param in other.named_parameters():
                if changed in (None, name):
                    param.mul_(1 + 0.1 * torch.randn_like(param))  # changes of about 10%, like a short fine-tune
        with pytest.raises(GradientMismatchError, match="other weights"):
            ProxyGradient.load(tmp_path / "g", proxy=other)
    ProxyGradient.load(tmp_path / "g", proxy=copy.deepcopy(model).to(torch.bfloat16))
    loaded = ProxyGradient.load(tmp_path / "g", proxy=model)
    # Checked once per proxy object (the penalty built from a loaded gradient does not read the weights again),
    # but a gradient checked for one proxy is still checked for the next.
    loaded.check_matches(model)
    with pytest.raises(GradientMismatchError, match="other weights"):
        loaded.check_matches(other)


def test_a_damaged_gradient_is_refused_whatever_its_json_says(proxy, tmp_path):
    """The norm comes from the tensors: zeros or NaN behind a finite recorded norm, a missing or broken
    gradient.json and a truncated safetensors file each get one error naming the file."""
    model, tokenizer = proxy
    ProxyGradient.compute(model, tokenizer, TRACES, progress=False).save(tmp_path / "g")
    tensors = load_file(str(tmp_path / "g" / "gradient.safetensors"))
    for name, damaged, message in (
        ("zero", {k: torch.zeros_like(v) for k, v in tensors.items()}, "is zero"),
        ("nan", {k: v.clone().fill_(float("nan")) if i == 0 else v for i, (k, v) in enumerate(tensors.items())},
         "NaN or inf"),
    ):
        folder = tmp_path / name
        shutil.copytree(tmp_path / "g", folder)
        save_file(damaged, str(folder / "gradient.safetensors"))
        assert json.loads((folder / "gradient.json").read_text())["norm"] > 0  # the JSON still looks fine
        with pytest.raises(GradientMismatchError, match=message):
            ProxyGradient.load(folder, proxy=model)
    shutil.copytree(tmp_path / "g", tmp_path / "nojson")
    (tmp_path / "nojson" / "gradient.json").unlink()
    with pytest.raises(GradientMismatchError, match="missing gradient.json"):
        ProxyGradient.load(tmp_path / "nojson")
    shutil.copytree(tmp_path / "g", tmp_path / "badjson")
    (tmp_path / "badjson" / "gradient.json").write_text("{not json")
    with pytest.raises(GradientMismatchError, match="badjson/gradient.json"):
        ProxyGradient.load(tmp_path / "badjson")
    shutil.copytree(tmp_path / "g", tmp_path / "cut")
    data = (tmp_path / "cut" / "gradient.safetensors").read_bytes()
    (tmp_path / "cut" / "gradient.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GradientMismatchError, match="cut/gradient.safetensors"):
        ProxyGradient.load(tmp_path / "cut")


def test_empty_traces_and_traces_without_completion_tokens(proxy):
    model, tokenizer = proxy
    with pytest.raises(AntidistillError, match="no traces"):
        ProxyGradient.compute(model, tokenizer, [], progress=False)
    with pytest.raises(AntidistillError, match="completion token"):
        ProxyGradient.compute(model, tokenizer, TRACES[:1], max_length=3, progress=False)
    with pytest.raises(AntidistillError, match="'prompt' and 'completion'"):
        ProxyGradient.compute(model, tokenizer, [{"question": "x"}], progress=False)


def test_save_leaves_nothing_half_written(proxy, tmp_path, monkeypatch):
    model, tokenizer = proxy
    gradient = ProxyGradient.compute(model, tokenizer, TRACES, progress=False)
    import harness_plugin.gradient as module

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", broken_save)
    with pytest.raises(OSError):
        gradient.save(tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_process_gradient_equals_single_process(tiny_dir, tmp_path):
    """Under `accelerate launch --num_processes 2` (gloo, CPU) the saved g equals the single-process g."""
    write_jsonl(tmp_path / "traces.jsonl", TRACES)
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher, "accelerate is a runtime dependency"
    common = ["-m", "harness_plugin.cli", "gradient", "--proxy", str(tiny_dir / "proxy"),
              "--traces", str(tmp_path / "traces.jsonl"), "--device", "cpu", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *common, "--output", str(tmp_path / "single")], check=True, env=env, cwd=tmp_path)
    # `--multi_gpu` on a machine without GPUs launches gloo CPU processes (`--cpu` alone runs one process)
    with socket.socket() as probe:  # a free port: a stale run on accelerate's default 29500 must not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--main_process_port", port,
                    "--mixed_precision", "no", "--dynamo_backend", "no", *common,
                    "--output", str(tmp_path / "double")], check=True, env=env, timeout=300, cwd=tmp_path)
    single = ProxyGradient.load(tmp_path / "single")
    double = ProxyGradient.load(tmp_path / "double")
    assert double.metadata["world_size"] == 2 and single.metadata["world_size"] == 1
    assert double.metadata["num_tokens"] == single.metadata["num_tokens"]
    for name, tensor in single.tensors.items():
        torch.testing.assert_close(double.tensors[name], tensor, rtol=1e-4, atol=1e-6)
