"""Diagnostics of whether antidistillation can poison a world (benchmarks.diagnostics), on real tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_models import CHAT_TEMPLATE, CORPUS, SPECIAL_TOKENS, build_llama
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from toy_world_fixtures import smoke_world  # noqa: F401
from transformers import PreTrainedTokenizerFast

from benchmarks.diagnostics import (
    diagnose,
    diagnose_run,
    digit_token_mask,
    expected_deviations,
    finite_difference_delta,
    format_diagnostics,
    gradient_cosine,
    proxy_nll_by_position,
    split_half_gradients,
    teacher_forced_diagnostics,
)
from harness_plugin import AntidistillationPenalty, ProxyGradient, generate
from harness_plugin.prompts import format_prompt
from harness_plugin.sampling import PermutationLogitsProcessor
from harness_plugin.tokens import encode_trace

QUESTIONS = ["Tom has 3 apples and buys 5 more. How many apples?", "A train travels 60 km in 2 hours.",
             "Anna is 12 years old. Her brother is 4 years older.", "Solve for x: 2x + 3 = 7.",
             "What is 7 + 8?", "A box holds 24 pens. How many in 3 boxes?"]


def _digit_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that writes every digit as its own token (like the toy world's)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(teacher, proxy, tokenizer, greedy traces, folder): random tiny Llamas on a digit-splitting tokenizer."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("diag")
    tokenizer = _digit_tokenizer(root / "tokenizer")
    teacher = build_llama(root / "teacher", tokenizer, hidden=48, layers=2, seed=1).eval()
    proxy = build_llama(root / "proxy", tokenizer, hidden=32, layers=2, seed=2).eval()
    prompts = [format_prompt(tokenizer, q) for q in QUESTIONS]
    greedy = generate(teacher, tokenizer, prompts, sampler="temperature", tau=0.0, max_new_tokens=12,
                      batch_size=3, progress=False)
    traces = [{**t.to_dict(), "reference": "8"} for t in greedy]
    return teacher, proxy, tokenizer, traces, root


def test_digit_tokens_are_the_digit_characters(tiny):
    _, _, tokenizer, _, _ = tiny
    mask = digit_token_mask(tokenizer)
    ids = tokenizer("Tom has 35 apples, 2 pears and 104 plums.", add_special_tokens=False)["input_ids"]
    # the tokenizer splits digits, so the digit tokens are exactly the digit characters, in order
    assert [tokenizer.decode([i]).strip() for i in ids if mask[i]] == list("352104")
    assert not mask[tokenizer.eos_token_id]


def test_digit_share_on_known_text(tiny):
    _, proxy, tokenizer, _, _ = tiny
    prompt = format_prompt(tokenizer, "Tom has 3 apples and buys 5 more.")
    completion = "3 + 5 = 8 apples. #### 8"
    stats = proxy_nll_by_position(proxy, tokenizer, [{"prompt": prompt, "completion": completion}], progress=False)
    n_digits = sum(c.isdigit() for c in completion)
    n_positions = encode_trace(tokenizer, prompt, completion).completion_length  # completion tokens + EOS
    assert stats["n_digit_positions"] == n_digits == 4
    assert stats["n_other_positions"] == n_positions - n_digits
    assert stats["digit_position_share"] == pytest.approx(n_digits / n_positions)
    # independent oracle for the total: the model's own mean loss over the completion labels
    encoded = encode_trace(tokenizer, prompt, completion)
    ids = torch.tensor([encoded.input_ids])
    labels = ids.clone()
    labels[:, : encoded.prompt_length] = -100
    with torch.no_grad():
        total = float(proxy(input_ids=ids, labels=labels).loss) * n_positions
    digit_total = stats["proxy_nll_digit_mean"] * n_digits
    other_total = stats["proxy_nll_other_mean"] * (n_positions - n_digits)
    assert digit_total + other_total == pytest.approx(total, rel=1e-4)
    assert stats["proxy_nll_digit_share"] == pytest.approx(digit_total / total, rel=1e-4)
    no_digits = proxy_nll_by_position(proxy, tokenizer, [{"prompt": prompt, "completion": "many apples"}],
                                      progress=False)
    assert no_digits["proxy_nll_digit_share"] == 0 and no_digits["digit_position_share"] == 0


def test_split_half_cosine_of_identical_halves_is_one(tiny):
    _, proxy, tokenizer, traces, _ = tiny
    doubled = [t for t in traces[:3] for _ in range(2)]  # even half == odd half
    even, odd = split_half_gradients(proxy, tokenizer, doubled, batch_size=4, progress=False)
    assert gradient_cosine(even.tensors, odd.tensors) == pytest.approx(1.0, abs=1e-6)
    different_even, different_odd = split_half_gradients(proxy, tokenizer, traces, batch_size=4, progress=False)
    assert gradient_cosine(different_even.tensors, different_odd.tensors) < 0.999


def test_expected_deviations_greedy_zero_and_grow_with_temperature(tiny):
    teacher, proxy, tokenizer, traces, _ = tiny
    gradient = ProxyGradient.compute(proxy, tokenizer, traces, batch_size=4, progress=False)
    taus = [0.0, 0.5, 1.0, 2.0]
    samplers = [{"sampler": "temperature", "tau": tau, "lam": 0.0, "eps": 0.01} for tau in taus]
    out = teacher_forced_diagnostics(teacher, proxy, tokenizer, traces, gradient, samplers, top_p=1.0,
                                     batch_size=4, progress=False)
    totals = [d["digit"] + d["other"] for d in out["expected_deviations"]]
    assert totals[0] == pytest.approx(0.0, abs=1e-9)  # the traces are the teacher's own greedy tokens
    assert totals[0] < totals[1] < totals[2] < totals[3]
    assert out["n_forced_positions"] == sum(len(t["token_ids"]) + t["finished"] for t in traces)


def test_ads_tilt_against_greedy_deviates_and_permutation_does_not():
    logp = torch.log_softmax(torch.randn(5, 40, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    greedy = logp.argmax(-1)
    delta = torch.zeros(5, 40)
    delta[torch.arange(5), greedy] = -10.0  # Δ strongly against the greedy token
    temperature = expected_deviations(logp, greedy, {"sampler": "temperature", "tau": 1.0, "lam": 0.0}, 1.0)
    ads = expected_deviations(logp, greedy, {"sampler": "ads", "tau": 1.0, "lam": 1.0}, 1.0, delta)
    assert (ads > temperature).all()
    assert ads.min() > 0.99  # exp(-10) leaves the greedy token almost no mass
    draws = [PermutationLogitsProcessor(None, 0.0, 1.0, 40, seed=k) for k in range(4)]
    permutation = expected_deviations(logp, greedy, {"sampler": "permutation", "tau": 1.0, "lam": 1.0}, 1.0,
                                      delta, draws)
    # the permuted Δ hits the greedy token only by chance (4 draws over 40 tokens): far from the ads tilt
    assert permutation.mean() < ads.mean() - 0.3
    assert not torch.allclose(permutation, temperature)  # but it does tilt: the -10 lands on other tokens


def test_full_sequence_delta_matches_jvp_at_the_last_position(tiny):
    _, proxy, tokenizer, traces, _ = tiny
    gradient = ProxyGradient.compute(proxy, tokenizer, traces, batch_size=4, progress=False)
    encoded = encode_trace(tokenizer, traces[0]["prompt"], traces[0]["completion"])
    ids = torch.tensor([encoded.input_ids])
    vocab = len(tokenizer)
    # the random tiny proxy has a large g (|Δ| up to hundreds), so ε = 1e-3 keeps the O(ε²) error small in fp32
    full = finite_difference_delta(proxy, gradient, ids, eps=1e-3, vocab_size=vocab)[0]
    jvp = AntidistillationPenalty(proxy, gradient, eps=1e-3, method="jvp", vocab_size=vocab)
    for end in (encoded.prompt_length, ids.shape[1] - 2):
        exact = jvp(ids[:, :end])[0]
        got = full[end - 1]
        assert torch.nn.functional.cosine_similarity(got, exact, dim=0) > 0.9999, end
        # the O(ε²) error concentrates on a few entries: bound the worst one by 1% of the largest |Δ|
        assert (got - exact).abs().max() <= 1e-2 * exact.abs().max(), end
    # at the diagnostics' ε = 0.01, it is the sampler's own estimator (KV-cached perturbed copies), all positions
    full = finite_difference_delta(proxy, gradient, ids, eps=0.01, vocab_size=vocab)[0]
    cached = AntidistillationPenalty(proxy, gradient, eps=0.01, method="fd", vocab_size=vocab)
    for end in range(encoded.prompt_length, ids.shape[1]):
        expected = cached(ids[:, :end])[0]
        assert torch.allclose(full[end - 1], expected, atol=1e-5 * expected.abs().max().item() + 1e-4), end


def test_diagnose_on_tiny_models_is_json_and_consistent(tiny):
    teacher, proxy, tokenizer, traces, _ = tiny
    samplers = [{"sampler": "temperature", "tau": 0.0, "lam": 0.0, "eps": 0.01},
                {"sampler": "temperature", "tau": 1.0, "lam": 0.0, "eps": 0.01},
                {"sampler": "ads", "tau": 1.0, "lam": 1.0, "eps": 0.01},
                {"sampler": "permutation", "tau": 1.0, "lam": 1.0, "eps": 0.01}]
    result = diagnose(teacher, proxy, tokenizer, traces, None, samplers, n_forced=4, n_sampled=3, batch_size=4,
                      max_new_tokens=12, progress=False)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    full = ProxyGradient.compute(proxy, tokenizer, traces, batch_size=4, progress=False)
    assert result["grad_norm"] == pytest.approx(full.norm, rel=1e-4)  # g from the two halves == g on all traces
    assert -1 <= result["split_half_cosine"] <= 1
    c = result["split_half_cosine"]
    assert result["split_half_cosine_expected_full"] == pytest.approx(2 * c / (1 + c))
    assert result["targets"]["split_half_cosine"]["pass"] == (c >= 0.8)
    greedy, temperature, ads, permutation = result["samplers"]
    assert greedy["deviated_share"] == 0.0 and greedy["answer_survives"] is None
    assert greedy["expected_deviations_digit"] + greedy["expected_deviations_other"] == pytest.approx(0, abs=1e-9)
    assert temperature["expected_deviations_other"] > 0
    assert ads["tilt_nats"] == pytest.approx(result["delta_top20_std_median"])
    assert result["delta_top20_std_median"] > 0 and math.isfinite(result["delta_top20_std_median"])
    assert all(row["n_sampled"] == 3 for row in result["samplers"])
    report = format_diagnostics(result)
    assert "split-half cosine" in report and "permutation tau=1 lam=1 eps=0.01" in report
    assert ("FAIL" in report) == (not result["targets"]["split_half_cosine"]["pass"]
                                  or not result["targets"]["other_positions_entropy_ge_0_3"]["pass"])


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from harness_plugin.cli import main

    assert main(["bench", "diagnose", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "config.yaml" in lines[0], err
    assert main(["bench", "diagnose", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_diagnose_run_names_the_missing_stage(tmp_path, tiny):
    from benchmarks.config import BenchConfig, ConfigError

    config = BenchConfig.load("smoke", overrides=["models.teacher=/nowhere/t", "models.proxy=/nowhere/p"])
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    with pytest.raises(ConfigError, match="no holdout traces yet"):
        diagnose_run(tmp_path)
    (tmp_path / "holdout_traces.jsonl").write_text(json.dumps(tiny[3][0]) + "\n")
    with pytest.raises(ConfigError, match="no proxy gradient yet"):
        diagnose_run(tmp_path)


def test_cli_diagnoses_a_run_folder(tmp_path, tiny, capsys):
    from benchmarks.config import BenchConfig
    from harness_plugin.cli import main
    from harness_plugin.io import write_jsonl

    _, proxy, tokenizer, traces, root = tiny
    config = BenchConfig.load("smoke", overrides=[f"models.teacher={root / 'teacher'}",
                                                  f"models.proxy={root / 'proxy'}",
                                                  f"models.student={root / 'proxy'}"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config.to_yaml())
    write_jsonl(run / "holdout_traces.jsonl", traces)
    ProxyGradient.compute(proxy, tokenizer, traces, batch_size=4, progress=False).save(run / "gradient")
    assert main(["bench", "diagnose", str(run), "--n-forced", "3", "--n-sampled", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((run / "diagnostics.json").read_text())
    assert f"diagnostics: {run / 'diagnostics.json'}" in out and "split-half cosine" in out
    # one row per grid point of the run, in the grid's order
    assert [(r["sampler"], r["tau"], r["lam"]) for r in saved["samplers"]] == [
        (p.short_sampler, p.tau, p.lam) for p in config.grid]
    assert saved["n_forced"] == 3 and all(r["n_sampled"] == 2 for r in saved["samplers"])
    assert saved["grad_norm"] == pytest.approx(ProxyGradient.load(run / "gradient").norm, rel=1e-6)


@pytest.mark.slow
def test_diagnose_on_the_smoke_world(smoke_world):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.evaluate import generate_completions

    world, _ = smoke_world
    tokenizer = AutoTokenizer.from_pretrained(str(world.teacher_dir))
    teacher = AutoModelForCausalLM.from_pretrained(str(world.teacher_dir)).eval()
    proxy = AutoModelForCausalLM.from_pretrained(str(world.proxy_dir)).eval()
    problems = world.holdout[:8]
    prompts = [format_prompt(tokenizer, p["question"]) for p in problems]
    completions = generate_completions(teacher, tokenizer, prompts, batch_size=8, max_new_tokens=96)
    traces = [{"prompt": pr, "completion": c, "reference": p["final"]}
              for p, pr, c in zip(problems, prompts, completions)]
    samplers = [{"sampler": "temperature", "tau": 1.0, "lam": 0.0, "eps": 0.01},
                {"sampler": "ads", "tau": 0.8, "lam": 1.0, "eps": 0.01},
                {"sampler": "permutation", "tau": 0.8, "lam": 1.0, "eps": 0.01}]
    result = diagnose(teacher, proxy, tokenizer, traces, None, samplers, n_forced=4, n_sampled=4, batch_size=8,
                      max_new_tokens=96, progress=False)
    json.dumps(result, allow_nan=False)
    for key in ("grad_norm", "split_half_cosine", "proxy_nll_other_mean", "teacher_entropy_other_mean",
                "other_positions_entropy_ge_0_3", "delta_top20_std_median", "digit_position_share"):
        assert result[key] is not None and math.isfinite(result[key]), key
    # a digit statistic is a number exactly when the traces have digit positions (the smoke teacher is barely
    # trained, so its greedy traces may have none)
    assert (result["proxy_nll_digit_mean"] is None) == (result["n_digit_positions"] == 0)
    assert (result["proxy_nll_digit_share"] > 0) == (result["n_digit_positions"] > 0)
    for row in result["samplers"]:
        assert row["expected_deviations_digit"] >= 0 and row["expected_deviations_other"] >= 0
        assert 0 <= row["accuracy"] <= 1 and row["n_sampled"] == 4
    print(format_diagnostics(result))
