"""An optional MLflow logger for an lm-eval run (lm-eval has none).

Used by `antidistill lm-eval` / `python -m harness_plugin` when `--mlflow` is given or `MLFLOW_TRACKING_URI` is set
(`--no-mlflow` overrides the variable). It records, in one MLflow run:
- params: the model arguments (`model_args.*`), the sampler configuration (`antidistill.*`) and lm-eval's run settings
  (`lm_eval.*`: tasks, limit, seeds, gen_kwargs, ...);
- metrics: every numeric result, named `<task>/<metric>` (plus `/<filter>` when the filter is not "none");
- artifacts: `results.json` and, with `--log_samples`, one `samples_<task>.jsonl` per task.

The results are taken from lm-eval's own `EvaluationTracker.save_results_aggregated` call (wrapped for the duration
of the run only), so nothing depends on where or whether lm-eval writes its output files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "antidistill-lm-eval"
_MAX_PARAM_CHARS = 6000
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass
class MlflowOptions:
    """What `--mlflow*` options (or the environment) asked for."""

    enabled: bool = False
    experiment: str | None = None
    run_name: str | None = None

    @classmethod
    def pop_from(cls, argv: list[str]) -> tuple[MlflowOptions, list[str]]:
        """Take our `--mlflow`, `--no-mlflow`, `--mlflow-experiment X` and `--mlflow-run-name X` out of argv."""
        options, rest = cls(), []
        explicit: bool | None = None
        values = {"--mlflow-experiment": "experiment", "--mlflow-run-name": "run_name"}
        items = iter(argv)
        for arg in items:
            name, has_value, value = arg.partition("=")
            if arg == "--mlflow":
                explicit = True
            elif arg == "--no-mlflow":
                explicit = False
            elif name in values:
                if not has_value:
                    value = next(items, "")
                if not value:
                    raise SystemExit(f"error: {name} needs a value")
                setattr(options, values[name], value)
                explicit = True if explicit is None else explicit
            else:
                rest.append(arg)
        options.enabled = explicit if explicit is not None else bool(os.environ.get("MLFLOW_TRACKING_URI"))
        return options, rest


@dataclass
class CapturedRun:
    results: dict[str, Any] | None = None
    samples: dict[str, list[dict[str, Any]]] | None = field(default=None)


@contextlib.contextmanager
def capture_results() -> Iterator[CapturedRun]:
    """Record what lm-eval hands to `EvaluationTracker.save_results_aggregated` while the block runs."""
    from lm_eval.loggers.evaluation_tracker import EvaluationTracker

    captured = CapturedRun()
    original = EvaluationTracker.save_results_aggregated

    def save_results_aggregated(self: Any, results: dict, samples: dict | None = None) -> None:
        captured.results, captured.samples = results, samples
        return original(self, results=results, samples=samples)

    EvaluationTracker.save_results_aggregated = save_results_aggregated  # type: ignore[method-assign]
    try:
        yield captured
    finally:
        EvaluationTracker.save_results_aggregated = original  # type: ignore[method-assign]


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    elif value is not None:
        out[prefix] = str(value)[:_MAX_PARAM_CHARS]


def run_params(results: Mapping[str, Any]) -> dict[str, str]:
    """Flat MLflow params from lm-eval's results dict."""
    config = dict(results.get("config") or {})
    params: dict[str, str] = {}
    model_args = config.pop("model_args", None)
    if isinstance(model_args, str):
        from lm_eval.utils import simple_parse_args_string

        model_args = simple_parse_args_string(model_args)
    _flatten("model_args", model_args or {}, params)
    _flatten("antidistill", config.pop("antidistill", None) or {}, params)
    _flatten("lm_eval", config, params)
    params["lm_eval.tasks"] = ",".join(sorted((results.get("results") or {}).keys()))
    n_shot = results.get("n-shot")
    if n_shot:
        _flatten("lm_eval.n_shot", n_shot, params)
    return params


def run_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """`<task>/<metric>[/<filter>]` -> value for every numeric result (stderr "N/A" entries are skipped)."""
    metrics: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, values in (results.get(section) or {}).items():
            for key, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                metric, _, filter_name = key.partition(",")
                name = f"{task}/{metric}" + (f"/{filter_name}" if filter_name and filter_name != "none" else "")
                metrics[_METRIC_NAME.sub("_", name)] = float(value)
    return metrics


def log_run(captured: CapturedRun, options: MlflowOptions) -> str:
    """Log one finished lm-eval run to MLflow; returns the run id. Prints where the run went."""
    if captured.results is None:
        raise RuntimeError("lm-eval produced no results to log (did the evaluation run?)")
    import mlflow
    from lm_eval.utils import handle_non_serializable

    results = captured.results
    mlflow.set_experiment(options.experiment or DEFAULT_EXPERIMENT)
    config = results.get("config") or {}
    tags = {"lm_eval.model": str(config.get("model", "")), "antidistill.sampler": str(
        (config.get("antidistill") or {}).get("sampler", ""))}
    with mlflow.start_run(run_name=options.run_name, tags=tags) as run:
        mlflow.log_params(run_params(results))
        metrics = run_metrics(results)
        if metrics:
            mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="antidistill-mlflow-") as tmp:
            folder = Path(tmp)
            dumped = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
            (folder / "results.json").write_text(dumped, encoding="utf-8")
            for task, samples in (captured.samples or {}).items():
                lines = (json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n" for s in samples)
                (folder / f"samples_{task}.jsonl").write_text("".join(lines), encoding="utf-8")
            mlflow.log_artifacts(str(folder))
        run_id = run.info.run_id
    print(f"MLflow: run {run_id} in experiment {options.experiment or DEFAULT_EXPERIMENT!r} at "
          f"{mlflow.get_tracking_uri()} ({len(metrics)} metrics"
          f"{', samples logged' if captured.samples else ', no samples: add --log_samples to log them'})")
    return run_id
