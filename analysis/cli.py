"""`antidistill figures` (trade-off figure + summary table from a benchmark's MLflow runs) and
`antidistill figures fd-error` (measure and plot the finite-difference error of the penalty).

Registered through the `antidistill.commands` entry point; heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


def _fractions(text: str) -> list[float]:
    """'0.7,0.5' or '70,50' -> [0.7, 0.5] (values above 1 are read as percentages)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated accuracies like 0.7,0.5 or 70,50: {text!r}") from None
    values = [v / 100 if v > 1 else v for v in values]
    if not values or any(not 0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"accuracy levels must lie in [0, 1] (or 0-100%): {text!r}")
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1e-4,1e-2: {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every ε must be > 0: {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "figures", help="draw the paper's figures and summary table from MLflow runs",
        description="Read a benchmark experiment from MLflow (its latest parent run, or --run-id) and write the "
                    "trade-off figure (student vs teacher accuracy per sampler, raw and answer-forced), the summary "
                    "table (markdown + CSV) and the plotted data to --output; the same files are logged as "
                    "artifacts of the parent run under figures/. `antidistill figures fd-error --help` measures "
                    "the finite-difference error of the penalty.")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI), e.g. sqlite:///runs/mlflow.db")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name: its latest parent run is drawn")
    parser.add_argument("--run-id", default=None, help="a parent run id (instead of --experiment)")
    parser.add_argument("--output", type=Path, default=None, help="folder to write figures and tables into")
    parser.add_argument("--levels", type=_fractions, default=None,
                        help="teacher accuracies for the table, e.g. 0.7,0.5,0.3 (default: every 10%% covered)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the bands (default 1000)")
    parser.add_argument("--frac", type=float, default=2 / 3, help="LOWESS span, a fraction of the points (default 2/3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    parser.set_defaults(func=run_figures)
    figures = parser.add_subparsers(dest="figure", metavar="FIGURE")

    fd = figures.add_parser(
        "fd-error", help="relative error of the finite-difference penalty against ε and proxy dtype",
        description="Sample positions from real traces, compute Δ by finite differences (fd) at each ε with the "
                    "proxy in each dtype and exactly (jvp, fp32), and plot the mean |sin θ| between them against ε "
                    "(paper Fig. 4/7). Writes fd_error.{csv,json,png,pdf} and logs them to MLflow when a "
                    "tracking URI is given.")
    fd.add_argument("--proxy", required=True, help="proxy model: hub name or local folder")
    fd.add_argument("--gradient", required=True, type=Path, help="folder written by `antidistill gradient`")
    fd.add_argument("--traces", required=True, type=Path,
                    help='jsonl of real traces, {"prompt": ..., "completion": ...} per line (prompt = exact input)')
    fd.add_argument("--output", required=True, type=Path, help="folder to write data and figure into")
    fd.add_argument("--eps-in-use", type=float, default=1e-2, help="the ε your runs use, marked on the plot (1e-2)")
    fd.add_argument("--eps", type=_floats, default=None, help="ε values to sweep (default: 15 from 1e-6 to 1e1)")
    fd.add_argument("--dtypes", default="float32,bfloat16,float16", help="proxy dtypes for fd (default all three)")
    fd.add_argument("--positions", type=int, default=32, help="positions sampled from the traces (default 32)")
    fd.add_argument("--max-length", type=int, default=512, help="truncate traces to this many tokens (512)")
    fd.add_argument("--seed", type=int, default=0, help="seed for choosing positions")
    fd.add_argument("--dataset", default=None, help="dataset name for the title (default: the traces file name)")
    fd.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; "
                                                         "without either nothing is logged)")
    fd.add_argument("--experiment", default="fd-error", help="MLflow experiment for the run (default fd-error)")
    fd.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    fd.add_argument("--revision", default=None, help="hub revision of the proxy")
    fd.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub to run")
    fd.set_defaults(func=run_fd_error)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_figures(args: argparse.Namespace) -> int:
    from harness_plugin.errors import AntidistillError

    from .runs import load_results, log_artifacts, resolve_tracking_uri
    from .summary import summarise, write_summary
    from .tradeoff import TRACE_PANELS, figure_title, plot_tradeoff, write_points_csv

    if args.output is None:
        return _fail("--output DIR is required (the folder the figures and tables are written to).")
    try:
        uri = resolve_tracking_uri(args.tracking_uri)
        results = load_results(uri, args.experiment, args.run_id)
    except AntidistillError as error:
        return _fail(str(error))
    counts = ", ".join(f"{c} {sum(p.curve == c for p in results.points)}" for c in results.curves())
    print(f"experiment {results.experiment_name!r}, parent run {results.parent_run_id}: {len(results.points)} grid "
          f"runs ({counts}); skipped {len(results.skipped)}")
    for run_id, reason in results.skipped:
        print(f"  skipped {run_id}: {reason}")
    if results.base_accuracy is None:
        print("note: no student_base_accuracy logged: no undistilled line and no headline number")
    output: Path = args.output
    paths = plot_tradeoff(results, output, n_boot=args.bootstrap, frac=args.frac, seed=args.seed)
    if any(p.metric("train_traces_accuracy") is not None for p in results.points):
        paths += plot_tradeoff(results, output, n_boot=args.bootstrap, frac=args.frac, seed=args.seed,
                               stem="tradeoff_train_traces", panels=TRACE_PANELS)
    summaries = summarise(results, levels=args.levels, frac=args.frac)
    heading = "Antidistillation trade-off: " + figure_title(results).replace("\n", " — ")
    paths += write_summary(summaries, output, heading)
    paths.append(write_points_csv(results, output))
    for path in paths:
        print(f"wrote {path.resolve()}")
    if not args.no_log:
        log_artifacts(uri, results.parent_run_id, paths)
        print(f"logged {len(paths)} files to run {results.parent_run_id} (experiment {results.experiment_name!r}) "
              f"under figures/ at {uri}")
    return 0


