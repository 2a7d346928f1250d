"""`antidistill bench perf`: the results schema, the measured floor, and baselines that sample from the same
distribution as our sampler.

The speed comparison only means something if `reference` and `nocache` compute what `ads-fd` computes, so that is
checked step by step on tiny random models, and the floor only if `proxy` does the work of one penalty copy. No
timing is asserted (the figures depend on the machine); the targets' verdicts are checked on made-up rows.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from benchmarks.perf.baselines import perturbed_proxy, proxy_copy
from benchmarks.perf.measure import MemoryProbe
from benchmarks.perf.models import describe_model, random_models, random_token_gradient
from benchmarks.perf.report import evaluate_targets
from benchmarks.perf.run import FLOOR, Bench, ModelSet, Settings, method_groups, run_grid
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
        code = main(["bench", "perf", "--shape", "tiny", "--vocab", str(VOCAB), "--batch-sizes", "2", "--new-tokens", "3",
                     "--repeats", "1", "--prompt-length", "4", "--max-jvp-tokens", "2", "--threads", "1",
                     "--json", str(out), "--markdown", str(md), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    results = json.loads(out.read_text())
    for key in ("results", "flop_floor_ratio", "machine", "versions", "model_sets", "targets", "floor"):
        assert key in results
    assert results["complete"] is True
    assert {"cpu", "device", "cpu_count"} <= set(results["machine"])
    assert {"torch", "transformers", "python"} <= set(results["versions"])
    rows = {r["method"]: r for r in results["results"]}
    # every method ran (a generation that stopped short of the asked tokens raises inside the run)
    assert set(rows) == {"plain", "proxy", "ads-fd", "ads-fd-no-transpose", "ads-head", "ads-jvp", "permutation",
                         "reference", "nocache"}
    t_plain, t_proxy = rows["plain"]["seconds_per_token"], rows["proxy"]["seconds_per_token"]
    for method, row in rows.items():
        assert (row["batch"], row["new_tokens"], row["prompt_tokens"]) == (2, 3, 4)
        if method == "ads-jvp":
            assert row["tokens_per_s"] is None and "jvp" in row["skipped"] and row["floor_ratio"] is None
            continue
        assert row["tokens_per_s"] > 0 and row["peak_mem_mb"] > 0 and row["skipped"] is None
        assert row["cpu_seconds"] > 0 and len(row["cpu_seconds_all"]) == len(row["seconds_all"]) == 1
        # time / (a·t_plain + b·t_proxy), from the plain and proxy rows of the same cell
        a, b = FLOOR[method]
        assert row["floor_ratio"] == pytest.approx(row["seconds_per_token"] / (a * t_plain + b * t_proxy))
    assert rows["plain"]["floor_ratio"] == pytest.approx(1.0) and rows["ads-head"]["floor"] == "t_plain + t_proxy"
    assert rows["ads-fd"]["floor"] == "t_plain + 2·t_proxy"
    # the FLOP ratio stays as information: (teacher + 2 proxy) / teacher FLOPs per token, from the shapes
    info = results["model_sets"][0]
    teacher, proxy = info["teacher"]["flops_per_token"], info["proxy"]["flops_per_token"]
    assert results["flop_floor_ratio"] == pytest.approx((teacher + 2 * proxy) / teacher)
    assert info["source_proxy_device"] == "cpu"
    assert any("floor_ratio <= 1.05" in t["target"] for t in results["targets"])
    text = md.read_text()
    assert "## Performance" in text and results["machine"]["cpu"] in text and "floor ratio" in text
    assert "Ablation" in text  # ads-fd against ads-fd-no-transpose and reference


def test_perf_defaults_are_realistic_prompts_and_five_repeats():
    from benchmarks.perf import register
    from benchmarks.perf.run import settings_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    settings = settings_from_args(parser.parse_args(["perf"]), torch.device("cpu"))
    assert settings.prompt_length == 256 and settings.repeats >= 5 and settings.resident == "all"
    assert settings_from_args(parser.parse_args(["perf"]), torch.device("cuda")).resident == "one"
    quick = settings_from_args(parser.parse_args(["perf", "--quick", "--prompt-length", "100"]), None)
    assert quick.prompt_length == 100 and quick.shape == "small"


def test_floor_targets_can_fail():
    """The verdicts follow the rows: a made-up ads-fd above its floor budget fails, one within passes."""
    def results(ratio_b8, ratio_b1, fd_vs_ref):
        rows = []
        for batch, ratio in ((1, ratio_b1), (8, ratio_b8)):
            for n in (64, 256):
                rows.append({"models": "m", "method": "ads-fd", "batch": batch, "new_tokens": n, "tokens_per_s": 10.0,
                             "floor_ratio": ratio, "peak_mem_mb": 1.0, "memory_budget_mb": 1.0})
                rows.append({"models": "m", "method": "reference", "batch": batch, "new_tokens": n,
                             "tokens_per_s": 10.0 / fd_vs_ref, "peak_mem_mb": 1.0})
        verdicts = evaluate_targets({"results": rows, "model_sets": [{"name": "m"}]})
        return {v["target"].split(" (")[0]: v["met"] for v in verdicts}

    good = results(1.04, 1.09, 1.4)
    assert good["ads-fd floor_ratio <= 1.05 at batch >= 8"] and good["ads-fd floor_ratio <= 1.10 at batch < 8"]
    assert good["ads-fd faster than reference at every batch size"] and good["goal: ads-fd >= 1.3x reference at batch 1"]
    bad = results(1.2, 1.2, 0.9)
    assert bad["ads-fd floor_ratio <= 1.05 at batch >= 8"] is False
    assert bad["ads-fd floor_ratio <= 1.10 at batch < 8"] is False
    assert bad["ads-fd faster than reference at every batch size"] is False


def test_equal_memory_batch_follows_the_measured_memory_and_can_fail():
    """Largest batch in plain's memory at its largest batch: peak = fixed + per-sequence x batch, from the rows."""
    from benchmarks.perf.report import equal_memory

    def results(fd_b1, fd_b8):
        rows = [{"models": "m", "method": method, "batch": batch, "new_tokens": 64, "tokens_per_s": 1.0,
                 "peak_mem_mb": mem} for method, batch, mem in
                (("plain", 1, 100.0), ("plain", 8, 170.0), ("ads-fd", 1, fd_b1), ("ads-fd", 8, fd_b8))]
        data = {"results": rows, "model_sets": [{"name": "m"}], "machine": {}}
        verdict = next(v for v in evaluate_targets(data) if "same memory" in v["target"])
        return equal_memory(data)[0], verdict["met"]

    heavy, met = results(150.0, 290.0)  # 130 MB fixed + 20 MB per sequence: 2 sequences in 170 MB
    assert heavy["budget_mb"] == 170.0 and heavy["max_batch"] == {"plain": 8, "ads-fd": 2} and met is False
    light, met = results(110.0, 180.0)  # 100 MB fixed + 10 MB per sequence: 7 sequences
    assert light["max_batch"]["ads-fd"] == 7 and met is True


