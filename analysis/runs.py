"""Reading a benchmark experiment back from MLflow: one parent run and its grid-point children.

The contract with the benchmark suite: the parent run is tagged `antidistill.role=parent`; each grid point is a
nested child (`mlflow.parentRunId`) with params `sampler`, `curve` (the sampler, or `sampler-penalty` for another
Δ method's curve), `tau`, `lam`, `eps`, ... and metrics
`teacher_accuracy[_af]`, `student_accuracy[_af]`, `student_base_accuracy` (fractions in [0, 1]). Unknown samplers
and children without accuracies are skipped with a note, never an error: a sweep that is still running, or one
with extra baseline runs, can still be plotted.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness_plugin.names import SAMPLER_LONG_NAMES, SAMPLER_SPELLINGS

from .errors import AnalysisError
from .style import curve_order, is_known_curve

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

ROLE_TAG = "antidistill.role"
PARENT_TAG = "mlflow.parentRunId"
ACCURACY_METRICS = ("teacher_accuracy", "student_accuracy", "teacher_accuracy_af", "student_accuracy_af",
                    "train_traces_accuracy")
TITLE_PARAMS = ("dataset", "teacher", "proxy", "student", "preset")


def resolve_tracking_uri(uri: str | None) -> str:
    """`--tracking-uri`, else `MLFLOW_TRACKING_URI`; otherwise one error that says how to give it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise AnalysisError(
            "no MLflow tracking URI: pass --tracking-uri (e.g. sqlite:///runs/mlflow.db, the benchmark's store) "
            "or set MLFLOW_TRACKING_URI.")
    return uri


def normalise_sampler(name: str | None) -> str:
    """The paper's name of a sampler (`antidistillation`) for any spelling a user types (`ads`, `temp`, ...)."""
    name = (name or "").strip().lower()
    return SAMPLER_LONG_NAMES[SAMPLER_SPELLINGS[name]] if name in SAMPLER_SPELLINGS else name


@dataclass(frozen=True)
class GridPoint:
    """One child run: one sampler setting, with the accuracies of its teacher traces and distilled student."""

    run_id: str
    curve: str  # the sampler (`antidistillation`), or `antidistillation-head` for another Δ method's curve
    params: dict[str, str]
    metrics: dict[str, float]

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return float(value) if value is not None else None


@dataclass
class BenchmarkResults:
    """What the figures need from one benchmark experiment."""

    experiment_name: str
    parent_run_id: str
    parent_params: dict[str, str]
    points: list[GridPoint]
    base_accuracy: float | None
    base_accuracy_af: float | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    parent_metrics: dict[str, float] = field(default_factory=dict)

    def endpoint(self) -> tuple[float, dict[str, tuple[float, float | None, float | None]]] | None:
        """(T*, {curve: (G, low, high)}) when the benchmark logged its primary endpoint, else None."""
        t_star = self.parent_metrics.get("T_star")
        if t_star is None:
            return None
        m = self.parent_metrics
        curves = sorted((k[2:] for k in m if k.startswith("G_") and is_known_curve(k[2:])
                         and not k.endswith(("_low", "_high", "_defined"))), key=curve_order)
        gaps = {curve: (m[f"G_{curve}"], m.get(f"G_{curve}_low"), m.get(f"G_{curve}_high")) for curve in curves}
        return (t_star, gaps) if gaps else None

    def describe(self, key: str) -> str | None:
        """A title parameter from the parent run, else the most common value among the children."""
        if self.parent_params.get(key):
            return self.parent_params[key]
        values = Counter(p.params[key] for p in self.points if p.params.get(key))
        return values.most_common(1)[0][0] if values else None

    def curves(self) -> list[str]:
        """The curves with points: samplers in the figures' order, each followed by its other Δ methods'."""
        return sorted({p.curve for p in self.points}, key=curve_order)

    def series(self, curve: str, x_metric: str, y_metric: str) -> tuple[list[float], list[float]]:
        """(x, y) of one curve's points that have both metrics."""
        xs, ys = [], []
        for point in self.points:
            x, y = point.metric(x_metric), point.metric(y_metric)
            if point.curve == curve and x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        return xs, ys


