"""The smoke build of the toy world: loadable models and tokenizers, disjoint splits on disk, cache reuse."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from toy_world_fixtures import smoke_world  # noqa: F401

from benchmarks.toy_world import ToyWorld, build_toy_world, get_preset, world_hash
from benchmarks.toy_world.vocab import STYLES
from harness_plugin.prompts import format_prompt


def test_models_and_tokenizers_load_through_auto_classes(smoke_world) -> None:  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    world, _ = smoke_world
    teacher_tok = AutoTokenizer.from_pretrained(world.teacher_tokenizer_dir)
    student_tok = AutoTokenizer.from_pretrained(world.student_tokenizer_dir)
    assert teacher_tok.get_vocab() != student_tok.get_vocab(), "the student must have a tokenizer of its own"
    question = world.test[0]["question"]
    for directory, expected_type, tok, style in [
        (world.teacher_dir, "llama", teacher_tok, "teacher"),
        (world.proxy_dir, "gpt_neox", teacher_tok, "teacher"),  # the student's family, the teacher's tokenizer
        (world.student_dir, "gpt_neox", student_tok, "student"),
        (world.distilled_student_dir, "gpt_neox", student_tok, "student"),
    ]:
        model = AutoModelForCausalLM.from_pretrained(directory)
        assert model.config.model_type == expected_type
        assert model.config.vocab_size == len(tok)
        own = AutoTokenizer.from_pretrained(directory)
        assert own.get_vocab() == tok.get_vocab()
        prompt = format_prompt(own, question)
        assert question in prompt and prompt != question
        # the build renders the template before any tokenizer exists (its tokenizer-training text): the same text
        assert STYLES[style].prompt(question) == prompt
        ids = own(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=own.pad_token_id)
        assert out.shape[1] == ids["input_ids"].shape[1] + 3 or own.eos_token_id in out[0].tolist()
        assert torch.isfinite(model(**ids).logits).all()
    # teacher and proxy share the tokenizer (the proxy gradient needs it); the proxy is of the student's family
    t = AutoModelForCausalLM.from_pretrained(world.teacher_dir)
    p = AutoModelForCausalLM.from_pretrained(world.proxy_dir)
    s = AutoModelForCausalLM.from_pretrained(world.student_dir)
    assert t.config.vocab_size == p.config.vocab_size
    assert p.config.model_type == s.config.model_type != t.config.model_type


def test_splits_on_disk_are_disjoint_and_complete(smoke_world) -> None:  # noqa: F811
    world, _ = smoke_world
    preset = get_preset("smoke")
    sizes = {"train": preset.n_train, "holdout": preset.n_holdout, "test": preset.n_test}
    questions = {}
    for name, size in sizes.items():
        records = world.split(name)
        assert len(records) == size
        assert all(r["answer"].endswith("#### " + r["final"]) for r in records)
        questions[name] = {r["question"] for r in records}
    assert not questions["train"] & questions["test"]
    assert not questions["holdout"] & questions["test"]
    assert not questions["train"] & questions["holdout"]
    assert len(world.split("test", "math")) == preset.n_math_test
    assert "\\boxed{" in world.split("test", "math")[0]["answer"]
    assert set(world.splits) == {"train", "holdout", "test"}


def test_report_and_traces(smoke_world) -> None:  # noqa: F811
    world, _ = smoke_world
    accuracy = world.report["accuracy"]
    assert set(accuracy) == {"teacher", "proxy", "proxy_forced", "student", "student_forced",
                             "student_distilled_clean"}
    assert world.report["libraries"]["torch"] and world.report["timing"]["build_workers"] >= 1
    holdout = [json.loads(line) for line in world.holdout_traces_path.read_text().splitlines()]
    assert len(holdout) == get_preset("smoke").n_holdout and all("reference" in t for t in holdout)
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())
    timing = world.report["timing"]["total"]
    assert timing["wall_s"] > 0 and timing["cpu_s"] > 0
    traces = [json.loads(line) for line in world.clean_traces_path.read_text().splitlines()]
    assert len(traces) == get_preset("smoke").n_distill
    assert all(t["prompt"].endswith("<|assistant|>\n") and t["question"] in t["prompt"] for t in traces)
    assert (world.root / "eval" / "student.jsonl").is_file()


def test_cache_is_reused_and_keyed_by_content(smoke_world) -> None:  # noqa: F811
    world, cache = smoke_world
    stamp = (world.root / "manifest.json").stat().st_mtime_ns
    start = time.perf_counter()
    again = build_toy_world("smoke", cache_dir=cache, log=lambda _: None)
    assert time.perf_counter() - start < 5
    assert again.root == world.root
    assert (again.root / "manifest.json").stat().st_mtime_ns == stamp
    assert ToyWorld.load(world.root).hash == world.hash == world.root.name
    # the world's folder (a renamed mkdtemp, 0700 by birth) has the mode the umask gives, like its files
    from harness_plugin.io import current_umask

    assert world.root.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    # only the finished world is in the cache: no temporary build directories left behind
    assert [p.name for p in cache.iterdir()] == [world.root.name]
    smoke = get_preset("smoke")
    assert world_hash(smoke) == world.hash
    assert world_hash(replace(smoke, seed=1)) != world.hash
    assert world_hash(replace(smoke, n_train=401)) != world.hash


def test_cache_dir_from_environment(monkeypatch, tmp_path) -> None:
    from benchmarks.toy_world import default_cache_dir

    monkeypatch.setenv("ANTIDISTILL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "toy_world"


def test_unknown_preset_and_missing_world_fail_clearly(tmp_path) -> None:
    with pytest.raises(ValueError, match="smoke"):
        build_toy_world("huge", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="toy-world"):
        ToyWorld.load(tmp_path)


def test_cli_prints_the_accuracy_table(smoke_world, capsys) -> None:  # noqa: F811
    from harness_plugin.cli import main

    _, cache = smoke_world
    assert main(["bench", "toy-world", "--preset", "smoke", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "reused from cache" in out
    for label in ("teacher", "proxy", "student (undistilled)", "clean greedy teacher traces"):
        assert label in out
    world, _ = smoke_world
    assert f"diagnostics: {world.diagnostics_path}" in out
    saved = json.loads(world.diagnostics_path.read_text())
    assert saved["n_traces"] == get_preset("smoke").n_holdout and "split_half_cosine" in saved
    # the second call reads the saved file instead of recomputing
    stamp = world.diagnostics_path.stat().st_mtime_ns
    assert main(["bench", "toy-world", "--preset", "smoke", "--cache-dir", str(cache), "--no-progress"]) == 0
    assert world.diagnostics_path.stat().st_mtime_ns == stamp
    from harness_plugin.progress import progress_enabled

    assert progress_enabled(), "--no-progress run in-process must restore the bars afterwards"


def test_no_progress_hides_every_bar_of_a_build(tmp_path) -> None:
    """A fresh smoke build with --no-progress: no stage bar, no training bars (worker processes), no loading bars."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "harness_plugin.cli", "bench", "toy-world", "--preset", "smoke", "--cache-dir",
           str(tmp_path / "cache"), "--no-progress", "--no-diagnostics"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "building toy world" in done.stdout and "teacher" in done.stdout
    for bar in ("it/s", "s/it", "%|"):
        assert bar not in done.stderr, done.stderr[-2000:]


