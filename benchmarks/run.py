"""`antidistill bench run`: the whole experiment as one resumable command."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

BUDGETS_S = {"toy": 25 * 60, "smoke": 3 * 60}  # issue 13: toy <= 25 min with a built world


def add_run_command(bench_subparsers: argparse._SubParsersAction) -> None:
    parser = bench_subparsers.add_parser(
        "run", help="run the experiment: traces, gradient, distilled students, accuracies, MLflow",
        description="Generate holdout traces, compute the proxy gradient, then for every grid point (sampler, τ, λ, "
                    "ε) sample train traces, distil a student, and score teacher and student on the test split. "
                    "Everything is tracked in MLflow (a sqlite store inside --output unless MLFLOW_TRACKING_URI is "
                    "set). Stages whose output exists are skipped: rerun the same command to resume.")
    parser.add_argument("--preset", default="toy",
                        help="toy (offline CPU default), smoke (CI), paper-gsm8k, paper-math (GPUs + hub)")
    parser.add_argument("--config", type=Path, default=None, help="YAML file with settings to override")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set grid.antidistillation.lam=[1,2] (repeatable)")
    parser.add_argument("--output", type=Path, default=None, help="run folder (default: runs/<preset>)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (stages, grid, skips) and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--no-figures", action="store_true",
                        help="do not draw the figures at the end (`antidistill figures` draws them later)")
    parser.add_argument("--stop-after", choices=("holdout", "gradient", "calibration", "baseline"), default=None,
                        help="stop after this stage (e.g. to compute only the proxy gradient)")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from harness_plugin.errors import AntidistillError

    from .config import BenchConfig, ConfigError
    from .data import check_data_available
    from .pipeline import Pipeline
    from .run_folder import check_output, exclusive

    try:
        config = BenchConfig.load(args.preset, args.config, args.overrides)
        check_data_available(config)
    except AntidistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = (args.output or Path("runs") / config.preset).resolve()
    pipeline = Pipeline(config, output, progress=not args.no_progress)
    if args.dry_run:
        print(pipeline.describe_plan())
        return 0
    started = time.perf_counter()
    try:
        if args.stop_after == "calibration" and not config.calibrated:
            raise ConfigError("--stop-after calibration: this grid has no calibrated sampler (grid.calibrate)")
        check_output(output, config)
        config.distill_config(processes=pipeline.state.num_processes)  # the global batch splits over the ranks
        _check_models(pipeline)
        with exclusive(output) if pipeline.state.is_main_process else contextlib.nullcontext():
            finished = pipeline.run(stop_after=args.stop_after,
                                    on_stage=lambda stage, seconds: print(f"    done in {seconds:.1f} s", flush=True))
            if not pipeline.state.is_main_process:
                return 0
            if not finished:
                print(f"stopped after the {args.stop_after} stage as asked; outputs in {output}")
                return 0
            summary = pipeline.finish_parent()
    except AntidistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    _print_summary(summary, pipeline, elapsed, config.preset)
    if not args.no_figures:
        _draw_figures(summary, output)
    return 0


def _draw_figures(summary: dict, output: Path) -> None:
    """The trade-off figure and summary table into `<output>/figures`, logged to the parent run.

    The results are already safe in MLflow and summary.json, so a failure here prints one line with the command
    that retries it, and the run still succeeds.
    """
    from analysis.cli import run_figures

    command = (f"antidistill figures --tracking-uri {summary['tracking_uri']} --run-id {summary['parent_run_id']} "
               f"--output {output / 'figures'}")
    print("\nfigures:")
    args = argparse.Namespace(tracking_uri=summary["tracking_uri"], experiment=None,
                              run_id=summary["parent_run_id"], output=output / "figures", levels=None,
                              bootstrap=1000, frac=2 / 3, seed=0, no_log=False)
    try:
        if run_figures(args) != 0:
            print(f"figures were not drawn; retry with: {command}")
    except Exception as error:  # the figures are a convenience: never lose a finished run to them
        print(f"figures were not drawn ({type(error).__name__}: {error}); retry with: {command}")


def _check_models(pipeline: object) -> None:
    """Fail before any work when the proxy cannot serve the teacher (different tokenizers)."""
    from harness_plugin.loading import load_tokenizer
    from harness_plugin.vocab import check_same_tokenizer

    models = pipeline.bench.world()["models"]  # type: ignore[attr-defined]
    trust = bool(models["trust_remote_code"])
    check_same_tokenizer(load_tokenizer(models["teacher"], trust_remote_code=trust),
                         load_tokenizer(models["proxy"], trust_remote_code=trust), models["teacher"], models["proxy"])


def _print_summary(summary: dict, pipeline: object, elapsed: float, preset: str) -> None:
    from .tracking import ui_command

    rows = summary["rows"]
    print(f"\n{'curve':<22} {'target':>6} {'tau':>6} {'lam':>7} {'teacher acc':>12} {'student acc':>12}")
    for row in rows:
        target = f"{row['target']:g}" if row.get("target") is not None else "-"
        print(f"{row['curve']:<22} {target:>6} {row['tau']:>6.3g} {row['lam']:>7.3g} {row['teacher_accuracy']:>12.3f} "
              f"{row['student_accuracy']:>12.3f}")
    print(f"{'undistilled student':<43} {'':>12} {summary['student_base_accuracy']:>12.3f}")
    if rows:
        n = rows[0].get("teacher_accuracy_n")
        print(f"(accuracies on n = {n} test problems; 95% intervals in summary.json and MLflow)")
    for row in summary.get("endpoints") or []:
        t_star = row["teacher_accuracy"] * 100
        if row["G"] is None:
            print(f"\nG ({row['curve']}): undefined: a curve does not reach teacher accuracy {t_star:.1f}%")
            continue
        verdict = "excludes 0" if row["low"] > 0 or row["high"] < 0 else "includes 0"
        print(f"\nG = temperature student - {row['curve']} student at teacher {t_star:.1f}%: "
              f"{row['G'] * 100:+.1f} points, 95% [{row['low'] * 100:+.1f}, {row['high'] * 100:+.1f}] "
              f"(n = {row['n']} problems; interval {verdict}; defined in {row['defined'] * 100:.0f}% of resamples)")
    comparisons = summary.get("comparisons") or []
    if comparisons:
        print("\nat the same target teacher accuracy, minus temperature (paired bootstrap over test problems, 95%):")
        for row in comparisons:
            parts = []
            for who in ("teacher", "student"):
                d = row[who]
                parts.append(f"{who} {d['difference'] * 100:+.1f} [{d['low'] * 100:+.1f}, {d['high'] * 100:+.1f}]")
            print(f"  {row['curve']:<22} target {row['target']:g}: " + "; ".join(parts) + " points")
    output = pipeline.output  # type: ignore[attr-defined]
    timings = pipeline.timings  # type: ignore[attr-defined]
    if timings:
        print("\nstage timings (this invocation): " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    budget = BUDGETS_S.get(preset)
    budget_note = f" (budget {budget / 60:.0f} min)" if budget else ""
    print(f"\ntotal {elapsed / 60:.1f} min{budget_note}; outputs in {output}")
    print(f"MLflow experiment {summary['experiment']!r}, parent run {summary['parent_run_id']}")
    print(f"browse: {ui_command(summary['tracking_uri'], output)}")
