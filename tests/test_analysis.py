"""`antidistill figures` against a real MLflow sqlite store filled with synthetic benchmark runs.

Each sampler's student accuracy is an exact linear function of its teacher accuracy, so the table's numbers
(student accuracy at matched teacher accuracy, and the teacher accuracy where the student falls below the
undistilled student) are known in closed form and computed here independently of the code under test.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
from tiny_models import CORPUS

from harness_plugin.cli import main

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EXPERIMENT = "toy-gsm8k"
BASE, BASE_AF = 0.31, 0.35
AF_SHIFT_X, AF_SHIFT_Y = 0.03, 0.04
# sampler: (intercept, slope, teacher accuracies); student = intercept + slope * teacher.
LINES = {
    "antidistillation": (-0.05, 0.5, [0.32, 0.41, 0.5, 0.58, 0.67, 0.78]),
    "temperature": (0.22, 0.25, [0.17, 0.26, 0.38, 0.45, 0.53, 0.66, 0.79]),
    "permutation": (0.33, 0.1, [0.23, 0.36, 0.47, 0.61, 0.74]),
}
PARENT_PARAMS = {"dataset": "gsm8k", "teacher": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                 "proxy": "Qwen/Qwen2.5-3B", "student": "meta-llama/Llama-3.2-3B", "preset": "toy"}


def _child(client, experiment_id: str, parent_id: str, start: int, params: dict, metrics: dict,
           role: str | None = "grid_point") -> str:
    tags = {"mlflow.parentRunId": parent_id}
    if role:
        tags["antidistill.role"] = role
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, start_time=start, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, float(v), start, 0) for k, v in metrics.items()])
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A sqlite MLflow store: an older parent run (must be ignored) and the latest one with its grid."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    client.create_experiment("unrelated", artifact_location=(root / "artifacts").as_uri())
    now = int(time.time() * 1000)

    old = client.create_run(experiment_id, start_time=now - 3_600_000, tags={"antidistill.role": "parent"})
    _child(client, experiment_id, old.info.run_id, now - 3_500_000, {"sampler": "temperature"},
           {"teacher_accuracy": 0.5, "student_accuracy": 0.9})
    client.set_terminated(old.info.run_id)

    parent = client.create_run(experiment_id, start_time=now, tags={"antidistill.role": "parent"},
                               run_name="grid")
    parent_id = parent.info.run_id
    from mlflow.entities import Metric, Param

    client.log_batch(parent_id, params=[Param(k, v) for k, v in PARENT_PARAMS.items()],
                     metrics=[Metric("student_base_accuracy", BASE, now, 0)])
    child_ids = []
    for sampler, (a, b, teachers) in LINES.items():
        for i, t in enumerate(teachers):
            t_af = t + AF_SHIFT_X
            child_ids.append(_child(
                client, experiment_id, parent_id, now + 1000 + i,
                {"sampler": sampler, "tau": 1.0, "lam": 0.1 * i, "eps": 1e-2, "grad_norm": 3.2, **PARENT_PARAMS},
                {"teacher_accuracy": t, "student_accuracy": a + b * t, "teacher_accuracy_af": t_af,
                 "student_accuracy_af": a + AF_SHIFT_Y + b * t_af, "student_base_accuracy_af": BASE_AF}))
    # Runs the figures must ignore: an unknown sampler, a baseline, and a grid point still running.
    _child(client, experiment_id, parent_id, now + 5000, {"sampler": "clean"},
           {"teacher_accuracy": 0.9, "student_accuracy": 0.05})
    _child(client, experiment_id, parent_id, now + 5001, {}, {"student_base_accuracy": BASE}, role="baseline")
    _child(client, experiment_id, parent_id, now + 5002, {"sampler": "temperature"}, {"teacher_accuracy": 0.6})
    client.set_terminated(parent_id)
    return {"uri": uri, "root": root, "client": client, "parent_id": parent_id, "child_id": child_ids[0]}


def expected_table(panel: str) -> tuple[dict[tuple[str, float], float | None], dict[str, tuple[str, float]]]:
    """Closed-form student accuracy at every default level, and the crossing, for the synthetic lines."""
    shift_x, shift_y, base = (0.0, 0.0, BASE) if panel == "raw" else (AF_SHIFT_X, AF_SHIFT_Y, BASE_AF)
    ranges = {s: (min(ts) + shift_x, max(ts) + shift_x) for s, (_, _, ts) in LINES.items()}
    levels = [k / 10 for k in range(11) if any(lo <= k / 10 <= hi for lo, hi in ranges.values())]
    values: dict[tuple[str, float], float | None] = {}
    crossings = {}
    for sampler, (a, b, _) in LINES.items():
        lo, hi = ranges[sampler]
        for level in levels:
            values[(sampler, level)] = a + shift_y + b * level if lo <= level <= hi else None
        root = (base - a - shift_y) / b
        crossings[sampler] = ("crossing", root) if lo <= root <= hi else ("not_reached", lo)
    return values, crossings


@pytest.fixture(scope="module")
def figures_output(store: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figures")
    rc = main(["figures", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT, "--output", str(out),
               "--bootstrap", "200"])
    assert rc == 0
    return out


def test_figures_are_written_as_png_and_pdf(figures_output: Path) -> None:
    import matplotlib.image

    for name in ("tradeoff.png", "tradeoff.pdf", "summary.md", "summary.csv", "grid_points.csv"):
        assert (figures_output / name).stat().st_size > 0, name
    assert (figures_output / "tradeoff.pdf").read_bytes().startswith(b"%PDF")
    height, width = matplotlib.image.imread(figures_output / "tradeoff.png").shape[:2]
    assert width > height > 300
    assert not list(figures_output.glob(".*tmp*"))  # no temp files left behind


@pytest.mark.parametrize("panel", ["raw", "answer_forced"])
def test_table_numbers_are_what_the_synthetic_lines_imply(figures_output: Path, panel: str) -> None:
    values, crossings = expected_table(panel)
    rows = [r for r in csv.DictReader((figures_output / "summary.csv").open()) if r["accuracy"] == panel]
    at_level = {(r["sampler"], float(r["teacher_accuracy"])): (float(r["student_accuracy"]) if r["student_accuracy"]
                                                               else None)
                for r in rows if r["quantity"] == "student_at_teacher"}
    assert set(at_level) == set(values)
    for key, expected in values.items():
        if expected is None:
            assert at_level[key] is None, key
        else:
            assert at_level[key] == pytest.approx(expected, abs=1e-5), key
    crossing_rows = {r["sampler"]: r for r in rows if r["quantity"] == "teacher_where_student_below_base"}
    for sampler, (kind, value) in crossings.items():
        assert crossing_rows[sampler]["detail"] == kind
        assert float(crossing_rows[sampler]["teacher_accuracy"]) == pytest.approx(value, abs=1e-5)
        assert int(crossing_rows[sampler]["n_runs"]) == len(LINES[sampler][2])


def test_markdown_table_states_the_headline(figures_output: Path) -> None:
    text = (figures_output / "summary.md").read_text()
    assert "GSM8K" in text and "DeepSeek-R1-Distill-Qwen-7B" in text and "Llama-3.2-3B" in text
    assert "Undistilled student: 31.0%" in text and "Undistilled student: 35.0%" in text
    _, crossings = expected_table("raw")
    adv_line = next(line for line in text.splitlines() if line.startswith("| Antidistillation"))
    assert adv_line.rstrip(" |").endswith(f"{100 * crossings['antidistillation'][1]:.1f}%")
    assert "(not reached)" in next(line for line in text.splitlines() if line.startswith("| Permutation"))


def test_only_grid_points_of_the_latest_parent_are_plotted(figures_output: Path) -> None:
    rows = list(csv.DictReader((figures_output / "grid_points.csv").open()))
    assert len(rows) == sum(len(ts) for _, _, ts in LINES.values())
    assert {r["sampler"] for r in rows} == set(LINES)
    assert all(float(r["student_accuracy"]) != 0.9 for r in rows)  # the old parent's child is not here


def test_figures_are_logged_to_the_parent_run(store: dict, figures_output: Path) -> None:
    logged = {f.path for f in store["client"].list_artifacts(store["parent_id"], "figures")}
    assert {"figures/tradeoff.png", "figures/tradeoff.pdf", "figures/summary.md", "figures/summary.csv",
            "figures/grid_points.csv"} <= logged
    assert (store["root"] / "artifacts").is_dir()


def test_run_id_of_a_child_resolves_to_its_parent(store: dict, figures_output: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["figures", "--tracking-uri", store["uri"], "--run-id", store["child_id"], "--output", str(tmp_path),
               "--bootstrap", "20", "--levels", "70,40", "--no-log"])
    assert rc == 0
    assert f"using its parent run {store['parent_id']}" in capsys.readouterr().out
    rows = [r for r in csv.DictReader((tmp_path / "summary.csv").open())
            if r["accuracy"] == "raw" and r["quantity"] == "student_at_teacher" and r["sampler"] == "temperature"]
    a, b, _ = LINES["temperature"]
    assert [float(r["teacher_accuracy"]) for r in rows] == [0.7, 0.4]
    assert [float(r["student_accuracy"]) for r in rows] == pytest.approx([a + b * 0.7, a + b * 0.4], abs=1e-5)


def test_user_errors_name_the_fix(store: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["figures", "--experiment", EXPERIMENT, "--output", str(tmp_path)]) == 2
    assert "MLFLOW_TRACKING_URI" in capsys.readouterr().err
    assert main(["figures", "--tracking-uri", store["uri"], "--experiment", "nope", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and EXPERIMENT in err
    assert main(["figures", "--tracking-uri", store["uri"], "--experiment", "unrelated",
                 "--output", str(tmp_path)]) == 2
    assert "--run-id" in capsys.readouterr().err
    assert main(["figures", "--tracking-uri", store["uri"], "--experiment", EXPERIMENT]) == 2
    assert "--output" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_fd_error_command_writes_and_logs(store: dict, tiny_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness_plugin.gradient import ProxyGradient

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (no stray ./mlruns)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "proxy")
    traces = [{"prompt": tokenizer.apply_chat_template([{"role": "user", "content": line[:30]}], tokenize=False,
                                                       add_generation_prompt=True), "completion": line[30:]}
              for line in CORPUS[:4]]
    (tmp_path / "traces.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    proxy = AutoModelForCausalLM.from_pretrained(tiny_dir / "proxy")
    ProxyGradient.compute(proxy, tokenizer, traces, progress=False).save(tmp_path / "gradient")
    out = tmp_path / "out"
    rc = main(["figures", "fd-error", "--proxy", str(tiny_dir / "proxy"), "--gradient", str(tmp_path / "gradient"),
               "--traces", str(tmp_path / "traces.jsonl"), "--output", str(out), "--eps", "1e-6,1e1",
               "--eps-in-use", "1e-4", "--dtypes", "fp32,fp16", "--positions", "4", "--device", "cpu",
               "--tracking-uri", store["uri"]])
    assert rc == 0
    rows = list(csv.DictReader((out / "fd_error.csv").open()))
    assert [(r["dtype"], float(r["eps"])) for r in rows] == [
        (d, e) for d in ("float32", "float16") for e in (1e-6, 1e-4, 1e1)]
    fp32 = {float(r["eps"]): float(r["abs_sin_mean"]) for r in rows if r["dtype"] == "float32"}
    assert fp32[1e-4] < fp32[1e-6] and fp32[1e-4] < fp32[1e1]
    client = store["client"]
    experiment = client.get_experiment_by_name("fd-error")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["abs_sin_at_eps_in_use_float32"] == pytest.approx(fp32[1e-4], rel=1e-4)
    assert run.data.params["eps_in_use"] == "0.0001" and run.data.params["positions"] == "4"
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/fd_error.png", "figures/fd_error.pdf", "figures/fd_error.csv", "figures/fd_error.json"} <= logged
    assert not (tmp_path / "mlruns").exists()


def test_points_with_logged_intervals_get_error_bars_and_others_none() -> None:
    from analysis.runs import BenchmarkResults, GridPoint
    from analysis.tradeoff import _point_intervals

    with_bars = GridPoint("a", "antidistillation", {}, {
        "teacher_accuracy": 0.5, "student_accuracy": 0.3, "teacher_accuracy_low": 0.47, "teacher_accuracy_high": 0.53,
        "student_accuracy_low": 0.27, "student_accuracy_high": 0.33})
    without = GridPoint("b", "antidistillation", {}, {"teacher_accuracy": 0.4, "student_accuracy": 0.2})
    results = BenchmarkResults("e", "p", {}, [with_bars, without], None, None)
    assert _point_intervals(results, "antidistillation", "teacher_accuracy", "student_accuracy") == [
        (0.5, 0.3, (0.47, 0.53), (0.27, 0.33))]
    assert _point_intervals(results, "temperature", "teacher_accuracy", "student_accuracy") == []


def test_endpoint_is_read_from_the_parent_and_marked_in_the_figure(tmp_path: Path) -> None:
    """T* and G (with its interval) come from the parent run's metrics; the raw panel shows them as text."""
    from analysis.runs import BenchmarkResults, GridPoint
    from analysis.tradeoff import plot_tradeoff

    points = [GridPoint(str(i), sampler, {}, {"teacher_accuracy": t, "student_accuracy": s})
              for i, (sampler, t, s) in enumerate([("temperature", 0.6, 0.4), ("temperature", 0.3, 0.2),
                                                   ("antidistillation-head", 0.45, 0.2),
                                                   ("antidistillation-head", 0.25, 0.12),
                                                   ("antidistillation", 0.5, 0.25), ("antidistillation", 0.2, 0.1)])]
    metrics = {"T_star": 0.42, "G_antidistillation-head": -0.02, "G_antidistillation-head_low": -0.05,
               "G_antidistillation-head_high": 0.01, "G_antidistillation": 0.031, "G_antidistillation_low": -0.012,
               "G_antidistillation_high": 0.07}
    results = BenchmarkResults("e", "p", {}, points, 0.15, None, parent_metrics=metrics)
    t_star, gaps = results.endpoint()
    assert t_star == 0.42 and gaps == {"antidistillation": (0.031, -0.012, 0.07),
                                       "antidistillation-head": (-0.02, -0.05, 0.01)}
    assert list(gaps) == results.curves()[:2] == ["antidistillation", "antidistillation-head"]
    assert BenchmarkResults("e", "p", {}, points, 0.15, None).endpoint() is None

    import matplotlib.figure

    texts: list[str] = []
    original = matplotlib.figure.Figure.savefig

    def keep_texts(figure, *args, **kwargs):
        texts.extend(t.get_text() for ax in figure.axes for t in ax.texts)
        return original(figure, *args, **kwargs)

    matplotlib.figure.Figure.savefig = keep_texts  # type: ignore[method-assign]
    try:
        plot_tradeoff(results, tmp_path, n_boot=20)
    finally:
        matplotlib.figure.Figure.savefig = original  # type: ignore[method-assign]
    assert any("T* = 42.0%" in t and "+3.1 [-1.2, +7.0]" in t and "antidistillation (head): -2.0 [-5.0, +1.0]" in t
               for t in texts), texts


