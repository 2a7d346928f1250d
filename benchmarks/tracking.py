"""MLflow bookkeeping for the suite: one parent run per experiment output, a nested run per grid point, and a
registered model version per distilled student.

Everything is found again by tags rather than by local state files, so a run killed at any point and started
again reuses its runs and model versions instead of creating duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness_plugin.sampling import SamplerConfig

ROLE = "antidistill.role"
OUTPUT = "antidistill.output"
# Runs are found by a hash of the output path, not the path itself: a filter string holds the value in quotes,
# and a path may contain any character (a `'` in it made the MLflow stage fail after all the compute).
OUTPUT_ID = "antidistill.output_id"
POINT = "antidistill.grid_point"


def tracking_uri_for(output: Path) -> tuple[str, bool]:
    """`MLFLOW_TRACKING_URI` when set, else a sqlite database inside the output folder (True: we own it)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, False
    return f"sqlite:///{(output / 'mlflow.db').resolve()}", True


def ui_command(uri: str, output: Path) -> str:
    if uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {uri} --default-artifact-root {(output / 'mlartifacts').resolve()}"
    return f"open {uri} in a browser (the MLflow server's UI)"


def _quiet_mlflow() -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextmanager
def _store_initialisation_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a sqlite store between processes on this machine.

    Why: MLflow migrates a fresh sqlite database on first use, and processes doing that at once fail with
    "duplicate column" errors (measured: 3 of 4 processes started together on a fresh store crashed). A file lock
    beside the database makes the first one migrate and the others wait. Servers handle their own concurrency.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".init.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists and scalars become their string form."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def interval_metrics(prefix: str, evaluation: Mapping[str, Any]) -> dict[str, float]:
    """`<prefix>_accuracy_n`, `_low`, `_high`: the sample size and 95% Wilson interval of an accuracy."""
    from .intervals import wilson_interval

    n = int(evaluation.get("n", 0))
    if not n:
        return {}
    low, high = wilson_interval(evaluation["accuracy"] * n, n)
    return {f"{prefix}_accuracy_n": n, f"{prefix}_accuracy_low": low, f"{prefix}_accuracy_high": high}


