"""The experiment as resumable stages: holdout traces -> proxy gradient -> per grid point: train traces, teacher
accuracy, distilled student, student accuracy -> MLflow.

Every stage writes its output atomically and is skipped when that output exists, so a run killed at any point
continues where it stopped. Under `accelerate launch` every process runs the same plan: generation is sharded
over processes and gathered, the gradient is reduced, training is data-parallel, and only the main process writes
files or talks to MLflow.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness_plugin.io import atomic_write_text, read_jsonl, write_jsonl

from .calibration import CALIBRATION_FILE
from .config import BenchConfig, GridPoint
from .results import RunResults, samples_path
from .workbench import Workbench


@dataclass
class Stage:
    key: str  # holdout | gradient | baseline | traces | teacher | student | student-eval | track
    name: str
    output: Path
    action: Callable[[], None]
    point: GridPoint | None = None
    # For an output that a later grid can outgrow (calibration.json, when an extra penalty adds curves).
    complete: Callable[[], bool] | None = None

    @property
    def done(self) -> bool:
        return self.output.exists() and (self.complete is None or self.complete())


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


class Pipeline:
    """Builds the stage list for a config and output folder, and runs what is not done yet."""

    def __init__(self, config: BenchConfig, output: Path, progress: bool = True) -> None:
        self.config, self.output, self.progress = config, output.resolve(), progress
        self.results = RunResults(config, self.output)
        self.bench = Workbench(config, self.output / "gradient", progress)
        self._cache: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    @property
    def state(self) -> Any:
        return self.bench.state

    # ------------------------------------------------------------------ plan
    def stages(self) -> list[Stage]:
        out = self.output
        stages = [
            Stage("holdout", "holdout traces (teacher, greedy)", out / "holdout_traces.jsonl", self.holdout_traces),
            Stage("gradient", "proxy gradient", out / "gradient", self.gradient),
        ]
        if self.config.calibrated:
            stages.append(Stage("calibration", "calibrate the grid to target teacher accuracies",
                                out / CALIBRATION_FILE, self.calibrate, complete=self.results.calibration_complete))
        stages.append(Stage("baseline", "undistilled student accuracy", out / "baseline" / "student_eval.json",
                            self.baseline))
        for point in self.config.grid:
            folder = self.results.point_dir(point)
            # Each action resolves its point when it runs: a calibrated point's knob is known only then.
            stages += [
                Stage("traces", "train traces", folder / "train_traces.jsonl",
                      lambda p=point: self.train_traces(self.results.resolve(p)), point),
                Stage("teacher", "teacher accuracy", folder / "teacher_eval.json",
                      lambda p=point: self.teacher_eval(self.results.resolve(p)), point),
            ]
            for seed in self.config.distill_seeds:
                label = "" if self.results.is_first_seed(seed) else f" (seed {seed})"
                stages += [
                    Stage("student", f"distil student{label}", self.results.student_dir(point, seed),
                          lambda p=point, s=seed: self.distil(p, s), point),
                    Stage("student-eval", f"student accuracy{label}", self.results.student_eval_path(point, seed),
                          lambda p=point, s=seed: self.student_eval(p, s), point),
                ]
            stages += [
                Stage("track", "MLflow run + model version", folder / "tracked.json",
                      lambda p=point: self.track(self.results.resolve(p)), point),
            ]
        # Extra students where G is read: known only once every point's teacher is scored, so `run` plans again
        # after each stage and these come last.
        results = self.results
        for point in results.endpoint_points():
            for seed in self.config.endpoint_seeds:
                stages += [
                    Stage("student", f"distil student (seed {seed}, at the endpoint)", results.student_dir(point, seed),
                          lambda p=point, s=seed: self.distil(p, s), point),
                    Stage("student-eval", f"student accuracy (seed {seed}, at the endpoint)",
                          results.student_eval_path(point, seed), lambda p=point, s=seed: self.student_eval(p, s),
                          point),
                ]
            stages.append(Stage("track", "MLflow: the endpoint seeds' accuracies",
                                results.point_dir(point) / "tracked_seeds.json", lambda p=point: self.track_seeds(p),
                                point))
        return stages

    def describe_plan(self) -> str:
        lines = [f"output: {self.output}", f"preset: {self.config.preset}   dataset: {self.config['dataset']}",
                 f"grid: {len(self.config.grid)} points"]
        for stage in self.stages():
            where = f"[{stage.point.name}] " if stage.point else ""
            lines.append(f"  {'skip (done)' if stage.done else 'run        '}  {where}{stage.name} -> "
                         f"{stage.output.relative_to(self.output)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ running
    def clean_leftovers(self) -> None:
        """Remove temporary files of a killed run: only the names this program creates (`.name.XXXXXXXX.tmp`,
        `.student-XXXXXXXX`), never another dot-entry of the folder (a user's `.git` or `.env`). Call it only
        while holding the folder's lock (`run_folder.exclusive`), so no live run's files are taken."""
        from .run_folder import leftovers

        for folder in [self.output, self.output / "baseline", *self.results.points_dir.glob("*")]:
            for entry in leftovers(folder):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def run(self, on_stage: Callable[[Stage, float], None] | None = None, stop_after: str | None = None) -> bool:
        """Run the stages not done yet; True when the whole plan is done (False: stopped at `stop_after`)."""
        main = self.state.is_main_process
        if main:
            self.output.mkdir(parents=True, exist_ok=True)
            self.clean_leftovers()
            atomic_write_text(self.output / "config.yaml", self.config.to_yaml())
            from .run_folder import WORLD_NAME, world_identity

            if not (self.output / WORLD_NAME).is_file():
                atomic_write_text(self.output / WORLD_NAME, json.dumps(world_identity(self.config), indent=1) + "\n")
        self.state.wait_for_everyone()
        previous: Path | None = None
        while True:
            # Planned again after every stage: the endpoint seeds' stages appear once the teachers are scored.
            stage = None
            for candidate in self.stages():
                if not candidate.done:
                    stage = candidate
                    break
                if stop_after is not None and candidate.key == stop_after:
                    return False
            if stage is None:
                break
            if stage.output == previous:
                raise RuntimeError(f"the stage {stage.name!r} ran and did not write {stage.output}")
            previous = stage.output
            started = time.perf_counter()
            where = f" [{stage.point.name}]" if stage.point else ""
            if main:
                print(f"==> {stage.name}{where}", flush=True)
                if stage.point is not None:
                    self.point_run_id(stage.point)  # visible in `mlflow ui` from its first stage, not its last
            stage.action()
            self.state.wait_for_everyone()
            elapsed = time.perf_counter() - started
            key = stage.name if stage.point is None else f"{stage.name} (per point)"
            self.timings[key] = self.timings.get(key, 0.0) + elapsed
            if on_stage and main:
                on_stage(stage, elapsed)
            if stop_after is not None and stage.key == stop_after:
                return False
        if main:
            _write_json(self.output / "timings.json", self.timings)
        return True

    # ------------------------------------------------------------------ stages
    def holdout_traces(self) -> None:
        teacher, tokenizer = self.bench.model("teacher")
        problems = self.bench.world()["splits"]["holdout"]
        prompts = self.bench.prompts(problems, tokenizer, self.config["prompt"]["system"])
        traces = self.bench.generate(teacher, tokenizer, prompts, None)
        if self.state.is_main_process:
            write_jsonl(self.output / "holdout_traces.jsonl",
                        [{"id": p["id"], "question": p["question"], "reference": p["reference"], **t}
                         for p, t in zip(problems, traces)])

    def gradient(self) -> None:
        from harness_plugin import ProxyGradient

        proxy, tokenizer = self.bench.model("proxy")
        traces = read_jsonl(self.output / "holdout_traces.jsonl")
        gradient = ProxyGradient.compute(proxy, tokenizer, traces, batch_size=self.config["gradient"]["batch_size"],
                                         max_length=self.config["gradient"]["max_length"],
                                         progress=self.progress and self.state.is_main_process,
                                         loss_tokens=self.config["gradient"]["loss_tokens"])
        if self.state.is_main_process:
            gradient.save(self.output / "gradient")
            print(f"    ‖g‖ = {gradient.norm:.4g} over {gradient.metadata['num_tokens']} tokens")

    def baseline(self) -> None:
        student = Path(self.bench.world()["models"]["student"])
        self._student_eval(student, self.output / "baseline" / "student_eval.json")

    def calibrate(self) -> None:
        """Per calibrated curve (sampler, or sampler with an extra penalty), bisect its knob to each target accuracy
        on the first holdout problems.

        Every probe is written to calibration_probes.json as it finishes, so a killed calibration resumes
        without repeating probes. One generation seed for all probes: differences between probes are then the
        knob's effect, not a new draw of sampling noise.
        """
        from .calibration import BOUNDS, KNOBS, calibrate, probe_dicts, probes_from_dicts
        from .scoring import score_records

        grid = self.config["grid"]
        settings = grid["calibration"]
        teacher, tokenizer = self.bench.model("teacher")
        problems = self.bench.world()["splits"]["holdout"][: settings["n_problems"]]
        prompts = self.bench.prompts(problems, tokenizer, self.config["prompt"]["system"])
        probes_path = self.output / "calibration_probes.json"
        saved = json.loads(probes_path.read_text()) if probes_path.is_file() else {}

        def accuracy(point: GridPoint | None) -> tuple[float, int]:
            traces = self.bench.generate(teacher, tokenizer, prompts, point, evaluation=True)
            records = [{"reference": p["reference"], **t} for p, t in zip(problems, traces)]
            return score_records(records, self.config.answer_dataset)["accuracy"], len(records)

        if "greedy" not in saved:
            greedy, n = accuracy(None)
            saved["greedy"] = {"accuracy": greedy, "n": n}
            self._write_main(probes_path, saved)
        greedy = saved["greedy"]["accuracy"]
        relative = bool(grid["targets_relative"])
        print(f"    greedy teacher on {len(problems)} calibration problems: {greedy:.3f}", flush=True)
        grad_norm = json.loads((self.output / "gradient" / "gradient.json").read_text())["norm"]
        points: dict[str, Any] = {}
        spreads: dict[str, float | None] = {}
        for curve in dict.fromkeys(p.curve for p in self.config.grid if p.target is not None):
            placeholders = [p for p in self.config.grid if p.curve == curve and p.target is not None]
            sampler = placeholders[0].sampler
            knob = KNOBS[sampler]
            absolute = {p.target: (p.target * greedy if relative else p.target) for p in placeholders}

            def measure(value: float, template: GridPoint = placeholders[0], knob: str = knob) -> tuple[float, int]:
                return accuracy(replace(template, **{knob: value}, target=None))

            def log(probe: Any, curve: str = curve, knob: str = knob) -> None:
                saved.setdefault(curve, []).append(probe_dicts([probe])[0])
                self._write_main(probes_path, saved)
                print(f"    {curve} {knob} = {probe.knob:.4g}: accuracy {probe.accuracy:.3f} "
                      f"(n = {probe.n}; target {probe.target:.3f})", flush=True)

            chosen, _ = calibrate(measure, sorted(set(absolute.values())), BOUNDS[knob], settings["probes_per_target"],
                                  log=log, probes=probes_from_dicts(saved.get(curve, [])))
            method = self.bench.penalty_method(placeholders[0])
            if sampler != "temperature" and method not in spreads:
                spreads[method] = self._delta_spread(method)
            spread = spreads.get(method)
            for point in placeholders:
                probe = chosen[absolute[point.target]]
                value = {"tau": point.tau, "lam": point.lam, knob: probe.knob}
                points[point.name] = {
                    "sampler": sampler, "curve": curve, "tau": value["tau"], "lam": value["lam"], "eps": point.eps,
                    "target": point.target, "target_accuracy": absolute[point.target],
                    "calibration_accuracy": probe.accuracy, "n": probe.n,
                    "lam_times_grad_norm": value["lam"] * grad_norm,
                    "tilt_nats": value["lam"] * spread if spread is not None else None,
                }
        self._write_main(self.output / CALIBRATION_FILE, {
            "n_problems": len(problems), "greedy_accuracy": greedy, "targets_relative": relative,
            "delta_top20_std_median": spreads.get(str(self.config["grid"]["penalty"])),
            "delta_top20_std_median_by_penalty": spreads, "grad_norm": grad_norm, "points": points, "probes": saved})

    def _delta_spread(self, method: str) -> float | None:
        """Median std of Δ over the teacher's top 20 tokens on 32 holdout traces: λ times it is the tilt in nats.

        The diagnostics compute the whole-model Δ (central differences), which is what `fd` and `jvp` estimate;
        `head` differentiates along the unembedding block alone, whose spread they do not measure (None)."""
        if method not in ("fd", "jvp"):
            return None
        from harness_plugin import ProxyGradient

        from .diagnostics import teacher_forced_diagnostics

        teacher, tokenizer = self.bench.model("teacher")
        proxy, _ = self.bench.model("proxy")
        traces = read_jsonl(self.output / "holdout_traces.jsonl")[:32]
        gradient = ProxyGradient.load(self.output / "gradient", proxy=proxy)
        result = teacher_forced_diagnostics(teacher, proxy, tokenizer, traces, gradient, [],
                                            batch_size=self.config["gradient"]["batch_size"], progress=False)
        return result["delta_top20_std_median"]

    def _write_main(self, path: Path, data: Any) -> None:
        if self.state.is_main_process:
            _write_json(path, data)

    def train_traces(self, point: GridPoint) -> None:
        teacher, tokenizer = self.bench.model("teacher")
        problems = self.bench.world()["splits"]["train"]
        prompts = self.bench.prompts(problems, tokenizer, self.config["prompt"]["system"])
        traces = self.bench.generate(teacher, tokenizer, prompts, point)
        if self.state.is_main_process:
            write_jsonl(self.results.point_dir(point) / "train_traces.jsonl",
                        [{"id": p["id"], "question": p["question"], "reference": p["reference"], **t}
                         for p, t in zip(problems, traces)])

    def teacher_eval(self, point: GridPoint) -> None:
        teacher, tokenizer = self.bench.model("teacher")
        problems = self.bench.world()["splits"]["test"]
        prompts = self.bench.prompts(problems, tokenizer, self.config["prompt"]["system"])
        metrics, records = self.bench.evaluate(teacher, tokenizer, problems, prompts, point)
        if self.state.is_main_process:
            write_jsonl(self.results.point_dir(point) / "teacher_samples.jsonl", records)
            _write_json(self.results.point_dir(point) / "teacher_eval.json", metrics)

    def distil(self, point: GridPoint, seed: int) -> None:
        from .distill import distill_student

        traces = [{"question": t["question"], "completion": t["completion"], "prompt": t["prompt"]}
                  for t in read_jsonl(self.results.point_dir(point) / "train_traces.jsonl")]
        log: list[dict[str, Any]] = []
        output = self.results.student_dir(point, seed)
        live = self.point_run_id(point) if self.state.is_main_process and self.results.is_first_seed(seed) else None

        def on_log(step: int, logs: dict[str, Any]) -> None:
            log.append({"step": step, **logs})
            if live is not None and "loss" in logs:  # the loss curve grows in `mlflow ui` while the student trains
                self.tracker().client.log_metric(live, "distill_loss", float(logs["loss"]), step=int(step))

        config = self.config.distill_config(seed, processes=self.state.num_processes)
        if self.state.num_processes > 1 and self.state.device.type == "cpu":
            # TrainingArguments re-creates accelerate's shared state; without use_cpu it misses `accelerate
            # launch`'s CPU ranks, so each rank trained alone on all traces and both wrote the student folder.
            config = replace(config, extra_training_args={**config.extra_training_args, "use_cpu": True})
        distill_student(self.bench.world()["models"]["student"], traces, output, config,
                        on_log=on_log, progress=self.progress and self.state.is_main_process)
        if self.state.is_main_process:
            write_jsonl(self.results.per_seed(point, seed, "distill_log", ".jsonl"), log)

    def student_eval(self, point: GridPoint, seed: int) -> None:
        self._student_eval(self.results.student_dir(point, seed), self.results.student_eval_path(point, seed))

    def _student_eval(self, student_dir: Path, output: Path) -> None:
        from harness_plugin.loading import load_model, load_tokenizer

        model = load_model(student_dir, dtype=self.config["models"]["dtype"], device=self.state.device,
                           trust_remote_code=bool(self.config["models"]["trust_remote_code"]))
        tokenizer = load_tokenizer(student_dir, trust_remote_code=bool(self.config["models"]["trust_remote_code"]))
        problems = self.bench.world()["splits"]["test"]
        prompts = self.bench.prompts(problems, tokenizer, None)  # the bare question, in the student's own template
        metrics, records = self.bench.evaluate(model, tokenizer, problems, prompts, None)
        if self.state.is_main_process:
            write_jsonl(samples_path(output), records)
            _write_json(output, metrics)

    def point_run_id(self, point: GridPoint) -> str:
        """The grid point's MLflow run (created, RUNNING, at the point's first stage; found again on a resume)."""
        runs = self._cache.setdefault("point_runs", {})
        if point.name not in runs:
            tracker = self.tracker()
            runs[point.name] = tracker.child_run_id(tracker.parent_run_id(self.config.experiment), point.name)
        return str(runs[point.name])

    def track(self, point: GridPoint) -> None:
        if not self.state.is_main_process:
            return
        from .scoring import score_records
        from .tracking import point_metrics, point_params, seed_metrics

        tracker = self.tracker()
        folder = self.results.point_dir(point)
        parent = tracker.parent_run_id(self.config.experiment)
        run_id = self.point_run_id(point)
        teacher = json.loads((folder / "teacher_eval.json").read_text())
        student = json.loads((folder / "student_eval.json").read_text())
        baseline = json.loads((self.output / "baseline" / "student_eval.json").read_text())
        gradient_meta = json.loads((self.output / "gradient" / "gradient.json").read_text())
        params = point_params(self.bench.sampling(point), self.bench.world()["models"], gradient_meta,
                              folder / "train_traces.jsonl", self.results.calibration_entry(point),
                              dataset=self.config["dataset"], preset=self.config.preset, curve=point.curve)
        train = read_jsonl(folder / "train_traces.jsonl")
        train_scores = score_records([{"completion": t["completion"], "reference": t["reference"]} for t in train],
                                     self.config.answer_dataset)
        metrics = point_metrics(teacher, student, baseline, train_scores, train)
        seeds = self.config.distill_seeds  # the endpoint seeds come later, with their own stage (track_seeds)
        if len(seeds) > 1:
            metrics.update(seed_metrics(seeds, self.results.student_accuracies(point, seeds)))
        log_path = folder / "distill_log.jsonl"
        losses = [(int(e["step"]), float(e["loss"])) for e in read_jsonl(log_path) if "loss" in e] \
            if log_path.exists() else []
        # The loss was streamed while the student trained; a student distilled before this run started has none.
        streamed = bool(tracker.client.get_metric_history(run_id, "distill_loss"))
        tracker.log(run_id, params, metrics, {} if streamed else {"distill_loss": losses})
        client = tracker.client
        for name in ("teacher_samples.jsonl", "student_samples.jsonl", "distill_log.jsonl"):
            if (folder / name).exists():
                client.log_artifact(run_id, str(folder / name), artifact_path="samples")
        traces_sample = folder / "train_traces_sample.jsonl"
        write_jsonl(traces_sample, train[:20])
        client.log_artifact(run_id, str(traces_sample), artifact_path="samples")
        version = tracker.register_student(run_id, folder / "student", tags={
            "sampler": point.sampler, "curve": point.curve, "tau": point.tau, "lam": point.lam, "eps": point.eps,
            "grid_point": point.name, "student_accuracy": student["accuracy"],
            "teacher_accuracy": teacher["accuracy"]}, alias="clean" if point.is_clean else None)
        tracker.finish(run_id)
        _write_json(folder / "tracked.json", {"run_id": run_id, "parent_run_id": parent,
                                              "registered_model": tracker.registered_model, "version": version})

    def track_seeds(self, point: GridPoint) -> None:
        """Add the endpoint seeds' student accuracies (and their mean) to the point's MLflow run."""
        if not self.state.is_main_process:
            return
        from .tracking import seed_metrics

        seeds, accuracies = self.results.point_seeds(point), self.results.student_accuracies(point)
        self.tracker().log(self.point_run_id(point), {}, seed_metrics(seeds, accuracies))
        _write_json(self.results.point_dir(point) / "tracked_seeds.json",
                    {"seeds": seeds, "student_accuracies": accuracies})

    def tracker(self) -> Any:
        if "tracker" not in self._cache:
            from .tracking import Tracker

            self._cache["tracker"] = Tracker(self.output, self.config.experiment, self.config.registered_model)
        return self._cache["tracker"]

    def finish_parent(self) -> dict[str, Any]:
        """Parent-run params, the config artifact and the baseline; returns the summary rows."""
        from .tracking import endpoint_metrics, interval_metrics

        tracker = self.tracker()
        parent = tracker.parent_run_id(self.config.experiment)
        models = self.bench.world()["models"]
        baseline = json.loads((self.output / "baseline" / "student_eval.json").read_text())
        tracker.log(parent, {"preset": self.config.preset, "dataset": self.config["dataset"],
                             "teacher": models["teacher"], "proxy": models["proxy"],
                             "student": models["student"], "grid_points": len(self.config.grid)},
                    {"student_base_accuracy": baseline["accuracy"]})
        tracker.client.log_artifact(parent, str(self.output / "config.yaml"))
        tracker.log_config(parent, self.config.data)
        tracker.log_splits(parent, self.bench.world()["splits"], str(self.config["dataset"]))
        if (self.output / "timings.json").exists():
            tracker.client.log_artifact(parent, str(self.output / "timings.json"))
        endpoints, comparisons = self.results.endpoints(), self.results.comparisons()
        tracker.log(parent, {}, endpoint_metrics(endpoints, comparisons))
        tracker.finish(parent)
        rows = []
        for point in map(self.results.resolve, self.config.grid):
            folder = self.results.point_dir(point)
            teacher = json.loads((folder / "teacher_eval.json").read_text())
            student = json.loads((folder / "student_eval.json").read_text())
            accuracies = self.results.student_accuracies(point)
            rows.append({"point": point.name, "sampler": point.sampler, "curve": point.curve, "penalty":
                         self.bench.penalty_method(point) if point.sampler != "temperature" else None,
                         "tau": point.tau, "lam": point.lam,
                         "target": point.target, "teacher_accuracy": teacher["accuracy"],
                         "student_accuracy": sum(accuracies) / len(accuracies), "student_accuracy_seeds": accuracies,
                         "teacher_accuracy_af": teacher.get("accuracy_af"),
                         "student_accuracy_af": student.get("accuracy_af"),
                         **interval_metrics("teacher", teacher), **interval_metrics("student", student)})
        summary = {"parent_run_id": parent, "experiment": self.config.experiment,
                   "tracking_uri": tracker.uri, "student_base_accuracy": baseline["accuracy"],
                   **interval_metrics("student_base", baseline), "rows": rows, "endpoints": endpoints,
                   "comparisons": comparisons}
        _write_json(self.output / "summary.json", summary)
        return summary

