"""Extra students where the endpoint G is read (`distill.endpoint_seeds`): which points get them, when they are
planned, which settings allow them, and that adding them extends a run rather than redefining it."""

from __future__ import annotations

import json

import pytest

from benchmarks.config import BenchConfig, ConfigError
from benchmarks.pipeline import Pipeline
from benchmarks.run_folder import RunFolderError, check_output

WITH_ENDPOINT = ["grid.endpoint=0.5", "distill.endpoint_seeds=[1]"]


def scored(pipeline: Pipeline, accuracies: dict[str, float]) -> None:
    for name, accuracy in accuracies.items():
        folder = pipeline.output / "points" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "teacher_eval.json").write_text(json.dumps({"accuracy": accuracy, "n": 100}))


def test_extra_seeds_go_to_the_points_that_bracket_t_star_once_the_teachers_are_scored(tmp_path):
    pipeline = Pipeline(BenchConfig.load("smoke", overrides=WITH_ENDPOINT), tmp_path / "run", progress=False)
    names = {(p.sampler, p.tau): p.name for p in pipeline.config.grid}
    clean, hot = names[("temperature", 0.0)], names[("temperature", 1.0)]
    ads, perm = names[("antidistillation", 0.8)], names[("permutation", 0.8)]
    assert pipeline.results.endpoint_points() == [] and pipeline.results.t_star() is None  # nothing scored yet

    scored(pipeline, {clean: 0.8, hot: 0.3, ads: 0.4})  # T* = 0.5 x 0.8 = 0.4; permutation not scored yet
    assert pipeline.results.t_star() == pytest.approx(0.4)
    assert {p.name for p in pipeline.results.endpoint_points()} == {clean, hot, ads}  # ads sits exactly at T*

    scored(pipeline, {perm: 0.2})  # permutation's only point is below T*: G is undefined there, no extra student
    by_name = {p.name: p for p in pipeline.config.grid}
    assert pipeline.results.point_seeds(by_name[ads]) == [0, 1] and pipeline.results.point_seeds(by_name[perm]) == [0]
    extra = [s for s in pipeline.stages() if "at the endpoint" in s.name]
    assert {s.point.name for s in extra} == {clean, hot, ads}
    assert all(s.output.parent.name in (clean, hot, ads) and "seed1" in s.output.name for s in extra)


@pytest.mark.parametrize(("overrides", "message"), [
    (["distill.endpoint_seeds=[1]"], "needs grid.endpoint"),
    (["grid.endpoint=0.5", "distill.endpoint_seeds=[0]"], "repeats a seed"),
    (["grid.endpoint=0.5", "distill.endpoint_seeds=[1, 1]"], "distinct integers"),
    (["grid.endpoint=0.5", "distill.endpoint_seeds=1"], "distinct integers"),
])
def test_bad_endpoint_seeds_are_refused_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        BenchConfig.load("smoke", overrides=overrides)


def test_adding_endpoint_seeds_extends_a_run_but_other_distill_changes_are_refused(tmp_path):
    (tmp_path / "config.yaml").write_text(BenchConfig.load("smoke", overrides=["grid.endpoint=0.5"]).to_yaml())
    check_output(tmp_path, BenchConfig.load("smoke", overrides=["grid.endpoint=0.5", "distill.endpoint_seeds=[1, 2]"]))
    with pytest.raises(RunFolderError, match=r"distill\.seeds"):
        check_output(tmp_path, BenchConfig.load("smoke", overrides=["grid.endpoint=0.5", "distill.seeds=[0, 1]"]))
