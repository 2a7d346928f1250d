"""A smoke-preset toy world built once per test session, shared by the toy-world and distillation tests.

Import the fixture into a test module with `from toy_world_fixtures import smoke_world  # noqa: F401`.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_BUILT: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory: pytest.TempPathFactory):
    """(world, cache_dir): the smoke toy world, built into a session temporary cache.

    Each module importing this fixture gets its own copy of it, so the built world is memoised here: the
    second module reuses the first one's cache directory and the build is done once per session.
    """
    from benchmarks.toy_world import build_toy_world

    if "smoke" not in _BUILT:
        cache = tmp_path_factory.mktemp("toy_cache")
        _BUILT["smoke"] = (build_toy_world("smoke", cache_dir=cache), cache)
    return _BUILT["smoke"]
