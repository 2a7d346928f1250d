"""``antidistill bench answers`` / ``python -m benchmarks.answers``: build the pairs, run both checkers, print and save."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchmarks.answers.checkers import math_verify, ours, run_checker
from benchmarks.answers.data import default_data, load_golds
from benchmarks.answers.pairs import Pair, build_pairs
from benchmarks.answers.report import _overall, format_table, summarize
from harness_plugin.io import atomic_write_text
from harness_plugin.names import DATA_DIR_VARIABLE

BENCH_DESCRIPTION = "Measured quality of the answer checker, side by side with math-verify."


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data)
    if not (data_dir / "math500" / "test.jsonl").exists():
        print(f"error: no math500/test.jsonl under {data_dir}: pass --data (or set {DATA_DIR_VARIABLE}) pointing at "
              "a folder with the layout of the project's offline data (math500/, math/, gsm8k/)", file=sys.stderr)
        return 2
    golds = load_golds(data_dir, args.limit, args.seed)
    pairs = build_pairs(golds, args.seed, args.rewrites_per_gold)
    from benchmarks.answers.styles import styled_pairs

    pairs += styled_pairs(golds, args.seed)
    counts = Counter(pair.kind for pair in pairs)
    print(f"{len(golds)} gold answers from {data_dir}; {len(pairs)} pairs: {dict(counts)}")

    checkers: dict[str, Callable[[Pair], bool]] = {}
    start = time.perf_counter()
    from harness_plugin.answers import clear_cache, warm_up

    warm_up()
    clear_cache()
    print(f"ours: worker ready in {time.perf_counter() - start:.1f}s (not counted in latencies)")
    checkers["ours"] = ours(cold=not args.warm_cache)
    if not args.no_math_verify:
        checkers["math-verify"] = math_verify()
        checkers["math-verify"](pairs[0])  # load its grammar outside the timings

    results = {name: run_checker(name, check, pairs, args.examples) for name, check in checkers.items()}
    for name in results:
        results[name]["all"] = _overall(results[name])

    kinds = ["self", "solution", "rewrite", "cross", "perturbed", "styled", "all"]
    by_source = [f"{kind}/{source}" for kind in kinds[:-1] for source in ("math500", "math", "gsm8k")]
    families = sorted({key for name in results for key in results[name] if key.startswith(("rewrite:", "styled:"))})
    print()
    print("Machine:", args.machine)
    print(format_table(results, kinds))
    print()
    print(format_table(results, by_source))
    print()
    print(format_table(results, families))
    for name, tallies in results.items():
        for kind in kinds[:-1]:
            tally = tallies.get(kind)
            if tally and tally.failures:
                print(f"\n{name}: {kind} failures (first {len(tally.failures)} of {tally.pairs - tally.correct})")
                for failure in tally.failures:
                    print(f"  [{failure['source']}/{failure['family']}] {failure['prediction']!r} vs {failure['reference']!r}")

    load = None
    if not args.no_load:
        from benchmarks.answers.styles import first_call_s, format_load, load_row

        load = {**load_row(pairs, seed=args.seed), "first_call_s": first_call_s()}
        print()
        print(format_load(load, load["first_call_s"]))

    if args.json:
        payload = {
            "load": load,
            "data": str(data_dir),
            "machine": args.machine,
            "limit": args.limit,
            "seed": args.seed,
            "pair_counts": dict(counts),
            "results": {
                name: {key: {**summarize(t), "failures": t.failures} for key, t in tallies.items()}
                for name, tallies in results.items()
            },
        }
        atomic_write_text(Path(args.json), json.dumps(payload, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m benchmarks.answers", description=BENCH_DESCRIPTION)
    parser.add_argument("--data", default=default_data(), help="offline data folder (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="at most N gold answers per source (default: all)")
    parser.add_argument("--rewrites-per-gold", type=int, default=2, help="rewrites sampled per gold answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=12, help="failures shown per set and checker")
    parser.add_argument(
        "--warm-cache", action="store_true", help="keep the checker's result memo between pairs (default: cleared)"
    )
    parser.add_argument("--no-math-verify", action="store_true", help="measure only harness_plugin.answers")
    parser.add_argument("--no-load", action="store_true",
                        help="skip the load row (8 threads, slow comparisons mixed in) and the first-call timing")
    parser.add_argument("--json", default=None, help="also write all figures and failures to this JSON file")
    parser.add_argument("--machine", default=f"{os.cpu_count()}-core CPU", help="machine description for the report")
    parser.set_defaults(func=run)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``answers`` to ``antidistill bench``."""
    build_parser(subparsers.add_parser("answers", help="measure the answer checker against math-verify"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)

