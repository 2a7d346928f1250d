"""The `antidistill bench` command group: the benchmark suite's commands.

`register(subparsers)` is the entry point (`bench = "benchmarks.cli:register"`). Each subcommand is added by
its own small `_add_<name>` function that sets `func`; to add one (e.g. `bench run`), write another
`_add_...` function and list it in `SUBCOMMANDS`. Handlers import heavy libraries lazily so `--help` is fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _toy_world(args: argparse.Namespace) -> int:
    from benchmarks.toy_world import accuracy_table, build_toy_world

    world = build_toy_world(args.preset, cache_dir=args.cache_dir, force=args.force)
    print(accuracy_table(world))
    timing = world.report.get("timing", {}).get("total", {})
    if timing:
        print(f"build time: {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU (preset {world.preset})")
    print(f"teacher:  {world.teacher_dir}\nproxy:    {world.proxy_dir}\nstudent:  {world.student_dir}")
    print(f"splits:   {world.root / 'data'}")
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
    p.add_argument("--preset", default="toy", choices=["toy", "smoke"], help="build size (default: toy)")
    p.add_argument("--cache-dir", default=None, help="where built worlds are cached")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached world exists")
    p.set_defaults(func=_toy_world)


def _add_run(sub: argparse._SubParsersAction) -> None:
    from benchmarks.run import add_run_command

    add_run_command(sub)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_run, _add_toy_world]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` and its subcommands to the umbrella `antidistill` parser."""
    bench = subparsers.add_parser("bench", help="benchmark suite: toy world, distillation runs, reports")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])
