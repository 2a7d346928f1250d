"""Model-style outputs and load for ``antidistill bench answers``: how models write answers, and the checker's time bound.

The main benchmark's pairs are gold answers and rewrites of them; models write differently (issue 14): prose with
the answer in the last ``$…$`` and no cue, several boxes (one per root), a sentence after "Final Answer:", a box
early in the text and a later final statement, decimal commas, golds that name their value (``AB = 4``), times.
``styled_pairs`` writes such outputs around real gold answers, each kind with a matching and a non-matching value.
``load_row`` times the checker from 8 threads with slow comparisons mixed in (every call must end within its
timeout + 0.5 s, waiting for a worker included), and ``first_call_s`` the first symbolic call of a new process.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.answers.data import Gold
from benchmarks.answers.pairs import Pair, _value_key
from benchmarks.answers.report import _percentile

_PLAIN = re.compile(r"-?\d+")  # golds usable in every template (lists, decimals, labels)

# (family, dataset, prediction template, reference template); {g} is the value, {w} another problem's value.
_TEMPLATES: list[tuple[str, str, str, str]] = [
    ("prose, last math span", "math", "We simplify the expression step by step.\nTherefore, the quantity is ${g}$.",
     "{r}"),
    ("display math after 'Answer'", "math", "Answer \\[ {g} \\]", "{r}"),
    ("inline math after 'Answer'", "math", "Answer $ {g} $", "{r}"),
    ("sentence after 'Final Answer:'", "math", "Final Answer: The value of $x$ is ${g}$", "{r}"),
    ("later statement after an early box", "math",
     "A first attempt gives \\boxed{{{w}}}.\nChecking the arithmetic again, that was off by a step. "
     "The final answer is ${g}$.", "{r}"),
    ("stray $ before a box", "math", "So the total is $ \\boxed{{{g}}}", "{r}"),
    ("labelled gold", "math", "The length is $\\boxed{{{g}}}$.", "AB = {r}"),
]
_LIST_TEMPLATE = ("several boxes, one per root", "math",
                  "So $x = \\boxed{{{a}}}$ or $x = \\boxed{{{b}}}$.", "{ra}, {rb}")
_DECIMAL_TEMPLATE = ("decimal comma", "gsm8k", "So she pays {n},{cents} euros in total.", "{n}.{cents}")


def styled_pairs(golds: list[Gold], seed: int, per_family: int = 60) -> list[Pair]:
    """Model-style outputs (kind "styled"): each family around ``per_family`` gold values, matching and not."""
    rng = random.Random(seed)
    values = sorted({g.answer for g in golds if g.dataset == "math" and len(g.answer) <= 40})
    rng.shuffle(values)
    plain = [v for v in values if _PLAIN.fullmatch(v)]
    pairs: list[Pair] = []

    def add(family: str, dataset: str, prediction: str, reference: str, expected: bool) -> None:
        pairs.append(Pair("styled", family, "written", dataset, prediction, reference, expected))

    def other(value: str, pool: list[str]) -> str:
        for _ in range(50):
            candidate = rng.choice(pool)
            if _value_key(candidate) != _value_key(value):
                return candidate
        return pool[0] + "+1"

    for family, dataset, prediction, reference in _TEMPLATES:
        pool = plain if family == "labelled gold" else values
        for value in pool[:per_family]:
            wrong = other(value, pool)
            add(family, dataset, prediction.format(g=value, w=wrong), reference.format(r=value), True)
            add(family, dataset, prediction.format(g=wrong, w=value), reference.format(r=value), False)
    family, dataset, prediction, reference = _LIST_TEMPLATE
    for a, b in zip(plain[:per_family], plain[per_family : 2 * per_family]):
        if _value_key(a) == _value_key(b):
            continue
        add(family, dataset, prediction.format(a=a, b=b), reference.format(ra=b, rb=a), True)
        add(family, dataset, prediction.format(a=a, b=other(b, plain)), reference.format(ra=a, rb=b), False)
    family, dataset, prediction, reference = _DECIMAL_TEMPLATE
    for _ in range(per_family):
        n, cents = rng.randint(1, 2000), rng.randint(10, 99)
        add(family, dataset, prediction.format(n=n, cents=cents), reference.format(n=n, cents=cents), True)
        add(family, dataset, prediction.format(n=n, cents=cents), reference.format(n=n + 1, cents=cents), False)
    for prediction, reference, expected in (("\\boxed{12:00}", "12:00", True), ("\\boxed{1:00}", "12:00", False),
                                            ("\\boxed{2:00}", "1:00", False), ("\\boxed{3:45}", "3:45", True)):
        add("times", "math", prediction, reference, expected)
    return pairs


SLOW = ("(x+y+z+1)^{30}", "(x+y+z)^{30}")  # sympy needs minutes: only the time limit ends it


def load_row(pairs: list[Pair], threads: int = 8, calls: int = 40, timeout: float = 1.0, seed: int = 0) -> dict:
    """``threads`` x ``calls`` comparisons at once (every 10th a slow one), from the symbolic-looking pairs."""
    from harness_plugin.answers import Verdict, clear_cache, judge_equivalence, warm_up

    warm_up()
    rng = random.Random(seed)
    symbolic = [p for p in pairs if p.kind in ("rewrite", "cross", "perturbed") and re.search(r"[a-z\\]", p.prediction)]
    work = [SLOW if i % 10 == 9 else (lambda p: (p.prediction, p.reference))(rng.choice(symbolic))
            for i in range(threads * calls)]

    def timed(case: tuple[str, str]) -> tuple[float, Verdict]:
        clear_cache()
        start = time.perf_counter()
        verdict = judge_equivalence(*case, timeout=timeout)
        return time.perf_counter() - start, verdict

    wall = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as executor:
        outcomes = list(executor.map(timed, work))
    wall = time.perf_counter() - wall
    latencies = [elapsed for elapsed, _ in outcomes]
    undecided = sum(verdict is Verdict.UNDECIDED for _, verdict in outcomes)
    slow_undecided = sum(verdict is Verdict.UNDECIDED for (_, verdict), case in zip(outcomes, work) if case == SLOW)
    return {
        "threads": threads, "calls": len(work), "timeout_s": timeout, "wall_s": wall,
        "p50_ms": 1000 * _percentile(latencies, 0.50), "p99_ms": 1000 * _percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies), "undecided": undecided, "slow_calls": work.count(SLOW),
        "slow_undecided": slow_undecided, "bound_ms": 1000 * (timeout + 0.5),
        "within_bound": max(latencies) <= timeout + 0.5,
    }


_FIRST_CALL = (
    "import time; start = time.perf_counter(); "
    "from harness_plugin.answers import judge_equivalence; "
    "verdict = judge_equivalence('2(x+1)', '2x+2'); "
    "print(time.perf_counter() - start, verdict.value)"
)


def first_call_s(repeats: int = 3) -> list[float]:
    """Seconds from import to the first symbolic verdict in a fresh process (worker start-up included)."""
    root = Path(__file__).resolve().parents[1]
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _FIRST_CALL], cwd=root, capture_output=True, text=True,
                             check=True, timeout=300).stdout.split()
        times.append(float(out[0]))
    return times


def format_load(row: dict, first: list[float]) -> str:
    ok = "pass" if row["within_bound"] else "FAIL"
    return (
        f"under load ({row['threads']} threads, {row['calls']} calls, {row['slow_calls']} of them slow, timeout "
        f"{row['timeout_s']:.1f} s): p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.0f} ms, max {row['max_ms']:.0f} ms "
        f"(bound {row['bound_ms']:.0f} ms: {ok}); undecided {row['undecided']} (slow ones: {row['slow_undecided']}); "
        f"wall {row['wall_s']:.1f} s\n"
        f"first symbolic call in a new process: {', '.join(f'{t:.2f}' for t in first)} s (target 1.5 s: "
        f"{'pass' if min(first) <= 1.5 else 'FAIL'})"
    )
