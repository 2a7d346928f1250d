"""Are two built toy worlds the same world? File contents and reports compared, timings and paths aside.

    python -m benchmarks.toy_world.compare ~/.cache/antidistill/toy_world/<hash A> ~/.cache/antidistill/toy_world/<hash B>

A world's hash covers its build code, so a change that only moves code gives a new hash; this says whether the
world behind it changed (splits, tokenizers, weights, evaluation records, traces, accuracies), for a refactor of the
build or a build on other libraries. Exits 0 when the worlds are the same, 1 when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

# What differs between two builds of the same world: where it was built, how long it took, what was derived later.
_IGNORED_FILES = {"manifest.json", "diagnostics.json"}
# The reference distillation's timing and temporary path; peft's card and config of a LoRA adapter (the temporary
# base path, target modules in set order): its weights and the merged model are compared.
_IGNORED_NAMES = {"distill.json", "README.md", "adapter_config.json"}
_IGNORED_REPORT_KEYS = {"timing"}
_IGNORED_TRAIN_KEYS = {"wall_s", "cpu_s"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> set[str]:
    """The world's files that say what it is (relative paths): all but what the build's timing and later
    commands write, so a world whose diagnostics were computed matches one whose were not."""
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {rel for rel in files if rel not in _IGNORED_FILES and Path(rel).name not in _IGNORED_NAMES}


def _report(root: Path) -> dict[str, Any]:
    report = json.loads((root / "manifest.json").read_text())["report"]
    report = {k: v for k, v in report.items() if k not in _IGNORED_REPORT_KEYS}
    report["train"] = {role: {k: v for k, v in stats.items() if k not in _IGNORED_TRAIN_KEYS}
                       for role, stats in report.get("train", {}).items()}
    return report


def compare_worlds(a: str | Path, b: str | Path) -> dict[str, Any]:
    """{"same", "only_a", "only_b", "differing_files", "differing_report_keys", "n_compared"} for two world folders."""
    a, b = Path(a), Path(b)
    for root in (a, b):
        if not (root / "manifest.json").is_file():
            raise FileNotFoundError(f"{root} is not a built toy world (no manifest.json)")
    files_a, files_b = _files(a), _files(b)
    shared = sorted(files_a & files_b)
    differing = [rel for rel in shared if _digest(a / rel) != _digest(b / rel)]
    report_a, report_b = _report(a), _report(b)
    differing_keys = sorted(k for k in set(report_a) | set(report_b) if report_a.get(k) != report_b.get(k))
    only_a, only_b = sorted(files_a - files_b), sorted(files_b - files_a)
    return {"same": not (differing or differing_keys or only_a or only_b), "only_a": only_a, "only_b": only_b,
            "differing_files": differing, "differing_report_keys": differing_keys, "n_compared": len(shared)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toy_world.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world_a", type=Path, help="a built world's folder (<cache>/<hash>)")
    parser.add_argument("world_b", type=Path, help="another built world's folder")
    args = parser.parse_args(argv)
    result = compare_worlds(args.world_a, args.world_b)
    for label in ("only_a", "only_b", "differing_files", "differing_report_keys"):
        for item in result[label]:
            print(f"{label}: {item}")
    verdict = "the same world" if result["same"] else "different worlds"
    print(f"{verdict}: {result['n_compared']} files compared (timings, paths and diagnostics.json aside)")
    return 0 if result["same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
