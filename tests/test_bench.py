"""The benchmark suite end to end on the smoke preset: resume after SIGKILL, MLflow (sqlite and a real server),
the model registry, bad settings, and two processes under accelerate."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
ANTIDISTILL = [sys.executable, "-m", "harness_plugin.cli"]


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    """A shared toy-world cache, so the smoke world is built once for the whole module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(ANTIDISTILL_CACHE=str(tmp_path_factory.mktemp("cache")), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def bench(args, env, **kwargs):
    # cwd outside the checkout: `python -m` must import the installed package, not the source tree
    return subprocess.run([*ANTIDISTILL, "bench", "run", "--preset", "smoke", "--no-progress", *args], env=env,
                          capture_output=True, text=True, cwd=env["ANTIDISTILL_CACHE"], **kwargs)


def grid_size(env):
    out = subprocess.run([*ANTIDISTILL, "bench", "run", "--preset", "smoke", "--dry-run", "--output", "/tmp/x"],
                         env=env, capture_output=True, text=True, check=True, cwd=env["ANTIDISTILL_CACHE"]).stdout
    return int(out.split("grid: ")[1].split()[0])


def check_tracking(uri, experiment, points, min_versions=None):
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("antidistill.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1, "one parent run per output folder, even after a restart"
    assert len(children) == points and len({c.info.run_name for c in children}) == points
    for child in children:
        params, metrics = child.data.params, child.data.metrics
        assert params["sampler"] in {"temperature", "antidistillation", "permutation"}
        for key in ("tau", "lam", "eps", "grad_norm", "teacher", "proxy", "student", "preset"):
            assert key in params
        for key in ("teacher_accuracy", "student_accuracy", "student_base_accuracy", "teacher_accuracy_af",
                    "student_accuracy_af", "train_traces_accuracy"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["train_traces_accuracy_low"] <= metrics["train_traces_accuracy"] <= metrics[
            "train_traces_accuracy_high"] and metrics["train_traces_accuracy_n"] > 0
        assert child.info.status == "FINISHED"
        assert client.get_metric_history(child.info.run_id, "distill_loss")
    name = "antidistill-smoke-student"
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == points, "one model version per grid point, no duplicates"
    assert {v.tags["sampler"] for v in versions} == {"temperature", "antidistillation", "permutation"}
    return client


@pytest.mark.slow
def test_smoke_run_killed_and_resumed_with_sqlite_tracking(bench_env, tmp_path):
    output = tmp_path / "run"
    points = grid_size(bench_env)
    process = subprocess.Popen([*ANTIDISTILL, "bench", "run", "--preset", "smoke", "--no-progress",
                                "--output", str(output)], env=bench_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 600
    first_student = None
    while time.time() < deadline and process.poll() is None:
        # kill in the middle of the first distillation (its temporary folder exists, the student does not)
        students = [p for p in (output / "points").glob("*/.student-*")] if (output / "points").exists() else []
        if students:
            first_student = students[0].parent / "student"
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not first_student.exists()
    result = bench(["--output", str(output)], bench_env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout
    assert "holdout traces" not in result.stdout  # finished stages are skipped
    assert "records no world" not in result.stderr  # the killed run had written its world's identity
    assert json.loads((output / "world.json").read_text())["toy_world"] == "smoke"
    hidden = [p for p in output.rglob(".*") if "mlartifacts" not in p.parts]
    assert not hidden, f"temporary files left behind: {hidden}"
    summary = json.loads((output / "summary.json").read_text())
    assert len(summary["rows"]) == points
    client = check_tracking(f"sqlite:///{output / 'mlflow.db'}", "antidistill-smoke", points)
    # the run draws its figures itself and logs them to the parent run
    assert (output / "figures" / "tradeoff.png").is_file() and str(output / "figures") in result.stdout
    logged = {f.path for f in client.list_artifacts(summary["parent_run_id"], "figures")}
    assert "figures/tradeoff.png" in logged
    # the parent carries every setting as a param, MLflow's source tags and the three splits as dataset inputs
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.params["config.distill.epochs"] == str(float(parent.data.params["config.distill.epochs"]))
    assert parent.data.params["config.preset"] == "smoke"
    assert parent.data.tags["mlflow.source.name"] == "antidistill bench run" and "mlflow.user" in parent.data.tags
    splits = {d.dataset.name: d for d in parent.inputs.dataset_inputs}
    assert set(splits) == {"toy/train", "toy/holdout", "toy/test"}
    assert json.loads(splits["toy/test"].dataset.profile)["num_rows"] == summary["rows"][0]["teacher_accuracy_n"]
    assert splits["toy/test"].tags[0].value == "test"

    # each point's run opened when its first stage began (so `mlflow ui` shows it at work), and its loss curve was
    # streamed once, step by step, while the student trained
    for tracked in output.rglob("tracked.json"):
        point = client.get_run(json.loads(tracked.read_text())["run_id"])
        first_output = tracked.parent / "train_traces.jsonl"
        assert point.info.start_time <= first_output.stat().st_mtime_ns // 1_000_000
        losses = [json.loads(line) for line in (tracked.parent / "distill_log.jsonl").read_text().splitlines()]
        history = client.get_metric_history(point.info.run_id, "distill_loss")
        assert sorted(m.step for m in history) == sorted(e["step"] for e in losses if "loss" in e)

    # the clean-trace student is a logged transformers model: MLflow's flavor loads it from the registry, and the
    # downloaded files load with from_pretrained; both give the student the run distilled
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mlflow.set_tracking_uri(f"sqlite:///{output / 'mlflow.db'}")
    components = mlflow.transformers.load_model("models:/antidistill-smoke-student@clean", return_type="components")
    run_of_clean = client.get_model_version_by_alias("antidistill-smoke-student", "clean").run_id
    (clean,) = [p.parent for p in output.rglob("tracked.json") if json.loads(p.read_text())["run_id"] == run_of_clean]
    original = AutoModelForCausalLM.from_pretrained(clean / "student")
    assert all(torch.equal(a, b) for a, b in zip(components["model"].state_dict().values(),
                                                  original.state_dict().values()))
    local = Path(mlflow.artifacts.download_artifacts("models:/antidistill-smoke-student@clean",
                                                     dst_path=str(tmp_path / "dl")))
    assert (local / "MLmodel").is_file()
    model = AutoModelForCausalLM.from_pretrained(local / "model")
    tokenizer = AutoTokenizer.from_pretrained(local / "components" / "tokenizer")
    assert model.config.vocab_size >= len(tokenizer) and tokenizer.vocab == components["tokenizer"].vocab
    assert client.get_model_version_by_alias("antidistill-smoke-student", "clean").tags["tau"] == "0.0"

    # running again does nothing new: every stage is skipped, nothing is duplicated
    again = bench(["--output", str(output)], bench_env, timeout=600)
    assert again.returncode == 0 and "==>" not in again.stdout
    check_tracking(f"sqlite:///{output / 'mlflow.db'}", "antidistill-smoke", points)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_calibrated_grid_reaches_matched_points_reports_paired_intervals_and_extends_by_a_penalty(bench_env, tmp_path):
    """Calibrated points get their knob from a logged bisection, the comparison at each target and the endpoint G
    come with intervals over test problems, every point has a student per seed, a rerun skips the finished
    calibration, and `grid.extra_penalties` adds a curve to the finished run."""
    import mlflow

    from benchmarks.calibration import BOUNDS

    output = tmp_path / "calibrated"
    sets = ["grid.calibrate=[temperature, antidistillation]", "grid.targets=[0.5]", "grid.calibration.n_problems=8",
            "grid.calibration.probes_per_target=2", "grid.temperature.tau=[0.0]", "grid.antidistillation.lam=[]",
            "grid.permutation.lam=[]", "grid.endpoint=0.5", "distill.seeds=[0, 1]", "distill.endpoint_seeds=[2]",
            "tracking.experiment=calibrated"]
    args = ["--output", str(output), *[part for s in sets for part in ("--set", s)]]
    first = bench(args, bench_env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    calibration = json.loads((output / "calibration.json").read_text())
    names = {"temperature-target0.5": "tau", "antidistillation-tau0.8-eps0.01-target0.5": "lam"}
    assert set(calibration["points"]) == set(names)
    for name, knob in names.items():
        entry = calibration["points"][name]
        low, high = BOUNDS[knob]
        assert low < entry[knob] < high and entry["n"] == 8
        assert entry["target_accuracy"] == pytest.approx(0.5 * calibration["greedy_accuracy"])
    probes = calibration["probes"]
    assert 1 <= len(probes["antidistillation"]) <= 2 and 1 <= len(probes["temperature"]) <= 2
    summary = json.loads((output / "summary.json").read_text())
    (comparison,) = summary["comparisons"]
    assert comparison["sampler"] == "antidistillation" and comparison["reference_point"] == "temperature-target0.5"
    for who in ("student", "teacher"):
        d = comparison[who]
        assert d["low"] <= d["difference"] <= d["high"] and d["n"] == 16
    assert "minus temperature" in first.stdout
    (endpoint,) = summary["endpoints"]
    t_star = endpoint["teacher_accuracy"]
    for row in summary["rows"]:  # two students per point, the second in its own folder; a third where G is read
        curve = sorted(r["teacher_accuracy"] for r in summary["rows"] if r["sampler"] == row["sampler"])
        at_or_around = [a for a in curve if a == t_star] or [
            a for lo, hi in zip(curve, curve[1:]) if lo < t_star < hi for a in (lo, hi)]
        seeds = 3 if row["teacher_accuracy"] in at_or_around else 2
        assert len(row["student_accuracy_seeds"]) == seeds, (row, t_star)
        assert row["student_accuracy"] == pytest.approx(sum(row["student_accuracy_seeds"]) / seeds)
        assert (output / "points" / row["point"] / "student-seed1" / "config.json").is_file()
        assert (output / "points" / row["point"] / "tracked_seeds.json").is_file() == (seeds == 3)
    assert endpoint["sampler"] == "antidistillation" and endpoint["n"] == 16
    assert endpoint["G"] is None or endpoint["low"] <= endpoint["G"] <= endpoint["high"]
    assert "G = temperature student" in first.stdout or "undefined" in first.stdout
    client = mlflow.MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("calibrated").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("antidistill.role") == "parent")
    assert parent.data.metrics["T_star"] == pytest.approx(endpoint["teacher_accuracy"])
    child = next(r for r in runs if r.info.run_name == "antidistillation-tau0.8-eps0.01-target0.5")
    assert float(child.data.params["lam"]) == pytest.approx(calibration["points"][child.info.run_name]["lam"])
    assert child.data.params["calibration_target"] == "0.5" and "teacher_accuracy_low" in child.data.metrics
    again = bench(args, bench_env, timeout=900)
    assert again.returncode == 0 and "==> calibrate" not in again.stdout

    # Another Δ method extends the finished run with a curve of its own: only its stages run, the existing curves'
    # knobs come out the same, and its G and comparison stand beside fd's.
    extended = bench([*args, "--set", "grid.extra_penalties=[head]"], bench_env, timeout=900)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "[temperature-target0.5]" not in extended.stdout and "==> calibrate" in extended.stdout
    assert "==> train traces [antidistillation-tau0.8-eps0.01-target0.5-head]" in extended.stdout
    recalibrated = json.loads((output / "calibration.json").read_text())
    head = recalibrated["points"].pop("antidistillation-tau0.8-eps0.01-target0.5-head")
    assert recalibrated["points"] == calibration["points"]
    assert head["curve"] == "antidistillation-head" and BOUNDS["lam"][0] < head["lam"] < BOUNDS["lam"][1]
    assert len(recalibrated["probes"]["antidistillation-head"]) <= 2
    summary = json.loads((output / "summary.json").read_text())
    assert [e["curve"] for e in summary["endpoints"]] == ["antidistillation", "antidistillation-head"]
    assert [c["curve"] for c in summary["comparisons"]] == ["antidistillation", "antidistillation-head"]
    runs = client.search_runs([client.get_experiment_by_name("calibrated").experiment_id])
    child = next(r for r in runs if r.info.run_name == "antidistillation-tau0.8-eps0.01-target0.5-head")
    assert child.data.params["penalty"] == "head" and child.data.params["curve"] == "antidistillation-head"
    assert float(child.data.params["lam"]) == pytest.approx(head["lam"])
    fd_child = next(r for r in runs if r.info.run_name == "antidistillation-tau0.8-eps0.01-target0.5")
    assert fd_child.data.params["penalty"] == "fd"


@pytest.mark.slow
def test_smoke_run_against_a_real_mlflow_server(bench_env, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        env=bench_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not come up")
                time.sleep(1)
        result = bench(["--output", str(tmp_path / "run")], {**bench_env, "MLFLOW_TRACKING_URI": uri},
                       timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert not (tmp_path / "run" / "mlflow.db").exists()  # MLFLOW_TRACKING_URI wins over the sqlite default
        check_tracking(uri, "antidistill-smoke", grid_size(bench_env))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_bad_settings_fail_before_any_work(bench_env, tmp_path, tiny_dir, capsys, monkeypatch):
    from harness_plugin.cli import main

    monkeypatch.setenv("ANTIDISTILL_CACHE", bench_env["ANTIDISTILL_CACHE"])
    cases = [
        (["--preset", "huge"], "unknown preset"),
        (["--set", "grid.antidistillation.lam=[-1]"], "lam must be >= 0"),
        (["--set", "grid.nonsense=1"], "unknown setting"),
        (["--set", f"models.proxy={tiny_dir / 'proxy_other_vocab'}"], "different vocabularies"),
    ]
    for args, message in cases:
        output = tmp_path / f"out{len(message)}"
        code = main(["bench", "run", "--preset", "smoke", "--no-progress", "--output", str(output), *args])
        assert code == 2
        assert message in capsys.readouterr().err
        assert not output.exists() or not any(output.iterdir()), "nothing may be written before the check"
    monkeypatch.setenv("ANTIDISTILL_DATA_DIR", str(tmp_path))
    assert main(["bench", "run", "--preset", "paper-gsm8k", "--output", str(tmp_path / "gsm")]) == 2
    assert "gsm8k/train.jsonl" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_same_traces_and_gradient_and_distil_with_the_same_global_batch(bench_env, tmp_path):
    import torch
    from safetensors.torch import load_file

    common = ["bench", "run", "--preset", "smoke", "--no-progress", "--stop-after", "gradient"]
    single = subprocess.run([*ANTIDISTILL, *common, "--output", str(tmp_path / "one")], env=bench_env,
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", str(_free_port()),
                             "-m", "harness_plugin.cli", *common[:-2], "--no-figures", "--output", str(tmp_path / "two")],
                            env=bench_env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    errors = [line for line in double.stderr.splitlines() if "Error" in line or "rank" in line.lower()]
    assert double.returncode == 0, "\n".join(errors[-40:])
    one = [json.loads(line) for line in (tmp_path / "one" / "holdout_traces.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "holdout_traces.jsonl").read_text().splitlines()]
    assert [r["id"] for r in one] == [r["id"] for r in two]
    assert [r["completion"] for r in one] == [r["completion"] for r in two]
    g1 = load_file(str(tmp_path / "one" / "gradient" / "gradient.safetensors"))
    g2 = load_file(str(tmp_path / "two" / "gradient" / "gradient.safetensors"))
    for name, tensor in g1.items():
        torch.testing.assert_close(g2[name], tensor, rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "two" / "gradient" / "gradient.json").read_text())["world_size"] == 2
    # The whole run goes on under two ranks, and distill.batch_size stays the global batch: each rank takes half,
    # so the optimizer takes as many steps as one process would (each rank once trained alone on all traces).
    distilled = json.loads((tmp_path / "two" / "points" / "clean-greedy" / "student" / "distill.json").read_text())
    assert distilled["config"]["batch_size"] * 2 == 8  # the smoke preset's distill.batch_size
    assert distilled["global_steps"] == math.ceil(distilled["n_examples"] / 8)
    assert (tmp_path / "two" / "summary.json").is_file()