def _client(tracking_uri: str) -> MlflowClient:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _search(client: MlflowClient, experiment_id: str, filter_string: str, order_by: list[str] | None = None,
            ) -> Iterator[Run]:
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, order_by=order_by,
                                  max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def find_parent_run(client: MlflowClient, experiment: str | None = None, run_id: str | None = None) -> Run:
    """The run given by id (its parent, if it is a child), or the latest parent run of the named experiment."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            raise AnalysisError(f"no MLflow run {run_id!r} in this tracking store ({error.message}): check "
                                "--run-id and --tracking-uri.") from None
        parent = run.data.tags.get(PARENT_TAG)
        if parent and run.data.tags.get(ROLE_TAG) != "parent":
            print(f"run {run_id} is a child run; using its parent run {parent}")
            return client.get_run(parent)
        return run
    if not experiment:
        raise AnalysisError("say which benchmark to draw: --experiment NAME (its latest parent run) or --run-id ID.")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise AnalysisError(f"no MLflow experiment named {experiment!r} in this tracking store; it has: "
                            f"{', '.join(names) or 'no experiments'}. Check --experiment and --tracking-uri.")
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'parent'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise AnalysisError(f"experiment {experiment!r} has no run tagged {ROLE_TAG}=parent (is it a benchmark "
                            "experiment?): pass the parent run with --run-id.")
    return runs[0]


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _base_accuracy(parent: Run, children: list[Run], metric: str) -> float | None:
    """The undistilled student's accuracy: the parent's metric, else the median over children that logged it."""
    if metric in parent.data.metrics:
        return float(parent.data.metrics[metric])
    return _median([float(c.data.metrics[metric]) for c in children if metric in c.data.metrics])


def load_results(tracking_uri: str, experiment: str | None = None, run_id: str | None = None) -> BenchmarkResults:
    """Read the parent run and its grid points; raise when there is nothing to plot."""
    client = _client(tracking_uri)
    parent = find_parent_run(client, experiment, run_id)
    parent_id = parent.info.run_id
    children = list(_search(client, parent.info.experiment_id, f"tags.`{PARENT_TAG}` = '{parent_id}'"))
    points: list[GridPoint] = []
    skipped: list[tuple[str, str]] = []
    for child in children:
        sampler = normalise_sampler(child.data.params.get("sampler"))
        curve = child.data.params.get("curve") or sampler  # runs logged before curves existed have none
        role = child.data.tags.get(ROLE_TAG, "grid_point")
        if role not in ("grid_point", "") or not is_known_curve(curve):
            skipped.append((child.info.run_id, f"role {role!r}, sampler {sampler or 'unset'!r}"))
            continue
        metrics = {k: float(v) for k, v in child.data.metrics.items()}
        if "teacher_accuracy" not in metrics or "student_accuracy" not in metrics:
            skipped.append((child.info.run_id, "no teacher_accuracy/student_accuracy yet"))
            continue
        points.append(GridPoint(child.info.run_id, curve, dict(child.data.params), metrics))
    if not points:
        experiment_name = client.get_experiment(parent.info.experiment_id).name
        raise AnalysisError(
            f"parent run {parent_id} of experiment {experiment_name!r} has no grid-point child with "
            f"teacher_accuracy and student_accuracy ({len(children)} children, {len(skipped)} skipped): run the "
            "benchmark's grid first (`antidistill bench ...`).")
    points.sort(key=lambda p: (curve_order(p.curve), -(p.metric("teacher_accuracy") or 0.0)))
    return BenchmarkResults(
        experiment_name=client.get_experiment(parent.info.experiment_id).name,
        parent_run_id=parent_id,
        parent_params=dict(parent.data.params),
        points=points,
        base_accuracy=_base_accuracy(parent, children, "student_base_accuracy"),
        base_accuracy_af=_base_accuracy(parent, children, "student_base_accuracy_af"),
        skipped=skipped,
        parent_metrics={k: float(v) for k, v in parent.data.metrics.items()},
    )


def log_artifacts(tracking_uri: str, run_id: str, paths: list[Any], artifact_path: str = "figures") -> None:
    """Attach files to a run under `artifact_path/`."""
    client = _client(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
