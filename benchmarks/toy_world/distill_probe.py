"""Distil a built world's student on more (or fewer) clean greedy teacher traces and report its test accuracy.

Why: the build distils on `n_distill` traces once; asking "how much data does this student need to learn from its
teacher" needs only the teacher's traces, the distillation and an evaluation, not a rebuild. The probe uses the
world's own teacher, student, splits and distillation settings, changing only what its flags say.

    python -m benchmarks.toy_world.distill_probe --world ~/.cache/antidistill/toy_world/<hash> \\
        --n-traces 4000 --epochs 4 --out probe.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from benchmarks.toy_world.teacher_probe import refuse_existing_outputs, write_probe_result


def probe(world_dir: str | Path, n_traces: int, epochs: float | None, n_test: int | None, threads: int = 2) -> dict:
    import torch

    from benchmarks.distill import distill_student
    from benchmarks.evaluate import evaluate_accuracy, generate_completions
    from benchmarks.toy_world.build import ToyWorld
    from benchmarks.toy_world.presets import get_preset
    from harness_plugin.loading import load_model, load_tokenizer
    from harness_plugin.prompts import format_prompt

    torch.set_num_threads(threads)
    world = ToyWorld.load(world_dir)
    preset = get_preset(world.preset)
    train = world.train
    if not 0 < n_traces <= len(train):
        raise ValueError(f"--n-traces must be between 1 and the train split's {len(train)} problems, got {n_traces}")
    config = preset.distill if epochs is None else replace(preset.distill, epochs=epochs)
    test = world.test[:n_test] if n_test else world.test
    started = time.perf_counter()
    teacher, tokenizer = load_model(world.teacher_dir, dtype="float32"), load_tokenizer(world.teacher_dir)
    problems = train[:n_traces]
    prompts = [format_prompt(tokenizer, p["question"]) for p in problems]
    completions = generate_completions(teacher, tokenizer, prompts, preset.eval_batch_size, preset.max_new_tokens)
    traces = [{"question": p["question"], "prompt": pr, "completion": c, "final": p["final"]}
              for p, pr, c in zip(problems, prompts, completions)]
    generated = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        student = distill_student(world.student_dir, traces, Path(tmp) / "student", config)
        distilled = time.perf_counter()
        accuracy, records = evaluate_accuracy(student, None, test, batch_size=preset.eval_batch_size,
                                              max_new_tokens=preset.max_new_tokens)
    return {"world": world.hash, "preset": world.preset, "n_traces": n_traces, "n_test": len(test),
            "accuracy": accuracy, "undistilled": world.report.get("accuracy", {}).get("student"),
            "distill": asdict(config), "threads": threads,
            "seconds": {"traces": generated - started, "distill": distilled - generated,
                        "evaluate": time.perf_counter() - distilled},
            "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True, help="a built world's folder (antidistill bench toy-world prints it)")
    parser.add_argument("--n-traces", type=int, required=True, help="greedy teacher traces of the first train problems")
    parser.add_argument("--epochs", type=float, default=None, help="distillation epochs (default: the preset's)")
    parser.add_argument("--n-test", type=int, default=None, help="test problems to score (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", required=True, help="JSON file to write (must not exist)")
    args = parser.parse_args()
    out = Path(args.out)
    refuse_existing_outputs(parser, out)
    write_probe_result(out, probe(args.world, args.n_traces, args.epochs, args.n_test, args.threads))


if __name__ == "__main__":
    main()
