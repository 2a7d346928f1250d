"""The run folder: nothing of a user's is touched, settings cannot change under a run, one run at a time,
and MLflow finds runs whatever characters the path holds."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks.config import BenchConfig
from benchmarks.run_folder import LOCK_NAME, RunFolderError, check_output, exclusive, leftovers


def user_folder(path):
    (path / ".git").mkdir(parents=True)
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (path / ".env").write_text("SECRET=1\n")
    (path / "notes.txt").write_text("mine\n")
    return path


def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_was(tmp_path, capsys):
    from harness_plugin.cli import main

    folder = user_folder(tmp_path / "mine")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert main(["bench", "run", "--preset", "smoke", "--no-progress", "--output", str(folder)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_changed_settings_are_refused_but_tracking_may_change(tmp_path):
    saved = BenchConfig.load("smoke")
    (tmp_path / "config.yaml").write_text(saved.to_yaml())
    check_output(tmp_path, BenchConfig.load("smoke", overrides=["tracking.experiment=elsewhere"]))
    with pytest.raises(RunFolderError, match=r"grid\.antidistillation\.lam: \[2\.0\] -> \[3\.0\]"):
        check_output(tmp_path, BenchConfig.load("smoke", overrides=["grid.antidistillation.lam=[3.0]"]))


def test_a_run_made_on_another_world_is_refused(tmp_path, capsys):
    """The settings name the toy world ("smoke"), not its content: a world rebuilt by changed code is another one."""
    import json

    from benchmarks.run_folder import WORLD_NAME, world_identity

    config = BenchConfig.load("smoke")
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    check_output(tmp_path, config)  # an earlier version's run: no record, resumed with a note
    assert WORLD_NAME in capsys.readouterr().err
    identity = world_identity(config)
    assert identity["toy_world"] == "smoke" and len(identity["hash"]) == 16
    (tmp_path / WORLD_NAME).write_text(json.dumps(identity))
    check_output(tmp_path, config)
    (tmp_path / WORLD_NAME).write_text(json.dumps({**identity, "hash": "0123456789abcdef"}))
    with pytest.raises(RunFolderError, match=r"world '0123456789abcdef'.*give another --output"):
        check_output(tmp_path, config)


def test_only_this_programs_temporary_names_are_leftovers(tmp_path):
    from benchmarks.pipeline import Pipeline

    folder = user_folder(tmp_path / "run")
    ours = [folder / ".config.yaml.ab12cd34.tmp", folder / ".student-ab12_d34", folder / ".gradient.old-4242",
            folder / ".student-seed1-zduzkuto"]  # an endpoint seed's student, killed while it trained
    ours[0].write_text("half")
    for entry in ours[1:]:
        entry.mkdir()
    (folder / ".gitignore").write_text("*\n")
    assert sorted(leftovers(folder)) == sorted(ours)
    Pipeline(BenchConfig.load("smoke"), folder).clean_leftovers()
    assert not any(p.exists() for p in ours)
    assert (folder / ".git" / "HEAD").exists() and (folder / ".env").exists() and (folder / ".gitignore").exists()


def test_a_second_run_on_a_locked_folder_fails_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom benchmarks.run_folder import exclusive\n"
        f"with exclusive(Path({str(tmp_path)!r})):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"in use by process {holder.pid}"), exclusive(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()


def test_stop_after_a_finished_stage_stops_there(tmp_path, monkeypatch):
    from benchmarks.pipeline import Pipeline

    monkeypatch.setenv("ANTIDISTILL_CACHE", str(tmp_path / "cache"))  # a build would land here: it must not run
    (tmp_path / "run" / "gradient").mkdir(parents=True)
    (tmp_path / "run" / "holdout_traces.jsonl").write_text("")
    pipeline = Pipeline(BenchConfig.load("smoke"), tmp_path / "run", progress=False)
    started = time.perf_counter()
    assert pipeline.run(stop_after="gradient") is False
    assert time.perf_counter() - started < 30 and not (tmp_path / "cache").exists()
    assert not (tmp_path / "run" / "baseline").exists()


def test_runs_are_found_again_under_a_path_with_quotes(tmp_path):
    from benchmarks.tracking import Tracker

    output = tmp_path / "it's a \"run\""
    output.mkdir()
    tracker = Tracker(output, "quoted", "quoted-student")
    parent = tracker.parent_run_id("quoted")
    child = tracker.child_run_id(parent, "temperature-tau1")
    again = Tracker(output, "quoted", "quoted-student")
    assert again.parent_run_id("quoted") == parent and again.child_run_id(parent, "temperature-tau1") == child


def test_four_processes_on_a_fresh_shared_store_all_succeed_without_duplicates(tmp_path):
    """MLflow migrates a fresh sqlite store on first use; four processes doing it at once used to crash (3 of 4)."""
    import os

    import mlflow

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    script = ("import sys\nfrom pathlib import Path\nfrom benchmarks.tracking import Tracker\n"
              "out = Path(sys.argv[1]); out.mkdir()\nt = Tracker(out, 'shared', 'shared-student')\n"
              "print(t.child_run_id(t.parent_run_id('shared'), 'temperature-tau1'))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    processes = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"out{i}")], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err[-2000:] for _, err in results]
    client = mlflow.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "shared"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 8 and len({out.strip() for out, _ in results}) == 4  # 4 parents, 4 children