def test_proxy_alone_runs_the_forwards_of_one_penalty_copy(bench):
    """As many proxy forwards as the teacher's generate (the prompt, then new_tokens - 1 cached steps), each on one
    new token, with the KV cache holding the whole sequence at the end."""
    runner = bench.component("proxy")
    model = runner.model
    assert all(p.device.type == "cpu" for p in bench.models.proxy.parameters())
    seen = []
    handle = model.model.embed_tokens.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    try:
        ids, mask = bench.prompts(batch=3, seed=0)
        logits = runner.run(ids, mask, new_tokens=5, seed=0)
    finally:
        handle.remove()
    assert seen == [(3, ids.shape[1])] + [(3, 1)] * 4
    assert logits.shape[:2] == (3, 1)


def test_proxy_copies_are_the_source_plus_eps_g(bench):
    m = bench.models
    same = proxy_copy(m.proxy, torch.float32)
    plus = perturbed_proxy(m.proxy, m.gradient, 0.5, torch.float32)
    for name, parameter in m.proxy.named_parameters():
        torch.testing.assert_close(dict(same.named_parameters())[name], parameter)
        torch.testing.assert_close(dict(plus.named_parameters())[name], parameter + 0.5 * m.gradient.tensors[name])
    assert same.state_dict().keys() == m.proxy.state_dict().keys()


