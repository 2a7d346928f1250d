"""`antidistill lm-eval ARGS...` (also `python -m harness_plugin ARGS...`) and `antidistill tasks-path`.

The fallback that always works: it registers the `antidistill` model and this package's tasks with lm-eval itself
(no start-up hook needed, e.g. under `python -S`, with the hook turned off, or with an lm-eval whose internals the
hook does not recognise) and then runs lm-eval's own command line with exactly the arguments it was given. Only
`--mlflow`, `--no-mlflow`, `--mlflow-experiment NAME` and `--mlflow-run-name NAME` are ours (see tracking.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

USAGE = """\
usage: antidistill lm-eval [--mlflow | --no-mlflow] [--mlflow-experiment NAME] [--mlflow-run-name NAME] LM_EVAL_ARGS...

Runs lm-eval's command line with the `antidistill` model and the antidistill tasks registered. LM_EVAL_ARGS are
exactly lm_eval's (see `antidistill lm-eval --help`), e.g.

  antidistill lm-eval --model antidistill \\
      --model_args pretrained=TEACHER,proxy=PROXY,gradient=GRAD_DIR,sampler=ads,lam=1.0,tau=0.6 \\
      --tasks gsm8k_antidistill --output_path results --log_samples

MLflow: the run is logged when --mlflow is given or MLFLOW_TRACKING_URI is set (--no-mlflow turns it off).
"""


def _run_from_args(args: argparse.Namespace) -> int:
    return main(args.lm_eval_args)


def _take_all(parse_known_args: Any) -> Any:
    """A parse_known_args replacement that hands every remaining argument over untouched.

    argparse's REMAINDER cannot start with an option (`--model ...`), and the umbrella CLI uses parse_args, so
    the sub-parser claims all arguments itself; lm-eval's own parser then checks them.
    """

    def take_all(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
                 ) -> tuple[argparse.Namespace, list[str]]:
        namespace, _ = parse_known_args([], namespace)  # defaults, including func
        namespace.lm_eval_args = list(args or [])
        return namespace, []

    return take_all


def register_lm_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lm-eval", add_help=False, usage=USAGE,
        help="run lm-eval with the antidistill model and tasks registered (same arguments as lm_eval)")
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_run_from_args)
    parser.parse_known_args = _take_all(parser.parse_known_args)  # type: ignore[method-assign]


def register_tasks_path(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tasks-path", help="print the folder of the antidistill lm-eval tasks (for --include_path)",
        description='Print the folder holding the gsm8k_antidistill, math_antidistill, ... task yamls, e.g. '
                    'lm_eval ... --include_path "$(antidistill tasks-path)".')
    parser.set_defaults(func=_print_tasks_path)


def _print_tasks_path(_: argparse.Namespace) -> int:
    from .hook import tasks_path

    print(tasks_path())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run lm-eval's CLI on `argv` with our model and tasks registered; the exit status of the run."""
    from ..errors import AntidistillError
    from .tracking import MlflowOptions, capture_results, log_run

    arguments = list(sys.argv[1:] if argv is None else argv)
    options, lm_eval_argv = MlflowOptions.pop_from(arguments)
    if not lm_eval_argv or lm_eval_argv[0] in ("-h", "--help") and len(lm_eval_argv) == 1:
        print(USAGE)
    from lm_eval.__main__ import cli_evaluate

    from .hook import register_now

    register_now()
    saved_argv = sys.argv
    sys.argv = ["lm_eval", *lm_eval_argv]
    try:
        with capture_results() as captured:
            cli_evaluate()
    except AntidistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved_argv
    if options.enabled and captured.results is not None:
        try:
            log_run(captured, options)
        except Exception as error:  # the evaluation itself succeeded; say what failed and fail the command
            print(f"error: logging the run to MLflow failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    return 0
