"""Train the toy world's teacher alone under one data recipe and report its greedy test accuracy.

Why: a full build trains three models and distils a student (20+ minutes on 2 cores); asking "which part of the
recipe costs the teacher its accuracy" needs only the teacher. Each probe uses the preset's splits, tokenizer
recipe, model shape and schedule, changing only what its flags say, so two probes differ in one thing.

    python -m benchmarks.toy_world.teacher_probe --preset toy --no-styles --noisy-fraction 0.5 --out probe.json

`--variant` switches style elements off by replacing generator functions for the whole process, so run each
probe as its own process (as the command line does), never inside another program.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from harness_plugin.io import write_jsonl

VARIANTS = {
    "all": "every style element (the preset's solutions)",
    "no-extras": "no side remarks and no opening line (phrasings, connectors, restatements stay)",
    "varied-joins": "world v3's four joins of an arithmetic line ('=', 'is', ', which is', ', that is')",
}


def _apply_variant(variant: str) -> None:
    """Switch off one group of style elements for this process (the probe runs in its own process)."""
    from benchmarks.toy_world import generator

    if variant == "no-extras":
        generator.side_remark = lambda *args, **kwargs: None  # type: ignore[assignment]
        generator._OPENINGS = ("",)  # type: ignore[assignment]
    elif variant == "varied-joins":
        generator._JOINS = (" =", " =", " is", ", which is", ", that is")  # type: ignore[assignment]
    elif variant != "all":
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")


def probe(preset_name: str, styles: bool, noisy_fraction: float, docs_in_tokenizer: bool, steps: int | None,
          n_test: int, threads: int = 1, variant: str = "all", hidden: int | None = None,
          fact_fraction: float | None = None, train_seed: int = 1, max_value: int | None = None,
          steps_range: tuple[int, int] | None = None, max_new_tokens: int | None = None,
          layers: int | None = None, lr: float | None = None) -> dict:
    import torch
    from transformers import AutoTokenizer

    from benchmarks.evaluate import evaluate_accuracy
    from benchmarks.toy_world.generator import generic_corpus, story
    from benchmarks.toy_world.presets import get_preset, gsm8k_splits
    from benchmarks.toy_world.train import (
        encode_pairs,
        make_model,
        noise_vocabulary,
        perturbed_copies,
        train_lm,
    )
    from benchmarks.toy_world.vocab import STYLES, train_tokenizer
    from harness_plugin.prompts import format_prompt

    torch.set_num_threads(threads)
    _apply_variant(variant)
    preset = get_preset(preset_name)
    if hidden or layers:
        preset = replace(preset, teacher=replace(preset.teacher, hidden=hidden or preset.teacher.hidden,
                                                 layers=layers or preset.teacher.layers))
    if fact_fraction is not None:
        preset = replace(preset, teacher_fact_fraction=fact_fraction)
    if max_value is not None or steps_range is not None:
        d = preset.difficulty
        low, high = steps_range or (d.min_steps, d.max_steps)
        preset = replace(preset, difficulty=replace(d, max_value=max_value or d.max_value, min_steps=low,
                                                    max_steps=high))
    if max_new_tokens:
        preset = replace(preset, max_new_tokens=max_new_tokens)
    spec = replace(preset.teacher_train, steps=steps or preset.teacher_train.steps,
                   lr=lr or preset.teacher_train.lr)
    gsm = gsm8k_splits(preset, styles)
    style = STYLES["teacher"]
    texts = [style.prompt(r["question"]) + r["answer"] + style.eos for r in gsm["train"][:4000]]
    if docs_in_tokenizer:
        stories = [story(p["question"], p["canonical"]) for p in gsm["train"]]
        texts += generic_corpus([p["question"] for p in gsm["train"]], preset.n_student_docs, preset.seed,
                                preset.difficulty, preset.facts_per_doc, stories)[:1000]
    with tempfile.TemporaryDirectory() as tmp:
        train_tokenizer(texts, style, preset.teacher_vocab, Path(tmp) / "tok")
        tok = AutoTokenizer.from_pretrained(str(Path(tmp) / "tok"))
    max_len = preset.teacher.max_positions
    sft = encode_pairs(tok, [(format_prompt(tok, p["question"]), p["answer"] + tok.eos_token) for p in gsm["train"]],
                       max_len)
    fact_docs = generic_corpus([], int(len(sft) * preset.teacher_fact_fraction), preset.seed + 1, preset.difficulty,
                               preset.facts_per_doc)
    facts = encode_pairs(tok, [("", d + tok.eos_token) for d in fact_docs], max_len) if fact_docs else []
    replaceable, protected = noise_vocabulary(tok)
    noisy = perturbed_copies(sft, replaceable, protected, noisy_fraction, preset.noise_rate,
                             preset.seed) if noisy_fraction else []
    model = make_model(preset.teacher, tok, train_seed)
    started = time.perf_counter()
    stats = train_lm(model, sft + noisy + facts, spec, tok.pad_token_id, train_seed, "teacher probe")
    acc, records = evaluate_accuracy(model, tok, gsm["test"][:n_test], batch_size=100,
                                     max_new_tokens=preset.max_new_tokens)
    return {"preset": preset_name, "styles": styles, "variant": variant, "hidden": preset.teacher.hidden,
            "layers": preset.teacher.layers, "lr": spec.lr,
            "fact_fraction": preset.teacher_fact_fraction, "noisy_fraction": noisy_fraction,
            "docs_in_tokenizer": docs_in_tokenizer, "steps": spec.steps, "n_test": n_test, "accuracy": acc,
            "final_loss": stats["final_loss"], "wall_s": time.perf_counter() - started, "threads": threads,
            "train_seed": train_seed, "difficulty": asdict(preset.difficulty), "max_new_tokens": preset.max_new_tokens,
            "records": records}


def _steps_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give steps as MIN-MAX, e.g. 1-3") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--no-styles", dest="styles", action="store_false", help="the v1 world's plain solutions")
    parser.add_argument("--noisy-fraction", type=float, default=0.0, help="noisy-context copies (default 0)")
    parser.add_argument("--docs-in-tokenizer", action="store_true", help="train the tokenizer on generic docs too")
    parser.add_argument("--steps", type=int, default=None, help="teacher steps (default: the preset's)")
    parser.add_argument("--variant", default="all", choices=sorted(VARIANTS),
                        help="; ".join(f"{k}: {v}" for k, v in VARIANTS.items()))
    parser.add_argument("--hidden", type=int, default=None, help="teacher width (default: the preset's)")
    parser.add_argument("--layers", type=int, default=None, help="teacher depth (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="teacher peak learning rate (default: the preset's)")
    parser.add_argument("--fact-fraction", type=float, default=None,
                        help="arithmetic-practice documents per worked solution (default: the preset's)")
    parser.add_argument("--train-seed", type=int, default=1,
                        help="seed of the teacher's initialisation and batch order (default 1, the build's): "
                             "probes with other seeds measure how much one recipe's accuracy varies")
    parser.add_argument("--max-value", type=int, default=None,
                        help="bound on every number in a problem (default: the preset's); smaller numbers make "
                             "smaller addition and subtraction tables")
    parser.add_argument("--problem-steps", dest="steps_range", type=_steps_range, default=None, metavar="MIN-MAX",
                        help="arithmetic steps per problem, e.g. 1-3 (default: the preset's)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation budget at evaluation (default: the preset's; 3-step solutions need ~128)")
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--out", required=True, help="JSON file to write (must not exist)")
    args = parser.parse_args()
    out = Path(args.out)
    refuse_existing_outputs(parser, out)
    result = probe(args.preset, args.styles, args.noisy_fraction, args.docs_in_tokenizer, args.steps, args.n_test,
                   variant=args.variant, hidden=args.hidden, fact_fraction=args.fact_fraction,
                   train_seed=args.train_seed, max_value=args.max_value, steps_range=args.steps_range,
                   max_new_tokens=args.max_new_tokens, layers=args.layers, lr=args.lr)
    write_probe_result(out, result)


def _completions_path(out: Path) -> Path:
    return out.with_suffix(".completions.jsonl")


def refuse_existing_outputs(parser: argparse.ArgumentParser, out: Path) -> None:
    """Stop before any training when a probe's result or its completions file exists: never overwrite a result."""
    for path in (out, _completions_path(out)):
        if path.exists():
            parser.error(f"{path} exists: choose another --out")


def write_probe_result(out: Path, result: dict) -> None:
    """A probe's result as JSON at `out`, its per-problem test records beside it, so errors can be read afterwards."""
    records = result.pop("records")
    completions = _completions_path(out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_jsonl(completions, records)
    print(json.dumps(result, indent=2))
    print(f"written to {out}; the test completions to {completions}")


if __name__ == "__main__":
    main()