def test_resident_one_frees_each_group_and_reports_partial_rows():
    cpu = torch.device("cpu")
    teacher, proxy = random_models("tiny", VOCAB, cpu, torch.float32, seed=0)
    models = ModelSet("tiny", teacher, proxy, random_token_gradient(proxy, VOCAB), VOCAB, 0, torch.float32)
    settings = Settings(shape="tiny", vocab=VOCAB, batch_sizes=(2,), new_tokens=(3,), repeats=1, prompt_length=4,
                        methods=("plain", "proxy", "ads-fd", "permutation", "reference"), resident="one")
    assert method_groups(settings) == [("plain",), ("proxy",), ("ads-fd", "permutation"), ("reference",)]
    bench = Bench(models, settings, cpu, MemoryProbe(cpu))
    partial = []
    rows = run_grid(bench, progress=False, on_group_done=lambda r: partial.append(
        sorted(row["method"] for row in r if row["tokens_per_s"])))
    assert bench.components == {}  # nothing stays built after its group
    assert partial[0] == ["plain"] and partial[-1] == sorted(settings.methods)
    assert all(row["floor_ratio"] > 0 for row in rows)


def test_flop_count_matches_the_matmuls_of_a_step():
    teacher, proxy = random_models("tiny", VOCAB, torch.device("cpu"), torch.float32)
    config = teacher.config
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * hidden // config.num_attention_heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    assert describe_model(teacher)["flops_per_token"] == 2 * (layers * per_layer + VOCAB * hidden)


def test_perf_command_runs_on_checkpoints_given(tiny_dir, tmp_path):
    out = tmp_path / "ckpt.json"
    code = main(["bench", "perf", "--no-random", "--teacher", str(tiny_dir / "teacher"), "--proxy", str(tiny_dir / "proxy"),
                 "--batch-sizes", "2", "--new-tokens", "3", "--repeats", "1", "--methods", "ads-fd", "reference",
                 "--json", str(out), "--no-progress"])
    assert code == 0
    results = json.loads(out.read_text())
    assert {r["method"] for r in results["results"]} == {"plain", "proxy", "ads-fd", "reference"}
    assert all(r["models"].endswith("proxy") and r["tokens_per_s"] > 0 for r in results["results"])


def test_perf_command_rejects_half_a_checkpoint_pair(tiny_dir, capsys):
    assert main(["bench", "perf", "--teacher", str(tiny_dir / "teacher"), "--no-progress"]) == 2
    assert "--teacher and --proxy together" in capsys.readouterr().err


def test_fidelity_check_measures_fd_against_jvp_and_names_an_eps(bench):
    from benchmarks.perf.fidelity import SIN_WARN, fd_fidelity, fidelity_lines

    m, cpu = bench.models, torch.device("cpu")
    exact = fd_fidelity(m.proxy, m.gradient, VOCAB, eps=1e-3, dtype=torch.float32, device=cpu, length=8)
    assert exact["sin"] < SIN_WARN and not exact["warn"] and len(fidelity_lines(exact)) == 1
    # ‖g‖ ≈ 30 here: ε = 3e-2 is a step the model is far from linear over, and the check says so
    assert exact["sin_by_eps"]["0.03"] > SIN_WARN > exact["sin_by_eps"]["0.0001"]
    rounded = fd_fidelity(m.proxy, m.gradient, VOCAB, eps=1e-4, dtype=torch.bfloat16, device=cpu, length=8)
    assert rounded["sin_by_eps"]["0.0001"] > exact["sin_by_eps"]["0.0001"]  # bf16 rounding shows in the angle
    assert rounded["warn"] and rounded["best_eps"] != 1e-4
    line = fidelity_lines(rounded)[-1]
    assert "WARNING" in line and f"--eps {rounded['best_eps']}" in line
