"""The entropy a perfect teacher would have along its greedy path: a ceiling for issue 12's entropy target.

    python -m benchmarks.toy_world.style_probe --preset toy-rich [--tokenizer <world>/tokenizer_teacher]

Issue 12 asks that the built teacher have >= 0.3 nats of entropy at >= 30% of the non-digit positions of its
greedy traces. How much of that can the solution styles give at all? For each of a few problems (numbers fixed),
this draws many solutions from the generator's style streams, tokenizes them, and walks the most frequent token
at every prefix (the path a teacher that learnt the style distribution exactly would take greedily), recording
the empirical entropy of the next token there. The share of non-digit positions at >= 0.3 nats on that path is
what a perfect teacher would score. Without `--tokenizer`, words (with their leading space) and single digits
(a space before a digit joins it) are the tokens, which shows how much the world's small BPE vocabulary (words
in 2-3 pieces, a space token before every number) lowers the share.
"""

from __future__ import annotations

import argparse
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable

from benchmarks.toy_world.generator import GSM8K_TEMPLATES, _Reject
from benchmarks.toy_world.presets import PRESETS, Preset

ENTROPY_THRESHOLD = 0.3  # nats, as in benchmarks.diagnostics
_WORDS = re.compile(r" ?[A-Za-z']+| ?\d|[^\sA-Za-z\d]+| |\n")


def word_tokens(text: str) -> list[str]:
    """Words with their leading space, single digits, punctuation runs, spaces and newlines."""
    return _WORDS.findall(text)


def greedy_path_entropies(solutions: list[list[str]]) -> list[tuple[str, float]]:
    """(token, entropy of the next token in nats) along the most frequent path through ``solutions``."""
    children: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    for tokens in solutions:
        for i, token in enumerate(tokens):
            children[tuple(tokens[:i])][token] += 1
    path: list[tuple[str, float]] = []
    prefix: tuple[str, ...] = ()
    while children.get(prefix):
        counts = children[prefix]
        total = sum(counts.values())
        entropy = -sum(c / total * math.log(c / total) for c in counts.values())
        token = counts.most_common(1)[0][0]
        path.append((token, max(0.0, entropy)))
        prefix = (*prefix, token)
    return path


def oracle_share(preset: Preset, tokenize: Callable[[str], list[str]], problems: int = 40, samples: int = 400,
                 seed: int = 0) -> dict[str, float]:
    """The perfect teacher's share of non-digit greedy positions with entropy >= 0.3 nats, pooled over problems."""
    names = sorted(GSM8K_TEMPLATES)
    d = preset.difficulty
    hits = others = digits = 0
    for p in range(problems):
        rng = random.Random(f"style-probe-{seed}-{p}")
        n_steps = d.min_steps + p % (d.max_steps - d.min_steps + 1)
        while True:
            try:
                question, steps, final, _ = GSM8K_TEMPLATES[names[p % len(names)]](rng, n_steps, d)
                break
            except _Reject:
                continue
        solutions = []
        for i in range(samples):
            extra = random.Random(f"extra-{p}-{i}") if preset.rich_solutions else None
            text = steps.solution(final, question, random.Random(f"style-{p}-{i}"), preset.solution_styles, extra)
            solutions.append(tokenize(text))
        for token, entropy in greedy_path_entropies(solutions):
            if any(ch.isdigit() for ch in token):
                digits += 1
            else:
                others += 1
                hits += entropy >= ENTROPY_THRESHOLD
    return {"share": hits / others if others else 0.0, "non_digit_per_trace": others / problems,
            "digit_per_trace": digits / problems, "problems": problems, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toy_world.style_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="toy", choices=sorted(PRESETS), help="whose solution styles (default: toy)")
    parser.add_argument("--tokenizer", default=None,
                        help="a tokenizer folder (e.g. <world>/tokenizer_teacher); default: words and single digits")
    parser.add_argument("--problems", type=int, default=40, help="problems, numbers fixed per problem (default: 40)")
    parser.add_argument("--samples", type=int, default=400, help="solutions drawn per problem (default: 400)")
    args = parser.parse_args(argv)
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        eos = tokenizer.eos_token or ""

        def tokenize(text: str) -> list[str]:
            ids = tokenizer(text + eos, add_special_tokens=False)["input_ids"]
            return [tokenizer.decode([i]) for i in ids]
    else:
        tokenize = word_tokens
    result = oracle_share(PRESETS[args.preset], tokenize, args.problems, args.samples)
    print(f"preset {args.preset}, {'tokenizer ' + args.tokenizer if args.tokenizer else 'word tokens'}: "
          f"{100 * result['share']:.1f}% of the non-digit greedy positions at >= {ENTROPY_THRESHOLD} nats for a "
          f"perfect teacher ({result['non_digit_per_trace']:.1f} non-digit and {result['digit_per_trace']:.1f} "
          f"digit positions per greedy trace; {args.problems} problems x {args.samples} solutions)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
