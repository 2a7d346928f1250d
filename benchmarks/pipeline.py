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

from .calibration import CALIBRATION_FILE, calibrated_entries, with_calibrated_knob
from .config import BenchConfig, GridPoint


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
        self.points_dir = self.output / "points"
        self._cache: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ plan
    def point_dir(self, point: GridPoint) -> Path:
        return self.points_dir / point.name

    def stages(self) -> list[Stage]:
        out = self.output
        stages = [
            Stage("holdout", "holdout traces (teacher, greedy)", out / "holdout_traces.jsonl", self.holdout_traces),
            Stage("gradient", "proxy gradient", out / "gradient", self.gradient),
        ]
        if self.config.calibrated:
            stages.append(Stage("calibration", "calibrate the grid to target teacher accuracies",
                                out / CALIBRATION_FILE, self.calibrate, complete=self._calibration_complete))
        stages.append(Stage("baseline", "undistilled student accuracy", out / "baseline" / "student_eval.json",
                            self.baseline))
        for point in self.config.grid:
            folder = self.point_dir(point)
            # Each action resolves its point when it runs: a calibrated point's knob is known only then.
            stages += [
                Stage("traces", "train traces", folder / "train_traces.jsonl",
                      lambda p=point: self.train_traces(self.resolve(p)), point),
                Stage("teacher", "teacher accuracy", folder / "teacher_eval.json",
                      lambda p=point: self.teacher_eval(self.resolve(p)), point),
            ]
            for seed in self.config.distill_seeds:
                label = "" if self.is_first_seed(seed) else f" (seed {seed})"
                stages += [
                    Stage("student", f"distil student{label}", self.student_dir(point, seed),
                          lambda p=point, s=seed: self.distil(p, s), point),
                    Stage("student-eval", f"student accuracy{label}", self.student_eval_path(point, seed),
                          lambda p=point, s=seed: self.student_eval(p, s), point),
                ]
            stages += [
                Stage("track", "MLflow run + model version", folder / "tracked.json",
                      lambda p=point: self.track(self.resolve(p)), point),
            ]
        # Extra students where G is read: known only once every point's teacher is scored, so `run` plans again
        # after each stage and these come last.
        for point in self.endpoint_points():
            for seed in self.config.endpoint_seeds:
                stages += [
                    Stage("student", f"distil student (seed {seed}, at the endpoint)", self.student_dir(point, seed),
                          lambda p=point, s=seed: self.distil(p, s), point),
                    Stage("student-eval", f"student accuracy (seed {seed}, at the endpoint)",
                          self.student_eval_path(point, seed), lambda p=point, s=seed: self.student_eval(p, s), point),
                ]
            stages.append(Stage("track", "MLflow: the endpoint seeds' accuracies",
                                self.point_dir(point) / "tracked_seeds.json", lambda p=point: self.track_seeds(p), point))
        return stages

    def is_first_seed(self, seed: int) -> bool:
        """The first seed's student keeps the plain names (`student/`, `student_eval.json`), as with one seed."""
        return seed == self.config.distill_seeds[0]

    def _per_seed(self, point: GridPoint, seed: int, stem: str, suffix: str = "") -> Path:
        """`<point>/<stem><suffix>` for the first seed, `<point>/<stem>-seed<N><suffix>` for the others."""
        return self.point_dir(point) / (f"{stem}{suffix}" if self.is_first_seed(seed) else f"{stem}-seed{seed}{suffix}")

    def student_dir(self, point: GridPoint, seed: int) -> Path:
        return self._per_seed(point, seed, "student")

    def student_eval_path(self, point: GridPoint, seed: int) -> Path:
        return self._per_seed(point, seed, "student_eval", ".json")

    def student_accuracies(self, point: GridPoint, seeds: list[int] | None = None) -> list[float]:
        """The point's student accuracy per seed, for `seeds` (default: all of `point_seeds`)."""
        return [json.loads(self.student_eval_path(point, seed).read_text())["accuracy"]
                for seed in (self.point_seeds(point) if seeds is None else seeds)]

    def point_seeds(self, point: GridPoint) -> list[int]:
        """`distill.seeds` everywhere, plus `distill.endpoint_seeds` at the points that bracket T*."""
        extra = self.config.endpoint_seeds
        if extra and point.name in {p.name for p in self.endpoint_points()}:
            return self.config.distill_seeds + extra
        return self.config.distill_seeds

    def greedy_teacher_accuracy(self) -> float | None:
        """The clean (greedy) point's teacher accuracy on the test split, once it is scored."""
        clean = next((p for p in self.config.grid if p.is_clean), None)
        path = self.point_dir(clean) / "teacher_eval.json" if clean is not None else None
        return json.loads(path.read_text())["accuracy"] if path is not None and path.is_file() else None

    def t_star(self) -> float | None:
        """The teacher accuracy where G is read (`grid.endpoint`, times the greedy teacher's when relative)."""
        endpoint = self.config.endpoint
        if endpoint is None or not self.config["grid"]["targets_relative"]:
            return endpoint
        greedy = self.greedy_teacher_accuracy()
        return None if greedy is None else endpoint * greedy

    def endpoint_points(self) -> list[GridPoint]:
        """Per curve, the one or two points whose teacher accuracies bracket T*: where G is read, so where extra
        seeds narrow its interval. Empty until T* and all of a curve's teacher accuracies are known."""
        from .intervals import bracketing

        t_star = self.t_star() if self.config.endpoint_seeds else None
        if t_star is None:
            return []
        chosen: list[GridPoint] = []
        for curve in dict.fromkeys(p.curve for p in self.config.grid):
            points = [p for p in self.config.grid if p.curve == curve]
            paths = [self.point_dir(p) / "teacher_eval.json" for p in points]
            if all(path.is_file() for path in paths):
                accuracies = [json.loads(path.read_text())["accuracy"] for path in paths]
                chosen += [points[i] for i in bracketing(accuracies, t_star)]
        return chosen

    def resolve(self, point: GridPoint) -> GridPoint:
        """The point with its calibrated knob (from calibration.json); an explicit point as it is."""
        if point.target is None:
            return point
        entry = self.calibration_entry(point)
        if entry is None:
            raise RuntimeError(f"{point.name} is calibrated but {self.output / CALIBRATION_FILE} does not hold "
                               "it: the calibration stage must run first")
        return with_calibrated_knob(point, entry)

    def _calibration_complete(self) -> bool:
        """calibration.json holds every calibrated point of this grid (a grid extended by a curve needs more; its
        saved probes make the existing curves' knobs come out the same)."""
        entries = calibrated_entries(self.output)
        return all(p.name in entries for p in self.config.grid if p.target is not None)

    def calibration_entry(self, point: GridPoint) -> dict[str, Any] | None:
        return calibrated_entries(self.output).get(point.name) if point.target is not None else None

    def describe_plan(self) -> str:
        lines = [f"output: {self.output}", f"preset: {self.config.preset}   dataset: {self.config['dataset']}",
                 f"grid: {len(self.config.grid)} points"]
        for stage in self.stages():
            where = f"[{stage.point.name}] " if stage.point else ""
            lines.append(f"  {'skip (done)' if stage.done else 'run        '}  {where}{stage.name} -> "
                         f"{stage.output.relative_to(self.output)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ running
    @property
    def state(self) -> Any:
        if "state" not in self._cache:
            import torch
            from accelerate import PartialState

            # cpu=True where there is no GPU: accelerate only sees `accelerate launch`'s processes on CPUs then
            # (without it every rank took itself for the main process, and both took the run folder's lock).
            self._cache["state"] = PartialState(cpu=not torch.cuda.is_available())
        return self._cache["state"]

    def clean_leftovers(self) -> None:
        """Remove temporary files of a killed run: only the names this program creates (`.name.XXXXXXXX.tmp`,
        `.student-XXXXXXXX`), never another dot-entry of the folder (a user's `.git` or `.env`). Call it only
        while holding the folder's lock (`run_folder.exclusive`), so no live run's files are taken."""
        from .run_folder import leftovers

        for folder in [self.output, self.output / "baseline", *self.points_dir.glob("*")]:
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

    # ------------------------------------------------------------------ models and data
    def world(self) -> dict[str, Any]:
        """Model locations and problem splits (the toy world is built, or taken from its cache)."""
        if "world" not in self._cache:
            from .data import load_splits

            models = dict(self.config["models"])
            toy_splits = None
            if self.config["dataset"] == "toy":
                from .toy_world import build_toy_world, default_cache_dir, get_preset, world_hash

                preset = self.config["toy_world"]
                built = default_cache_dir() / world_hash(get_preset(preset)) / "manifest.json"
                if self.state.num_processes > 1 and not built.is_file():
                    # every rank would train its own world (and the Trainer inside would wait for the others)
                    from .config import ConfigError

                    raise ConfigError(f"the {preset!r} toy world is not built yet: build it once in a single process "
                                      f"(`antidistill bench toy-world --preset {preset}`), then launch again")
                world = build_toy_world(preset=preset)
                built = {"teacher": world.teacher_dir, "proxy": world.proxy_dir, "student": world.student_dir}
                models.update({role: str(path) for role, path in built.items() if not models[role]})
                toy_splits = world.splits
            self._cache["world"] = {"models": models, "splits": load_splits(self.config, toy_splits)}
        return self._cache["world"]

    def _model(self, role: str) -> tuple[Any, Any]:
        if role not in self._cache:
            from harness_plugin.loading import load_model, load_tokenizer

            models = self.world()["models"]
            trust = bool(models["trust_remote_code"])
            dtype = models["proxy_dtype"] if role == "proxy" else models["dtype"]
            if role == "proxy":
                dtype = "float32" if dtype is None and self.state.device.type == "cpu" else dtype
            self._cache[role] = (load_model(models[role], dtype=dtype, device=self.state.device,
                                            trust_remote_code=trust),
                                 load_tokenizer(models[role], trust_remote_code=trust))
        return self._cache[role]

    def prompts(self, problems: list[dict[str, Any]], tokenizer: Any, system: str | None) -> list[str]:
        from harness_plugin.commands import format_prompt

        return [format_prompt(tokenizer, {"question": p["question"]}, system) for p in problems]

    def sharded_generate(self, model: Any, tokenizer: Any, prompts: list[str], **kwargs: Any) -> list[dict[str, Any]]:
        """`harness_plugin.generate` over this process's share of prompts, gathered in the original order."""
        from accelerate.utils import gather_object

        from harness_plugin import generate

        state = self.state
        indices = list(range(state.process_index, len(prompts), state.num_processes))
        traces = generate(model, tokenizer, [prompts[i] for i in indices], progress=self.progress and
                          state.is_main_process, **kwargs)
        rows = [(i, t.to_dict()) for i, t in zip(indices, traces)]
        if state.num_processes > 1:
            rows = gather_object(rows)
        return [row for _, row in sorted(rows, key=lambda item: item[0])]

    def _generation_kwargs(self, point: GridPoint | None, evaluation: bool = False) -> dict[str, Any]:
        cfg = self.config["evaluation" if evaluation else "generation"]
        gen = self.config["generation"]
        kwargs: dict[str, Any] = {"max_new_tokens": cfg["max_new_tokens"], "batch_size": cfg["batch_size"],
                                  "seed": gen["seed"] + self.state.process_index}
        if point is None:  # greedy
            return {**kwargs, "sampler": "temperature", "tau": 0.0}
        config = replace(self.sampling(point), seed=kwargs.pop("seed"))
        return {**kwargs, "config": config, "penalty": self._penalty(point)}

    def _penalty(self, point: GridPoint) -> Any:
        """One penalty (two perturbed proxy copies) per (ε, method), shared by the grid points that use it."""
        if point.sampler == "temperature" or point.lam == 0:
            return None
        key = f"penalty-{point.eps}-{self.penalty_method(point)}"
        if key not in self._cache:
            from harness_plugin import ProxyGradient
            from harness_plugin.generation import build_penalty

            teacher_tokenizer = self._model("teacher")[1]
            proxy, proxy_tokenizer = self._model("proxy")
            models = self.world()["models"]
            gradient = ProxyGradient.load(self.output / "gradient", proxy=proxy)
            self._cache[key] = build_penalty(self.sampling(point), teacher_tokenizer, proxy, gradient, proxy_tokenizer,
                                             self.config["models"]["proxy_dtype"],
                                             names=(models["teacher"], models["proxy"]))
        return self._cache[key]

    def _with_forced_answers(self, model: Any, tokenizer: Any, records: list[dict[str, Any]]) -> None:
        """Append the answer-forcing string after each trace and let the model finish the answer greedily."""
        cfg = self.config["evaluation"]
        prefix, tokens = cfg["answer_forcing"], cfg["answer_forcing_tokens"]
        if not prefix or not tokens:
            return
        prompts = [r["prompt"] + r["completion"] + prefix for r in records]
        forced = self.sharded_generate(model, tokenizer, prompts, sampler="temperature", tau=0.0,
                                       max_new_tokens=tokens, batch_size=cfg["batch_size"])
        for record, continuation in zip(records, forced):
            record["forced_completion"] = record["completion"] + prefix + continuation["completion"]

    def _evaluate(self, model: Any, tokenizer: Any, problems: list[dict[str, Any]], prompts: list[str],
                  point: GridPoint | None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        from harness_plugin.answers import warm_up

        from .scoring import mean_teacher_logprob, score_records

        warm_up(wait=False)  # the checker's workers load while the model generates
        traces = self.sharded_generate(model, tokenizer, prompts, **self._generation_kwargs(point, evaluation=True))
        records = [{"id": p["id"], "question": p["question"], "reference": p["reference"], **t}
                   for p, t in zip(problems, traces)]
        self._with_forced_answers(model, tokenizer, records)
        metrics = score_records(records, self.config.answer_dataset)
        metrics["mean_teacher_logprob"] = mean_teacher_logprob(records)
        metrics["mean_tokens"] = sum(r["num_tokens"] for r in records) / max(1, len(records))
        return metrics, records

    # ------------------------------------------------------------------ stages
    def holdout_traces(self) -> None:
        teacher, tokenizer = self._model("teacher")
        problems = self.world()["splits"]["holdout"]
        prompts = self.prompts(problems, tokenizer, self.config["prompt"]["system"])
        traces = self.sharded_generate(teacher, tokenizer, prompts, **self._generation_kwargs(None))
        if self.state.is_main_process:
            write_jsonl(self.output / "holdout_traces.jsonl",
                        [{"id": p["id"], "question": p["question"], "reference": p["reference"], **t}
                         for p, t in zip(problems, traces)])

    def gradient(self) -> None:
        from harness_plugin import ProxyGradient

        proxy, tokenizer = self._model("proxy")
        traces = read_jsonl(self.output / "holdout_traces.jsonl")
        gradient = ProxyGradient.compute(proxy, tokenizer, traces, batch_size=self.config["gradient"]["batch_size"],
                                         max_length=self.config["gradient"]["max_length"],
                                         progress=self.progress and self.state.is_main_process,
                                         loss_tokens=self.config["gradient"]["loss_tokens"])
        if self.state.is_main_process:
            gradient.save(self.output / "gradient")
            print(f"    ‖g‖ = {gradient.norm:.4g} over {gradient.metadata['num_tokens']} tokens")

    def baseline(self) -> None:
        self._student_eval(Path(self.world()["models"]["student"]), self.output / "baseline" / "student_eval.json")

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
        teacher, tokenizer = self._model("teacher")
        problems = self.world()["splits"]["holdout"][: settings["n_problems"]]
        prompts = self.prompts(problems, tokenizer, self.config["prompt"]["system"])
        probes_path = self.output / "calibration_probes.json"
        saved = json.loads(probes_path.read_text()) if probes_path.is_file() else {}

        def accuracy(point: GridPoint | None) -> tuple[float, int]:
            traces = self.sharded_generate(teacher, tokenizer, prompts, **self._generation_kwargs(point, True))
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
            method = self.penalty_method(placeholders[0])
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

        teacher, tokenizer = self._model("teacher")
        proxy, _ = self._model("proxy")
        traces = read_jsonl(self.output / "holdout_traces.jsonl")[:32]
        gradient = ProxyGradient.load(self.output / "gradient", proxy=proxy)
        result = teacher_forced_diagnostics(teacher, proxy, tokenizer, traces, gradient, [],
                                            batch_size=self.config["gradient"]["batch_size"], progress=False)
        return result["delta_top20_std_median"]

    def _write_main(self, path: Path, data: Any) -> None:
        if self.state.is_main_process:
            _write_json(path, data)

    def train_traces(self, point: GridPoint) -> None:
        teacher, tokenizer = self._model("teacher")
        problems = self.world()["splits"]["train"]
        prompts = self.prompts(problems, tokenizer, self.config["prompt"]["system"])
        traces = self.sharded_generate(teacher, tokenizer, prompts, **self._generation_kwargs(point))
        if self.state.is_main_process:
            write_jsonl(self.point_dir(point) / "train_traces.jsonl",
                        [{"id": p["id"], "question": p["question"], "reference": p["reference"], **t}
                         for p, t in zip(problems, traces)])

    def teacher_eval(self, point: GridPoint) -> None:
        teacher, tokenizer = self._model("teacher")
        problems = self.world()["splits"]["test"]
        prompts = self.prompts(problems, tokenizer, self.config["prompt"]["system"])
        metrics, records = self._evaluate(teacher, tokenizer, problems, prompts, point)
        if self.state.is_main_process:
            write_jsonl(self.point_dir(point) / "teacher_samples.jsonl", records)
            _write_json(self.point_dir(point) / "teacher_eval.json", metrics)

    def distil(self, point: GridPoint, seed: int) -> None:
        from .distill import distill_student

        traces = [{"question": t["question"], "completion": t["completion"], "prompt": t["prompt"]}
                  for t in read_jsonl(self.point_dir(point) / "train_traces.jsonl")]
        log: list[dict[str, Any]] = []
        output = self.student_dir(point, seed)
        live = self.point_run_id(point) if self.state.is_main_process and self.is_first_seed(seed) else None

        def on_log(step: int, logs: dict[str, Any]) -> None:
            log.append({"step": step, **logs})
            if live is not None and "loss" in logs:  # the loss curve grows in `mlflow ui` while the student trains
                self.tracker().client.log_metric(live, "distill_loss", float(logs["loss"]), step=int(step))

        config = self.config.distill_config(seed, processes=self.state.num_processes)
        if self.state.num_processes > 1 and self.state.device.type == "cpu":
            # TrainingArguments re-creates accelerate's shared state; without use_cpu it misses `accelerate
            # launch`'s CPU ranks, so each rank trained alone on all traces and both wrote the student folder.
            config = replace(config, extra_training_args={**config.extra_training_args, "use_cpu": True})
        distill_student(self.world()["models"]["student"], traces, output, config,
                        on_log=on_log, progress=self.progress and self.state.is_main_process)
        if self.state.is_main_process:
            write_jsonl(self._per_seed(point, seed, "distill_log", ".jsonl"), log)

    def student_eval(self, point: GridPoint, seed: int) -> None:
        self._student_eval(self.student_dir(point, seed), self.student_eval_path(point, seed))

    def _student_eval(self, student_dir: Path, output: Path) -> None:
        from harness_plugin.loading import load_model, load_tokenizer

        model = load_model(student_dir, dtype=self.config["models"]["dtype"], device=self.state.device,
                           trust_remote_code=bool(self.config["models"]["trust_remote_code"]))
        tokenizer = load_tokenizer(student_dir, trust_remote_code=bool(self.config["models"]["trust_remote_code"]))
        problems = self.world()["splits"]["test"]
        prompts = self.prompts(problems, tokenizer, None)  # the student gets the bare question in its own template
        metrics, records = self._evaluate(model, tokenizer, problems, prompts, None)
        if self.state.is_main_process:
            write_jsonl(_samples_path(output), records)
            _write_json(output, metrics)

    def point_run_id(self, point: GridPoint) -> str:
        """The grid point's MLflow run (created, RUNNING, at the point's first stage; found again on a resume)."""
        runs = self._cache.setdefault("point_runs", {})
        if point.name not in runs:
            tracker = self.tracker()
            runs[point.name] = tracker.child_run_id(tracker.parent_run_id(self.config.experiment), point.name)
        return str(runs[point.name])

    def sampling(self, point: GridPoint) -> Any:
        """The point's `SamplerConfig`: how its train traces are sampled (recorded with its MLflow run)."""
        from harness_plugin.sampling import SamplerConfig

        gen = self.config["generation"]
        return SamplerConfig(sampler=point.short_sampler, tau=point.tau, lam=point.lam, eps=point.eps,
                             top_p=gen["top_p"], top_k=gen["top_k"], penalty=self.penalty_method(point),
                             seed=gen["seed"])

    def penalty_method(self, point: GridPoint) -> str:
        """How the point's Δ is computed: its own method (an extra penalty's curve), else `grid.penalty`."""
        return point.penalty or str(self.config["grid"]["penalty"])

    def track(self, point: GridPoint) -> None:
        if not self.state.is_main_process:
            return
        from .scoring import score_records
        from .tracking import point_metrics, point_params, seed_metrics

        tracker = self.tracker()
        folder = self.point_dir(point)
        parent = tracker.parent_run_id(self.config.experiment)
        run_id = self.point_run_id(point)
        teacher = json.loads((folder / "teacher_eval.json").read_text())
        student = json.loads((folder / "student_eval.json").read_text())
        baseline = json.loads((self.output / "baseline" / "student_eval.json").read_text())
        gradient_meta = json.loads((self.output / "gradient" / "gradient.json").read_text())
        params = point_params(self.sampling(point), self.world()["models"], gradient_meta,
                              folder / "train_traces.jsonl", self.calibration_entry(point),
                              dataset=self.config["dataset"], preset=self.config.preset, curve=point.curve)
        train = read_jsonl(folder / "train_traces.jsonl")
        train_scores = score_records([{"completion": t["completion"], "reference": t["reference"]} for t in train],
                                     self.config.answer_dataset)
        metrics = point_metrics(teacher, student, baseline, train_scores, train)
        seeds = self.config.distill_seeds  # the endpoint seeds come later, with their own stage (track_seeds)
        if len(seeds) > 1:
            metrics.update(seed_metrics(seeds, self.student_accuracies(point, seeds)))
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

        seeds, accuracies = self.point_seeds(point), self.student_accuracies(point)
        self.tracker().log(self.point_run_id(point), {}, seed_metrics(seeds, accuracies))
        _write_json(self.point_dir(point) / "tracked_seeds.json", {"seeds": seeds, "student_accuracies": accuracies})

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
        models = self.world()["models"]
        baseline = json.loads((self.output / "baseline" / "student_eval.json").read_text())
        tracker.log(parent, {"preset": self.config.preset, "dataset": self.config["dataset"],
                             "teacher": models["teacher"], "proxy": models["proxy"],
                             "student": models["student"], "grid_points": len(self.config.grid)},
                    {"student_base_accuracy": baseline["accuracy"]})
        tracker.client.log_artifact(parent, str(self.output / "config.yaml"))
        tracker.log_config(parent, self.config.data)
        tracker.log_splits(parent, self.world()["splits"], str(self.config["dataset"]))
        if (self.output / "timings.json").exists():
            tracker.client.log_artifact(parent, str(self.output / "timings.json"))
        endpoints, comparisons = self.endpoints(), self.comparisons()
        tracker.log(parent, {}, endpoint_metrics(endpoints, comparisons))
        tracker.finish(parent)
        rows = []
        for point in map(self.resolve, self.config.grid):
            folder = self.point_dir(point)
            teacher = json.loads((folder / "teacher_eval.json").read_text())
            student = json.loads((folder / "student_eval.json").read_text())
            accuracies = self.student_accuracies(point)
            rows.append({"point": point.name, "sampler": point.sampler, "curve": point.curve, "penalty":
                         self.penalty_method(point) if point.sampler != "temperature" else None,
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

    def _seed_outcomes(self, point: GridPoint, who: str) -> list[dict[str, float]]:
        """Per test problem id, 1/0: the teacher's (one entry), or each of the point's students' (one per seed)."""
        key = f"outcomes-{point.name}-{who}"
        if key not in self._cache:
            if who == "teacher":
                paths = [self.point_dir(point) / "teacher_samples.jsonl"]
            else:
                paths = [_samples_path(self.student_eval_path(point, seed)) for seed in self.point_seeds(point)]
            self._cache[key] = [{str(r["id"]): float(r["correct"]) for r in read_jsonl(path)} for path in paths]
        return self._cache[key]

    def _outcomes(self, point: GridPoint, who: str) -> dict[str, float]:
        """Per test problem id: 1/0 for the teacher; for the student, the mean over its seeds."""
        per_seed = self._seed_outcomes(point, who)
        shared = set.intersection(*(set(d) for d in per_seed))
        return {i: sum(d[i] for d in per_seed) / len(per_seed) for i in shared}

    def endpoints(self) -> list[dict[str, Any]]:
        """The primary endpoint G per tilted sampler (`grid.endpoint`; see `intervals.endpoint_gap`)."""
        from .intervals import endpoint_gap

        endpoint, t_star = self.config.endpoint, self.t_star()
        if endpoint is None or t_star is None:
            return []  # no endpoint, or a relative one without the greedy point
        greedy = self.greedy_teacher_accuracy()
        relative = bool(self.config["grid"]["targets_relative"])
        points = list(map(self.resolve, self.config.grid))
        outcomes = {p.name: (self._seed_outcomes(p, "teacher")[0], self._seed_outcomes(p, "student")) for p in points}
        ids = sorted(set.intersection(*(set(t).intersection(*seeds) for t, seeds in outcomes.values())))

        def outcomes_on(curve: str) -> list[tuple[list[float], list[list[float]]]]:
            """Per point: the teacher's outcomes and each seed's student outcomes (the bootstrap draws seeds too)."""
            return [([outcomes[p.name][0][i] for i in ids], [[seed[i] for i in ids] for seed in outcomes[p.name][1]])
                    for p in points if p.curve == curve]

        reference = outcomes_on("temperature")
        result = []
        for curve, sampler in self.tilted_curves().items():
            other = outcomes_on(curve)
            if reference and other:
                gap = endpoint_gap(reference, other, t_star, seed=int(self.config["generation"]["seed"]))
                result.append({"sampler": sampler, "curve": curve, "endpoint": endpoint, "relative": relative,
                               "greedy_teacher_accuracy": greedy, **gap})
        return result

    def tilted_curves(self) -> dict[str, str]:
        """Every tilted curve of the grid (antidistillation, permutation, then the extra penalties') -> its sampler."""
        curves = {p.curve: p.sampler for p in self.config.grid if p.sampler != "temperature"}
        return dict(sorted(curves.items(), key=lambda item: (item[0] != item[1], item[1] != "antidistillation")))

    def comparisons(self) -> list[dict[str, Any]]:
        """At each calibration target: tilted sampler minus temperature, for students and teachers, with a paired
        bootstrap interval over the test problems (the same problems scored for both)."""
        from .intervals import paired_bootstrap_difference, paired_outcomes

        calibrated = [p for p in self.config.grid if p.target is not None]
        baselines = {p.target: p for p in calibrated if p.sampler == "temperature"}
        result = []
        for point in calibrated:
            reference = baselines.get(point.target)
            if point.sampler == "temperature" or reference is None:
                continue
            row: dict[str, Any] = {"sampler": point.sampler, "curve": point.curve, "target": point.target,
                                   "point": point.name,
                                   "reference_point": reference.name}
            for who in ("student", "teacher"):
                a, b = paired_outcomes(self._outcomes(point, who), self._outcomes(reference, who))
                row[who] = paired_bootstrap_difference(a, b, seed=int(self.config["generation"]["seed"]))
            result.append(row)
        return result


def _samples_path(evaluation: Path) -> Path:
    """The per-problem records beside an evaluation: `student_eval-seed1.json` -> `student_samples-seed1.jsonl`."""
    return evaluation.with_name(evaluation.stem.replace("_eval", "_samples") + ".jsonl")
