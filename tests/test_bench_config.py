"""Benchmark settings: presets, overrides, and bad settings caught before any work."""

from __future__ import annotations

import math

import pytest

from benchmarks.config import BenchConfig, ConfigError, parse_set, preset_names
from benchmarks.data import check_data_available, load_splits


def test_every_preset_loads_and_has_all_three_samplers():
    assert {"toy", "smoke", "paper-gsm8k", "paper-math"} <= set(preset_names())
    for name in preset_names():
        config = BenchConfig.load(name)
        samplers = {p.sampler for p in config.grid}
        assert samplers == {"temperature", "antidistillation", "permutation"}
        assert any(p.is_clean for p in config.grid), "the clean-trace student needs a greedy point"


def test_overrides_from_set_and_file(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("grid:\n  antidistillation:\n    lam: [3, 5]\ndistill:\n  warmup_ratio: 0.1\n")
    config = BenchConfig.load("smoke", extra, ["generation.max_new_tokens=12", "tracking.experiment=mine"])
    lams = [p.lam for p in config.grid if p.sampler == "antidistillation"]
    assert lams == [3.0, 5.0]
    assert config["generation"]["max_new_tokens"] == 12
    assert config["distill"]["warmup_ratio"] == 0.1
    assert config.experiment == "mine"
    assert parse_set("a.b=[1, 2]") == {"a": {"b": [1, 2]}}


@pytest.mark.parametrize(("overrides", "message"), [
    (["grid.antidistillation.lam=[-1]"], "lam must be >= 0"),
    (["grid.permutation.eps=0"], "eps must be > 0"),
    (["no_such_key=1"], "unknown setting 'no_such_key'"),
    (["distill.method=magic"], "lora"),
    (["dataset=imagenet"], "unknown dataset"),
    (["dataset=gsm8k"], "needs models.teacher"),
    (["generation.top_p=1.5"], "top_p"),
    (["grid.temperature.tau=[1, 1]"], "repeats"),
    (["generation.batch_size=0"], "positive integer"),
    (["grid.calibrate=[magic]"], "unknown sampler"),
    (["generation.top_k=-1"], "generation.top_k"),
    (["grid.penalty=bogus"], "grid.penalty"),
    (["models.dtype=bogus"], "models.dtype"),
    (["distill.epochs=-1"], "distill.epochs"),
    (["distill.batch_size=0"], "distill.batch_size"),
    (["distill.learning_rate=abc"], "distill.learning_rate"),
    (["generation.seed=abc"], "generation.seed"),
    (["evaluation.answer_forcing_tokens=-5"], "answer_forcing_tokens"),
    (["toy_world=bogus"], "toy_world"),
    (["gradient.loss_tokens=words"], "gradient.loss_tokens"),
    (["distill.seeds=[1, 1]"], "distill.seeds"),
    (["grid.endpoint=2"], "grid.endpoint"),
    (["grid.calibrate=[temperature]", "grid.targets=[1.5]"], "grid.targets"),
    (["grid.calibrate=[temperature]", "grid.calibration.n_problems=0"], "n_problems"),
    (["grid.extra_penalties=[magic]"], "unknown method"),
    (["grid.extra_penalties=[fd]"], "other than grid.penalty"),
    (["grid.extra_penalties=[head, head]"], "distinct"),
])
def test_bad_settings_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        BenchConfig.load("smoke", overrides=overrides)


def test_calibrated_points_wait_for_their_knob_and_are_named_by_target():
    config = BenchConfig.load("toy")
    calibrated = [p for p in config.grid if p.target is not None]
    assert config.calibrated and len(calibrated) == 9
    assert {p.target for p in calibrated} == {0.9, 0.7, 0.5}
    assert all(math.isnan(p.lam if p.sampler != "temperature" else p.tau) for p in calibrated)
    assert "antidistillation-tau0.8-eps0.01-target0.7" in {p.name for p in calibrated}
    assert not BenchConfig.load("smoke").calibrated


def test_an_extra_penalty_repeats_every_tilted_point_on_a_curve_of_its_own():
    plain = BenchConfig.load("toy")
    config = BenchConfig.load("toy", overrides=["grid.extra_penalties=[head]"])
    tilted = [p for p in plain.grid if p.sampler != "temperature"]
    extra = config.grid[len(plain.grid):]
    assert config.grid[: len(plain.grid)] == plain.grid  # the existing points keep their names and folders
    assert [(p.sampler, p.target, p.penalty) for p in extra] == [(p.sampler, p.target, "head") for p in tilted]
    assert {p.curve for p in extra} == {"antidistillation-head", "permutation-head"}
    assert "antidistillation-tau0.8-eps0.01-target0.7-head" in {p.name for p in extra}
    assert {p.curve for p in plain.grid} == {"temperature", "antidistillation", "permutation"}


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="smoke"):
        BenchConfig.load("large")


def test_missing_offline_data_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTIDISTILL_DATA_DIR", str(tmp_path))
    config = BenchConfig.load("paper-gsm8k")
    with pytest.raises(ConfigError, match="gsm8k/train.jsonl"):
        check_data_available(config)


def test_paper_splits_from_offline_data(shared_data, monkeypatch):
    monkeypatch.setenv("ANTIDISTILL_DATA_DIR", str(shared_data))
    gsm8k = load_splits(BenchConfig.load("paper-gsm8k"))
    assert len(gsm8k["train"]) == int(7473 * 0.7) and len(gsm8k["holdout"]) == 7473 - int(7473 * 0.7)
    assert len(gsm8k["test"]) == 1209  # GSM8K-Platinum
    assert gsm8k["train"][0]["reference"] == "72"  # first GSM8K train problem (Natalia's clips)
    math = load_splits(BenchConfig.load("paper-math", overrides=["data.n_test=50"]))
    assert 5200 < len(math["train"]) <= 5250 and len(math["test"]) == 50
    assert all(r["reference"] for r in math["test"])
    assert {r["id"] for r in math["train"]}.isdisjoint(r["id"] for r in math["holdout"])


def test_distill_batch_is_the_global_batch_split_over_processes():
    config = BenchConfig.load("toy", None, ["distill.batch_size=16"])
    assert config.distill_config(processes=1).batch_size == 16
    assert config.distill_config(processes=2).batch_size == 8  # two ranks x 8 = the same 16 per optimizer step
    assert config.distill_config(seed=3, processes=4).seed == 3
    with pytest.raises(ConfigError, match="multiple of 3"):
        config.distill_config(processes=3)
