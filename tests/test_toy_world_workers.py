"""Training the toy world's models in worker processes gives the same models as training them in this process."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture()
def jobs(tmp_path):
    from transformers import AutoTokenizer

    from benchmarks.toy_world.generator import make_splits
    from benchmarks.toy_world.train import ModelSpec, TrainSpec, encode_pairs
    from benchmarks.toy_world.vocab import STYLES, train_tokenizer
    from benchmarks.toy_world.workers import TrainJob
    from harness_plugin.prompts import format_prompt

    problems = make_splits(0, {"train": 64})["train"]
    texts = [f"{p['question']}\n{p['answer']}" for p in problems]
    tok_dir = train_tokenizer(texts, STYLES["teacher"], 300, tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    examples = encode_pairs(tok, [(format_prompt(tok, p["question"]), p["answer"]) for p in problems], 128)
    schedule = TrainSpec(steps=4, batch_size=4, warmup=1)
    return [
        TrainJob("big", ModelSpec("llama", hidden=32, layers=1, heads=2), schedule, tok_dir, examples, 1),
        TrainJob("small", ModelSpec("gpt_neox", hidden=16, layers=1, heads=2), schedule, tok_dir, examples, 2),
    ]


def test_workers_train_the_same_models_as_one_process(jobs, tmp_path, monkeypatch) -> None:
    import torch
    from safetensors.torch import load_file

    from benchmarks.toy_world.workers import train_models

    # Two workers split the cores between them: pretend there are two, so each gets one thread on any machine,
    # and train in this process on one thread too, so both runs do the same arithmetic in the same order.
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = train_models(jobs, tmp_path / "here", workers=1)
    finally:
        torch.set_num_threads(threads)
    there = train_models(jobs, tmp_path / "there", workers=2)
    assert list(here) == list(there) == ["big", "small"]
    for role in here:
        assert here[role]["params"] == there[role]["params"]
        a = load_file(tmp_path / "here" / role / "model.safetensors")
        b = load_file(tmp_path / "there" / role / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), f"{role} differs between the two runs"
        assert (tmp_path / "there" / role / "tokenizer.json").is_file()
    # and they were trained: the weights moved away from the seeded initialisation
    from transformers import AutoTokenizer

    from benchmarks.toy_world.train import make_model

    job = jobs[0]
    fresh = make_model(job.spec, AutoTokenizer.from_pretrained(str(job.tokenizer_dir)), job.seed).state_dict()
    trained = load_file(tmp_path / "there" / job.role / "model.safetensors")
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained if k in fresh)