def _get_or_create_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """An experiment id; a new one on a sqlite store keeps artifacts in mlartifacts/ beside the database (as bench does)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def log_fd_error(result: Any, paths: list[Path], tracking_uri: str, experiment: str) -> str:
    """One MLflow run holding the fd-error settings, headline metrics, data and figure; returns its id."""
    from .runs import _client

    client = _client(tracking_uri)
    experiment_id = _get_or_create_experiment(client, experiment, tracking_uri)
    run = client.create_run(experiment_id, run_name=f"fd-error {Path(result.proxy).name}",
                            tags={"antidistill.role": "fd_error"})
    run_id = run.info.run_id
    try:
        params = {"proxy": result.proxy, "grad_norm": result.grad_norm, "eps_in_use": result.eps_in_use,
                  "positions": result.n_positions, "dataset": result.dataset, **result.meta}
        for key, value in params.items():
            client.log_param(run_id, key, str(value)[:6000])
        for dtype in sorted({p.dtype for p in result.points}):
            at = result.at(dtype, result.eps_in_use)
            if at is not None and math.isfinite(at.mean):
                client.log_metric(run_id, f"abs_sin_at_eps_in_use_{dtype}", at.mean)
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path="figures")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def run_fd_error(args: argparse.Namespace) -> int:
    import os

    from harness_plugin.errors import AntidistillError

    from .fd_error import (
        DEFAULT_EPS_GRID,
        FdErrorResult,
        eps_grid_with,
        measure_fd_error,
        normalise_dtype,
        sample_positions,
        write_fd_error,
    )

    try:
        dtypes = [normalise_dtype(d) for d in args.dtypes.split(",") if d.strip()]
    except ValueError as error:
        return _fail(f"--dtypes: {error}")
    if not args.eps_in_use > 0:
        return _fail(f"--eps-in-use must be > 0, got {args.eps_in_use}")
    if args.positions < 1:
        return _fail(f"--positions must be >= 1, got {args.positions}")
    for path, what in ((args.traces, "--traces file"), (args.gradient, "--gradient folder")):
        if not path.exists():
            return _fail(f"{what} {path} does not exist")
    from harness_plugin.gradient import ProxyGradient
    from harness_plugin.io import read_jsonl, sha256_of_records
    from harness_plugin.loading import load_model, load_tokenizer
    from harness_plugin.vocab import real_vocab_size

    try:
        tokenizer = load_tokenizer(args.proxy, args.revision, args.trust_remote_code)
        proxy = load_model(args.proxy, dtype="float32", device=args.device, revision=args.revision,
                           trust_remote_code=args.trust_remote_code)
        gradient = ProxyGradient.load(args.gradient, proxy=proxy)
        traces = read_jsonl(args.traces)
        prefixes = sample_positions(tokenizer, traces, args.positions, seed=args.seed, max_length=args.max_length)
    except (AntidistillError, ValueError) as error:
        return _fail(str(error))
    eps_values = eps_grid_with(args.eps_in_use, args.eps or DEFAULT_EPS_GRID)
    print(f"fd error: {len(prefixes)} positions from {args.traces}, {len(eps_values)} ε values × {dtypes}")
    points = measure_fd_error(proxy, gradient, prefixes, eps_values, dtypes, vocab_size=real_vocab_size(tokenizer))
    result = FdErrorResult(
        points=points, eps_in_use=args.eps_in_use, proxy=str(args.proxy), grad_norm=gradient.norm,
        n_positions=len(prefixes), dataset=args.dataset or args.traces.stem,
        meta={"gradient": str(args.gradient), "traces": str(args.traces), "seed": args.seed,
              "dtypes": ",".join(dtypes), "eps_values": ",".join(f"{e:g}" for e in eps_values),
              "traces_sha256": sha256_of_records([[t.get("prompt"), t.get("completion")] for t in traces]),
              "device": str(next(proxy.parameters()).device)})
    paths = write_fd_error(result, args.output)
    for dtype in dtypes:
        at = result.at(dtype, args.eps_in_use)
        eps, mean = result.curve(dtype)
        finite = [i for i in range(len(mean)) if math.isfinite(mean[i])]
        best = f"{eps[min(finite, key=lambda i: mean[i])]:g}" if finite else "n/a"
        shown = f"{at.mean:.3g}" if at is not None and math.isfinite(at.mean) else "n/a"
        print(f"  {dtype:9s} |sin θ| at ε={args.eps_in_use:g}: {shown}; smallest error at ε={best}")
    for path in paths:
        print(f"wrote {path.resolve()}")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        run_id = log_fd_error(result, paths, uri, args.experiment)
        print(f"logged to MLflow run {run_id} (experiment {args.experiment!r}) at {uri}")
    else:
        print("not logged to MLflow (give --tracking-uri or set MLFLOW_TRACKING_URI)")
    return 0
