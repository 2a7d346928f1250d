"""`antidistill perf`: the results schema, and baselines that sample from the same distribution as our sampler.

The speed comparison only means something if `reference` and `nocache` compute what `ads-fd` computes, so that is
checked step by step on tiny random models. No timing is asserted (the figures depend on the machine).
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.perf.measure import MemoryProbe
from benchmarks.perf.models import describe_model, random_models, random_token_gradient
from benchmarks.perf.run import Bench, ModelSet, Settings
from harness_plugin.cli import main

VOCAB = 128


@pytest.fixture(scope="module")
def bench():
    cpu = torch.device("cpu")
    teacher, proxy = random_models("tiny", VOCAB, cpu, torch.float32, seed=0)
    with torch.no_grad():  # a random head gives near-uniform logits; spread them so Δ moves real mass
        for model in (teacher, proxy):
            model.lm_head.weight.mul_(30.0)
    models = ModelSet("tiny", teacher, proxy, random_token_gradient(proxy, VOCAB), VOCAB, 0, torch.float32)
    settings = Settings(shape="tiny", vocab=VOCAB, lam=3.0, tau=0.7, eps=1e-2, prompt_length=5)
    return Bench(models, settings, cpu, MemoryProbe(cpu))


def test_reference_and_nocache_tilt_the_teacher_exactly_like_ads_fd(bench):
    tau = bench.settings.tau
    ids, mask = bench.prompts(batch=3, seed=1)
    ours = bench.processors("ads-fd", mask, seed=0)[0][0]
    reference = bench.processors("reference", mask, seed=0)[0][0]
    nocache = bench.processors("nocache", mask, seed=0)[0][0]
    generator = torch.Generator().manual_seed(0)
    moved = []
    for _ in range(5):  # prompt, then cached single-token steps
        scores = bench.models.teacher(input_ids=ids).logits[:, -1].float()
        expected = torch.log_softmax(ours(ids, scores.clone()), dim=-1)
        for baseline in (reference, nocache):  # HF divides their output by τ afterwards
            got = torch.log_softmax(baseline(ids, scores.clone()) / tau, dim=-1)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        moved.append((expected - torch.log_softmax(scores / tau, dim=-1)).abs().max().item())
        token = torch.multinomial(expected.exp(), 1, generator=generator)
        ids = torch.cat([ids, token], dim=1)
    assert min(moved) > 1e-2  # Δ really tilts the distribution, so a baseline ignoring it would fail


def test_perf_command_writes_the_results_schema(tmp_path):
    threads = torch.get_num_threads()
    out, md = tmp_path / "perf.json", tmp_path / "perf.md"
    try:
        code = main(["perf", "--shape", "tiny", "--vocab", str(VOCAB), "--batch-sizes", "2", "--new-tokens", "3",
                     "--repeats", "1", "--prompt-length", "4", "--max-jvp-tokens", "2", "--threads", "1",
                     "--json", str(out), "--markdown", str(md), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    results = json.loads(out.read_text())
    for key in ("results", "flop_floor_ratio", "machine", "versions", "model_sets", "targets"):
        assert key in results
    assert {"cpu", "device", "cpu_count"} <= set(results["machine"])
    assert {"torch", "transformers", "python"} <= set(results["versions"])
    rows = {r["method"]: r for r in results["results"]}
    # every method ran (a generation that stopped short of the asked tokens raises inside the run)
    assert set(rows) == {"plain", "ads-fd", "ads-head", "ads-jvp", "permutation", "reference", "nocache"}
    for method, row in rows.items():
        assert (row["batch"], row["new_tokens"]) == (2, 3)
        if method == "ads-jvp":
            assert row["tokens_per_s"] is None and "jvp" in row["skipped"]
            continue
        assert row["tokens_per_s"] > 0 and row["peak_mem_mb"] > 0 and row["skipped"] is None
    # the floor ratio is (teacher + 2 proxy) / teacher FLOPs per token, from the models' own shapes
    info = results["model_sets"][0]
    teacher, proxy = info["teacher"]["flops_per_token"], info["proxy"]["flops_per_token"]
    assert results["flop_floor_ratio"] == pytest.approx((teacher + 2 * proxy) / teacher)
    assert 1 < results["flop_floor_ratio"] < 3
    assert "## Performance" in md.read_text() and results["machine"]["cpu"] in md.read_text()


def test_flop_count_matches_the_matmuls_of_a_step():
    teacher, proxy = random_models("tiny", VOCAB, torch.device("cpu"), torch.float32)
    config = teacher.config
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * hidden // config.num_attention_heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    assert describe_model(teacher)["flops_per_token"] == 2 * (layers * per_layer + VOCAB * hidden)


def test_perf_command_runs_on_checkpoints_given(tiny_dir, tmp_path):
    out = tmp_path / "ckpt.json"
    code = main(["perf", "--no-random", "--teacher", str(tiny_dir / "teacher"), "--proxy", str(tiny_dir / "proxy"),
                 "--batch-sizes", "2", "--new-tokens", "3", "--repeats", "1", "--methods", "ads-fd", "reference",
                 "--json", str(out), "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert {r["method"] for r in results["results"]} == {"plain", "ads-fd", "reference"}
    assert all(r["models"].endswith("proxy") and r["tokens_per_s"] > 0 for r in results["results"])


def test_perf_command_rejects_half_a_checkpoint_pair(tiny_dir, capsys):
    assert main(["perf", "--teacher", str(tiny_dir / "teacher"), "--no-progress"]) == 2
    assert "--teacher and --proxy together" in capsys.readouterr().err
