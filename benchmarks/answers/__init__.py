"""Measured quality of the answer checker, side by side with math-verify.

``python -m benchmarks.answers [--limit N] [--json FILE]`` reads MATH-500, MATH test and GSM8K test from
``../shared/data`` and checks, for both ``harness_plugin.answers`` and ``math-verify`` on the same pairs:

* self: every gold answer against itself, and against its own reference solution's final answer (the
  checker extracts from the full solution; math-verify parses it with its default extraction);
* rewrite: equivalent rewrites of gold answers generated here (fraction ↔ decimal, reordered sums and lists,
  ``\\dfrac``, ``\\left(``, spacing, units, ``x =``, radicals, sympy's own LaTeX of the gold…), which must match;
* cross: the gold answer of another problem with a different value, which must not match;
* perturbed: near misses (off by one, swapped tuple, other bracket, negated), which must not match;
* styled: whole model-style outputs around gold values (``benchmarks.answers.styles``: prose, several boxes,
  sentences after cues, decimal commas, labelled golds, times), each kind matching and not matching;
* load: 8 threads with slow comparisons mixed in (latencies, undecided count, the timeout + 0.5 s bound) and the
  first symbolic call of a new process.

It prints accuracy, false positives, throughput and p50/p99 latency per set and per checker, and the
failures, so that every figure in the README can be reproduced. Inputs are trusted dataset text, so
math-verify runs with its default extraction (which includes its Python-expression parser).
"""

from __future__ import annotations

from benchmarks.answers.checkers import Tally, math_verify, ours, run_checker
from benchmarks.answers.cli import build_parser, main, register, run
from benchmarks.answers.data import Gold, default_data, hendrycks_answer, load_golds
from benchmarks.answers.pairs import Pair, build_pairs, perturbations, rewrites

__all__ = [
    "Gold", "Pair", "Tally", "build_pairs", "build_parser", "default_data", "hendrycks_answer", "load_golds", "main",
    "math_verify", "ours", "perturbations", "register", "rewrites", "run", "run_checker",
]