def point_params(sampling: SamplerConfig, models: Mapping[str, str], gradient_meta: Mapping[str, Any],
                 train_traces: Path, calibration: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """A grid point's MLflow params: how its traces were sampled, from what, and how its knob was calibrated."""
    params = {**sampling.as_params(), "grad_norm": gradient_meta["norm"],
              "teacher": models["teacher"], "proxy": models["proxy"], "student": models["student"], **extra,
              "holdout_traces_sha256": gradient_meta["traces_sha256"],
              "train_traces_sha256": hashlib.sha256(train_traces.read_bytes()).hexdigest()}
    if calibration is not None:
        params.update({f"calibration_{key}": calibration[key] for key in
                       ("target", "target_accuracy", "calibration_accuracy", "n", "lam_times_grad_norm",
                        "tilt_nats")})
    return params


def point_metrics(teacher: Mapping[str, Any], student: Mapping[str, Any], baseline: Mapping[str, Any],
                  train_scores: Mapping[str, Any], train: list[dict[str, Any]]) -> dict[str, float]:
    """A grid point's MLflow metrics: teacher, student and undistilled student accuracies with their intervals
    (raw and answer-forced), and how correct and how long the distillation data itself was."""
    from .scoring import mean_teacher_logprob

    metrics = {
        "teacher_accuracy": teacher["accuracy"], "student_accuracy": student["accuracy"],
        "student_base_accuracy": baseline["accuracy"],
        "teacher_mean_logprob": teacher["mean_teacher_logprob"], "teacher_mean_tokens": teacher["mean_tokens"],
    }
    for key, source in (("teacher", teacher), ("student", student), ("student_base", baseline)):
        metrics.update(interval_metrics(key, source))
        metrics[f"{key}_undecided"] = source.get("undecided", 0)  # absent in results scored before it existed
        if "accuracy_af" in source:
            metrics[f"{key}_accuracy_af"] = source["accuracy_af"]
    # Scored against the train problems' answers: a second x-axis for the trade-off, next to the teacher's test
    # accuracy.
    metrics["train_traces_accuracy"] = train_scores["accuracy"]
    metrics.update(interval_metrics("train_traces", train_scores))
    metrics["train_traces_mean_teacher_logprob"] = mean_teacher_logprob(train)
    metrics["train_traces_mean_tokens"] = sum(t["num_tokens"] for t in train) / max(1, len(train))
    return metrics


def seed_metrics(seeds: list[int], accuracies: list[float]) -> dict[str, float]:
    """`student_accuracy_seed<N>` per distillation seed and their mean."""
    metrics = {f"student_accuracy_seed{seed}": acc for seed, acc in zip(seeds, accuracies)}
    metrics["student_accuracy_seeds_mean"] = sum(accuracies) / len(accuracies)
    return metrics


def endpoint_metrics(endpoints: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> dict[str, float]:
    """The parent run's answer: G per tilted sampler with its interval, T*, and the equal-target differences."""
    metrics: dict[str, float] = {}
    for row in endpoints:
        if row["G"] is not None:
            metrics.update({f"G_{row['curve']}{suffix}": row[key] for key, suffix in
                            (("G", ""), ("low", "_low"), ("high", "_high"), ("defined", "_defined"))
                            if row[key] is not None})
    if endpoints:  # where G is read, the same T* for every tilted sampler (the figure marks it)
        metrics["T_star"] = endpoints[0]["teacher_accuracy"]
    for row in comparisons:
        prefix = f"{row['curve']}_minus_temperature_target{row['target']:g}"
        metrics.update({f"{prefix}_{who}_{key}": row[who][key] for who in ("student", "teacher")
                        for key in ("difference", "low", "high")})
    return metrics


def source_tags() -> dict[str, str]:
    """MLflow's source tags for a run started by `antidistill bench run`: entry point, user, package version and,
    when the code runs from a git checkout, its commit."""
    import getpass
    import subprocess

    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    from harness_plugin import __version__

    tags = {MLFLOW_SOURCE_NAME: "antidistill bench run", MLFLOW_SOURCE_TYPE: "LOCAL",
            "antidistill.version": __version__}
    with contextlib.suppress(Exception):
        tags[MLFLOW_USER] = getpass.getuser()
    package_root = Path(__file__).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(package_root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", "")})
        if done.returncode == 0 and len(done.stdout.strip()) == 40:
            tags[MLFLOW_GIT_COMMIT] = done.stdout.strip()
    return tags


class Tracker:
    """Find-or-create for the experiment, its parent run, the grid points' runs and model versions."""

    def __init__(self, output: Path, experiment: str, registered_model: str) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException

        _quiet_mlflow()
        self.output = output.resolve()
        self.uri, owned = tracking_uri_for(self.output)
        with _store_initialisation_lock(self.uri):
            mlflow.set_tracking_uri(self.uri)
            self.client = mlflow.MlflowClient(self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = (self.output / "mlartifacts").as_uri() if owned else None
                try:
                    self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
                except MlflowException:  # another process (through a server) created it meanwhile
                    found = self.client.get_experiment_by_name(experiment)
                    if found is None:
                        raise
                    self.experiment_id = found.experiment_id
            else:
                self.experiment_id = found.experiment_id
        self.experiment = experiment
        self.registered_model = registered_model
        self.output_id = hashlib.sha256(str(self.output).encode()).hexdigest()[:16]

    def _find_run(self, filter_string: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def parent_run_id(self, name: str) -> str:
        """The parent run of this output folder, created once, with MLflow's source tags (who, what, which code)."""
        run_id = self._find_run(f"tags.`{ROLE}` = 'parent' and tags.`{OUTPUT_ID}` = '{self.output_id}'")
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=name, tags={
                ROLE: "parent", OUTPUT: str(self.output), OUTPUT_ID: self.output_id, **source_tags()})
            run_id = run.info.run_id
        return run_id

    def log_config(self, run_id: str, config: Mapping[str, Any]) -> None:
        """Every setting as a param `config.<dotted.key>`, so runs can be filtered and compared on any of them."""
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        flat = flatten(config, "config.")
        self.log(run_id, {k: (v if len(v) <= MAX_PARAM_VAL_LENGTH else v[: MAX_PARAM_VAL_LENGTH - 1] + "…")
                          for k, v in flat.items()})

    def log_splits(self, run_id: str, splits: Mapping[str, list[dict[str, Any]]], source: str) -> None:
        """Each problem split as an MLflow dataset input (name, digest of its records, size), once per run."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        from harness_plugin.io import sha256_of_records

        logged = {d.dataset.name for d in self.client.get_run(run_id).inputs.dataset_inputs}
        inputs = []
        for split, records in splits.items():
            name = f"{source}/{split}"
            if name in logged:
                continue
            digest = sha256_of_records(records)[:16]
            dataset = Dataset(name=name, digest=digest, source_type="antidistill",
                              source=json.dumps({"dataset": source, "split": split}),
                              profile=json.dumps({"num_rows": len(records)}))
            inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)]))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def child_run_id(self, parent_id: str, point_name: str, role: str = "grid_point") -> str:
        """The nested run of one grid point (or of the baseline), created once."""
        run_id = self._find_run(f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{POINT}` = '{point_name}'")
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=point_name, tags={
                "mlflow.parentRunId": parent_id, ROLE: role, POINT: point_name, OUTPUT: str(self.output),
                OUTPUT_ID: self.output_id})
            run_id = run.info.run_id
        return run_id

    def log(self, run_id: str, params: Mapping[str, Any] = {},  # noqa: B006 (read only)
            metrics: Mapping[str, float] = {}, series: Mapping[str, list[tuple[int, float]]] = {}) -> None:  # noqa: B006
        """Params (only those not logged yet: a resumed run has them and MLflow refuses changed values), metrics
        and per-step series, in one batched call."""
        import time

        from mlflow.entities import Metric, Param

        existing = self.client.get_run(run_id).data.params
        now = int(time.time() * 1000)
        batch_params = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        batch_metrics = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        batch_metrics += [Metric(k, float(v), now, int(step)) for k, points in series.items() for step, v in points]
        for start in range(0, max(len(batch_metrics), 1), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(run_id, metrics=batch_metrics[start:start + 1000],
                                  params=batch_params if start == 0 else [])

    def register_student(self, run_id: str, student_dir: Path, tags: Mapping[str, Any],
                         alias: str | None = None) -> str:
        """Log the student with MLflow's transformers flavor and register it as a model version, once per run.

        A logged model (MLmodel file, requirements) rather than a plain folder, so that
        `mlflow.transformers.load_model("models:/<name>@clean")`, `mlflow.pyfunc` and `mlflow models serve` apply.
        """
        import logging

        import mlflow
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # registered by an earlier grid point already
            self.client.create_registered_model(self.registered_model, description=(
                "Students distilled from teacher traces, one version per sampler setting (antidistill bench)."))
        versions = self.client.search_model_versions(f"name='{self.registered_model}' and run_id='{run_id}'")
        if versions:
            version = str(versions[0].version)
        else:
            from importlib.metadata import version as installed

            from transformers import AutoModelForCausalLM, AutoTokenizer

            components = {"model": AutoModelForCausalLM.from_pretrained(str(student_dir)),
                          "tokenizer": AutoTokenizer.from_pretrained(str(student_dir))}
            flavor_log = logging.getLogger("mlflow.transformers")
            level = flavor_log.level
            flavor_log.setLevel(logging.ERROR)  # offline, it warns that the hub has no model card for a local model
            try:
                mlflow.set_tracking_uri(self.uri)
                with mlflow.start_run(run_id=run_id, experiment_id=self.experiment_id):
                    # Requirements given, not inferred: inference loads the model again in a subprocess.
                    info = mlflow.transformers.log_model(
                        components, name="student", task="text-generation",
                        pip_requirements=[f"{name}=={installed(name)}" for name in ("torch", "transformers")],
                        registered_model_name=self.registered_model, await_registration_for=0)
            finally:
                flavor_log.setLevel(level)
            version = str(info.registered_model_version)
            for key, value in tags.items():
                self.client.set_model_version_tag(self.registered_model, version, key, str(value))
        if alias:
            self.client.set_registered_model_alias(self.registered_model, alias, version)
        return version

    def finish(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")
