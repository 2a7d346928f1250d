"""The `antidistill bench` command group: the benchmark suite's commands.

`register(subparsers)` is the entry point (`bench = "benchmarks.cli:register"`). Each subcommand is added by
its own small `_add_<name>` function that sets `func`; to add one (e.g. `bench run`), write another
`_add_...` function and list it in `SUBCOMMANDS`. Handlers import heavy libraries lazily so `--help` is fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _toy_world(args: argparse.Namespace) -> int:
    from benchmarks.toy_world import accuracy_table, build_toy_world, world_diagnostics

    world = build_toy_world(args.preset, cache_dir=args.cache_dir, force=args.force)
    print(accuracy_table(world))
    timing = world.report.get("timing", {}).get("total", {})
    if timing:
        print(f"build time: {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU (preset {world.preset})")
    print(f"teacher:  {world.teacher_dir}\nproxy:    {world.proxy_dir}\nstudent:  {world.student_dir}")
    print(f"splits:   {world.root / 'data'}")
    if not args.no_diagnostics:
        from benchmarks.diagnostics import format_diagnostics

        print("\ndiagnostics (greedy holdout traces; see `antidistill bench diagnose --help`):")
        print(format_diagnostics(world_diagnostics(world, progress=not args.no_progress)))
        print(f"diagnostics: {world.diagnostics_path}")
    return 0


def _add_toy_world(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "toy-world",
        help="build (or reuse) the offline toy world and print its reference accuracies",
        description=(
            "Build the synthetic GSM8K-like world, its tokenizers, a tiny teacher, proxy and student on the CPU, "
            "distil the student on clean greedy teacher traces, and print the four accuracies. Built worlds "
            "are cached by content hash under $ANTIDISTILL_CACHE/toy_world (default ~/.cache/antidistill)."
        ),
    )
    p.add_argument("--preset", default="toy", choices=["smoke", "toy", "toy-rich"],
                   help="build size (default: toy; toy-rich: the toy world with more varied solutions)")
    p.add_argument("--cache-dir", default=None, help="where built worlds are cached")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached world exists")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="skip the world's diagnostics (computed once, then read from <world>/diagnostics.json)")
    p.add_argument("--no-progress", action="store_true",
                   help="hide every progress bar (build, training, diagnostics, model loading)")
    p.set_defaults(func=_toy_world)


def _add_run(sub: argparse._SubParsersAction) -> None:
    from benchmarks.run import add_run_command

    add_run_command(sub)


def _diagnose(args: argparse.Namespace) -> int:
    from benchmarks.diagnostics import DIAGNOSTICS_FILE, diagnose_run, format_diagnostics
    from harness_plugin.errors import AntidistillError

    kw: dict[str, Any] = {"progress": not args.no_progress}
    if args.n_forced is not None:
        kw["n_forced"] = args.n_forced
    if args.n_sampled is not None:
        kw["n_sampled"] = args.n_sampled
    try:
        result = diagnose_run(args.run_dir, **kw)
    except AntidistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_diagnostics(result))
    print(f"diagnostics: {args.run_dir.resolve() / DIAGNOSTICS_FILE}")
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _add_diagnose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="explain whether antidistillation can poison a run's world (gradient, entropy, deviations)",
        description=(
            "On a run folder of `antidistill bench run` (its greedy holdout traces and proxy gradient): |g| and the "
            "split-half cosine of g, the share of the proxy's NLL on digit tokens, the teacher's entropy at digit "
            "and other positions, the spread of the penalty over the teacher's top-20 tokens, and for every grid "
            "point where its deviations from the greedy token fall and how often the answer survives them. "
            "Writes RUN_DIR/diagnostics.json."
        ),
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the --output folder of `antidistill bench run`")
    p.add_argument("--n-forced", type=_non_negative, default=None, metavar="N",
                   help="greedy traces to teacher-force for entropy, penalty spread and deviations (default 64)")
    p.add_argument("--n-sampled", type=_non_negative, default=None, metavar="N",
                   help="holdout prompts to sample with every grid point (default 64; 0 skips sampling)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_diagnose)


def _add_answers(sub: argparse._SubParsersAction) -> None:
    from benchmarks.answers.cli import register as add_answers

    add_answers(sub)


def _add_perf(sub: argparse._SubParsersAction) -> None:
    from benchmarks.perf import register as add_perf

    add_perf(sub)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_run, _add_toy_world, _add_diagnose,
                                                                    _add_answers, _add_perf]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` and its subcommands to the umbrella `antidistill` parser."""
    bench = subparsers.add_parser("bench", help="benchmarks: the distillation suite, toy world, answer checker, speed")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])