def test_teacher_probe_runs_one_recipe_in_its_own_process(tmp_path) -> None:
    """The probe trains the teacher alone and writes its accuracy; it refuses to overwrite an existing file."""
    import os
    import subprocess
    import sys

    out = tmp_path / "probe.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks.toy_world.teacher_probe", "--preset", "smoke", "--variant",
           "varied-joins", "--noisy-fraction", "0.5", "--n-test", "4", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["variant"] == "varied-joins" and result["noisy_fraction"] == 0.5 and result["n_test"] == 4
    assert 0.0 <= result["accuracy"] <= 1.0 and result["steps"] == get_preset("smoke").teacher_train.steps
    completions = [json.loads(line) for line in out.with_suffix(".completions.jsonl").read_text().splitlines()]
    assert len(completions) == 4 and sum(r["correct"] for r in completions) / 4 == result["accuracy"]
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr


def test_compare_tells_a_copy_from_a_changed_world(smoke_world, tmp_path, capsys) -> None:  # noqa: F811
    import json
    import shutil

    from benchmarks.toy_world.compare import compare_worlds, main

    world, _ = smoke_world
    copy = tmp_path / "copy"
    shutil.copytree(world.root, copy)
    # what differs between two builds of one world: timings in the report, the distillation's path and time
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["report"]["timing"]["total"]["wall_s"] += 100.0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "diagnostics.json").write_text("{}")  # computed later, on one of the two only
    assert compare_worlds(world.root, copy)["same"]
    assert main([str(world.root), str(copy)]) == 0

    with open(copy / "traces" / "teacher_greedy_holdout.jsonl", "a", encoding="utf-8") as f:
        f.write("{}\n")
    manifest["report"]["accuracy"]["teacher"] += 0.5
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "eval" / "student.jsonl").unlink()
    result = compare_worlds(world.root, copy)
    assert not result["same"]
    assert result["differing_files"] == ["traces/teacher_greedy_holdout.jsonl"]
    assert result["differing_report_keys"] == ["accuracy"]
    assert result["only_a"] == ["eval/student.jsonl"]
    assert main([str(world.root), str(copy)]) == 1
    assert "different worlds" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="not a built toy world"):
        compare_worlds(world.root, tmp_path)