def test_second_figure_puts_the_train_traces_correctness_on_the_x_axis(tmp_path: Path) -> None:
    from analysis.runs import BenchmarkResults, GridPoint
    from analysis.tradeoff import TRACE_PANELS, plot_tradeoff

    points = [GridPoint(str(i), "temperature", {}, {"teacher_accuracy": t, "student_accuracy": s,
                                                    "train_traces_accuracy": c})
              for i, (t, s, c) in enumerate([(0.6, 0.4, 0.7), (0.4, 0.3, 0.5), (0.2, 0.1, 0.3)])]
    results = BenchmarkResults("e", "p", {}, points, 0.05, None)
    paths = plot_tradeoff(results, tmp_path, n_boot=20, stem="by_traces", panels=TRACE_PANELS)
    assert sorted(p.name for p in paths) == ["by_traces.pdf", "by_traces.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize(("name", "short"), [
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1-Distill-Qwen-7B"),
    ("/root/.cache/antidistill/toy_world/ade78a1448931d18/proxy", "ade78a14/proxy"),  # which world, which role
    ("runs/toy/points/clean-greedy/student/", "clean-gr/student"),
    ("model", "model"), (None, "?")])
def test_figure_titles_name_models_a_reader_can_tell_apart(name, short) -> None:
    from analysis.style import short_model_name

    assert short_model_name(name) == short
