"""Shared fixtures: tiny tokenizers and models built locally, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline data not found at {SHARED_DATA} (a user's clone has no ../shared; CI and dev have it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tokenizer, a teacher and a proxy of the same family, and a GPT-2 proxy."""
    from tiny_models import build_gpt2, build_llama, build_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    tokenizer = build_tokenizer(root / "tokenizer")
    build_llama(root / "teacher", tokenizer, hidden=48, layers=2, seed=1)
    build_llama(root / "proxy", tokenizer, hidden=32, layers=2, seed=2)
    build_gpt2(root / "proxy_gpt2", tokenizer, hidden=32, layers=2, seed=3)
    other = build_tokenizer(root / "other_tokenizer", vocab_size=300,
                            corpus=["completely different words for another vocabulary"] * 5)
    build_llama(root / "proxy_other_vocab", other, hidden=32, layers=1, seed=4)
    return root
