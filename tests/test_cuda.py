"""The CUDA paths: skipped without a GPU; `benchmarks/perf/gpu_check.sh` runs them where one is lent.

Real tiny models, as everywhere: the penalty built on the GPU from a source proxy left on the CPU must equal the
CPU penalty, its deferred checks must not change Δ, and the no-sync promise is checked with torch's own
synchronisation debugger (a call that syncs in penalty.py is reported there).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_plugin import AntidistillationPenalty, ProxyGradient
from harness_plugin.cli import main

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PROMPTS = ["Tom has 3 apples and buys 5 more.", "A train travels", "Solve for x: 2x + 3 = 7, so x ="]


@pytest.fixture(scope="module")
def setup(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "proxy").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "proxy")
    traces = [{"prompt": p, "completion": " 3 + 5 = 8. #### 8"} for p in PROMPTS]
    return model, tokenizer, ProxyGradient.compute(model, tokenizer, traces, progress=False)


def steps(tokenizer, count=5, device="cuda"):
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    generator = torch.Generator().manual_seed(0)
    for _ in range(count):
        yield ids.to(device), mask.to(device)
        new = torch.randint(3, len(tokenizer), (len(rows), 1), generator=generator)
        ids, mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)


@pytest.mark.parametrize("method", ["fd", "head"])
def test_penalty_on_the_gpu_from_a_cpu_source_equals_the_cpu_penalty(setup, method):
    model, tokenizer, gradient = setup
    cpu = AntidistillationPenalty(model, gradient, eps=1e-3, method=method, dtype="float32")
    gpu = AntidistillationPenalty(model, gradient, eps=1e-3, method=method, dtype="float32", device="cuda")
    assert next(model.parameters()).device.type == "cpu" and gpu.defer_checks
    for index, (ids, mask) in enumerate(steps(tokenizer)):
        torch.testing.assert_close(gpu(ids, mask, continues=index > 0).cpu(), cpu(ids.cpu(), mask.cpu()),
                                   rtol=1e-3, atol=1e-3)
    gpu.check()


def _penalty_syncs(penalty, tokenizer) -> int:
    """Synchronising CUDA calls made from penalty.py over the continuation steps (not the first, whole prompt)."""
    calls = list(steps(tokenizer))
    penalty(*calls[0])
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for ids, mask in calls[1:]:
                penalty(ids, mask, continues=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(1 for w in caught if "synchroniz" in str(w.message) and w.filename.endswith("penalty.py"))


def test_deferred_checks_remove_the_per_step_sync_and_keep_delta(setup):
    model, tokenizer, gradient = setup
    synced = AntidistillationPenalty(model, gradient, eps=1e-2, dtype="bfloat16", device="cuda", defer_checks=False)
    deferred = AntidistillationPenalty(model, gradient, eps=1e-2, dtype="bfloat16", device="cuda")
    for index, (ids, mask) in enumerate(steps(tokenizer)):
        assert torch.equal(deferred(ids, mask, continues=index > 0), synced(ids, mask))
    deferred.reset()
    synced.reset()
    assert _penalty_syncs(synced, tokenizer) > 0  # the detector sees the old per-step .tolist()
    assert _penalty_syncs(deferred, tokenizer) == 0


def test_random_models_are_built_on_the_device_in_their_dtype():
    from benchmarks.perf.models import random_models

    teacher, proxy = random_models("tiny", 128, torch.device("cuda"), torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in teacher.parameters()} == {("cuda", torch.bfloat16)}
    assert {(p.device.type, p.dtype) for p in proxy.parameters()} == {("cuda", torch.float32)}


def test_perf_command_on_the_gpu(tmp_path):
    out = tmp_path / "perf.json"
    code = main(["bench", "perf", "--shape", "tiny", "--vocab", "128", "--batch-sizes", "2", "--new-tokens", "4",
                 "--repeats", "1", "--prompt-length", "8", "--device", "cuda", "--json", str(out), "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["settings"]["resident"] == "one" and results["machine"]["gpu"]
    assert results["model_sets"][0]["source_proxy_device"] == "cpu"
    assert results["fidelity"] and results["fidelity"][0]["dtype"] == "bfloat16"
    rows = [r for r in results["results"] if r["tokens_per_s"]]
    assert {r["method"] for r in rows} >= {"plain", "proxy", "ads-fd", "ads-head", "reference"}
    assert all(r["floor_ratio"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
