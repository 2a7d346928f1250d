"""The suite's models and data for one run: the world's models loaded once, prompts, generation sharded over the
`accelerate` processes, answer forcing and scoring. The pipeline's stages call it; it knows nothing of stages or
of the run folder's layout (only where the proxy gradient lies, which the penalty needs).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import BenchConfig, GridPoint


class Workbench:
    """Loads each model once per process and generates, forces answers and scores with it."""

    def __init__(self, config: BenchConfig, gradient_dir: Path, progress: bool = True) -> None:
        self.config, self.gradient_dir, self.progress = config, gradient_dir, progress
        self._cache: dict[str, Any] = {}

    @property
    def state(self) -> Any:
        """accelerate's view of this process (main or not, its device, how many processes share the work)."""
        if "state" not in self._cache:
            import torch
            from accelerate import PartialState

            # cpu=True where there is no GPU: accelerate only sees `accelerate launch`'s processes on CPUs then
            # (without it every rank took itself for the main process, and both took the run folder's lock).
            self._cache["state"] = PartialState(cpu=not torch.cuda.is_available())
        return self._cache["state"]

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

    def model(self, role: str) -> tuple[Any, Any]:
        """(model, tokenizer) of the teacher, proxy or student, loaded once on this process's device."""
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
        from harness_plugin.prompts import format_prompt, system_prompt

        return [format_prompt(tokenizer, p["question"], system_prompt(system)) for p in problems]

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

    def generate(self, model: Any, tokenizer: Any, prompts: list[str], point: GridPoint | None,
                 evaluation: bool = False) -> list[dict[str, Any]]:
        """Traces of `prompts` under the point's sampler (greedy for None), with the generation or evaluation
        section's length and batch size."""
        return self.sharded_generate(model, tokenizer, prompts, **self._generation_kwargs(point, evaluation))

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

            teacher_tokenizer = self.model("teacher")[1]
            proxy, proxy_tokenizer = self.model("proxy")
            models = self.world()["models"]
            gradient = ProxyGradient.load(self.gradient_dir, proxy=proxy)
            self._cache[key] = build_penalty(self.sampling(point), teacher_tokenizer, proxy, gradient, proxy_tokenizer,
                                             self.config["models"]["proxy_dtype"],
                                             names=(models["teacher"], models["proxy"]))
        return self._cache[key]

    def _with_forced_answers(self, model: Any, tokenizer: Any, records: list[dict[str, Any]]) -> None:
        """Answer forcing (`harness_plugin.answer_forcing`): each record's `forced_completion` is its trace, the
        forcing string and the answer the model then writes greedily."""
        from harness_plugin.answer_forcing import force_answers, think_close
        from harness_plugin.prompts import answer_forcing_prompt

        cfg = self.config["evaluation"]
        forcing, tokens = answer_forcing_prompt(cfg["answer_forcing"]), cfg["answer_forcing_tokens"]
        if not forcing or not tokens:
            return

        def continue_greedily(texts: list[str], max_new_tokens: int) -> list[str]:
            return [t["completion"] for t in self.sharded_generate(model, tokenizer, texts, sampler="temperature",
                                                                   tau=0.0, max_new_tokens=max_new_tokens,
                                                                   batch_size=cfg["batch_size"])]

        traces = [r["completion"] for r in records]
        forced = force_answers([r["prompt"] for r in records], traces, [tokens] * len(records), continue_greedily,
                               forcing, think_close(tokenizer))
        for record, answer in zip(records, forced):
            record["forced_completion"] = record["completion"] + (answer or "")

    def evaluate(self, model: Any, tokenizer: Any, problems: list[dict[str, Any]], prompts: list[str],
                 point: GridPoint | None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Accuracy (raw and answer-forced) of the model's traces under the point's sampler, and the records."""
        from harness_plugin.answers import warm_up

        from .scoring import mean_teacher_logprob, score_records

        warm_up(wait=False)  # the checker's workers load while the model generates
        traces = self.generate(model, tokenizer, prompts, point, evaluation=True)
        records = [{"id": p["id"], "question": p["question"], "reference": p["reference"], **t}
                   for p, t in zip(problems, traces)]
        self._with_forced_answers(model, tokenizer, records)
        metrics = score_records(records, self.config.answer_dataset)
        metrics["mean_teacher_logprob"] = mean_teacher_logprob(records)
        metrics["mean_tokens"] = sum(r["num_tokens"] for r in records) / max(1, len(records))
        return metrics, records
