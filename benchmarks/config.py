"""Benchmark configuration: presets (YAML files beside this module) + a user's YAML file + `--set key=value`.

`presets/base.yaml` lists every key with its default; anything not in it is a typo and fails before any work.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness_plugin.errors import AntidistillError
from harness_plugin.names import DTYPE_NAMES, LOSS_TOKENS, PENALTY_METHODS, SAMPLER_LONG_NAMES

DATASETS = ("toy", "gsm8k", "math", "math500")
SAMPLER_SECTIONS = ("temperature", "antidistillation", "permutation")
_SHORT = {long: short for short, long in SAMPLER_LONG_NAMES.items()}


class ConfigError(AntidistillError):
    """A bad benchmark setting, found before any work starts."""


def _read_yaml(path: Path | Any) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def preset_names() -> list[str]:
    folder = resources.files("benchmarks") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml") and p.name != "base.yaml")


def _preset(name: str) -> dict[str, Any]:
    path = resources.files("benchmarks") / "presets" / f"{name}.yaml"
    if name == "base" or not path.is_file():
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    return _read_yaml(path)


def _merge(base: dict[str, Any], override: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(f"{prefix}{k}" for k in base))
            raise ConfigError(f"unknown setting {dotted!r} in {where}; known settings here: {known}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted!r} in {where} must be a mapping, got {value!r}")
            merged[key] = _merge(base[key], value, where, f"{dotted}.")
        else:
            merged[key] = value
    return merged


def parse_set(assignment: str) -> dict[str, Any]:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}, the value parsed as YAML (numbers, lists, null...)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


@dataclass(frozen=True)
class GridPoint:
    """One sampler setting: its train traces, its student, its nested MLflow run."""

    sampler: str  # temperature | antidistillation | permutation (the paper's names)
    tau: float
    lam: float = 0.0
    eps: float = 0.01
    # A calibrated point: the teacher accuracy its knob (τ or λ) is searched for. Until the calibration stage
    # has run, that knob is NaN; `RunResults.resolve` gives the point with its calibrated value.
    target: float | None = None
    # A tilted point's Δ method when it is not `grid.penalty` (one of `grid.extra_penalties`): its own curve.
    penalty: str | None = None

    @property
    def name(self) -> str:
        suffix = f"-{self.penalty}" if self.penalty else ""
        if self.target is not None:  # named by its target, so its folder exists before its knob is known
            if self.sampler == "temperature":
                return f"temperature-target{self.target:g}"
            return f"{self.sampler}-tau{self.tau:g}-eps{self.eps:g}-target{self.target:g}{suffix}"
        if self.sampler == "temperature":
            return "clean-greedy" if self.tau == 0 else f"temperature-tau{self.tau:g}"
        return f"{self.sampler}-tau{self.tau:g}-lam{self.lam:g}-eps{self.eps:g}{suffix}"

    @property
    def curve(self) -> str:
        """The (teacher, student) curve the point lies on: its sampler, or `sampler-penalty` for an extra penalty.

        Calibration, the endpoint G and the per-target comparisons are done per curve."""
        return f"{self.sampler}-{self.penalty}" if self.penalty else self.sampler

    @property
    def short_sampler(self) -> str:
        return _SHORT[self.sampler]

    @property
    def is_clean(self) -> bool:
        return self.sampler == "temperature" and self.tau == 0


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _number(value: Any, name: str, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return float(value)


class BenchConfig:
    """The resolved settings as a nested dict (`config["grid"]["antidistillation"]["lam"]`) plus the grid."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.grid = self._grid()
        self._validate()
        _ = self.endpoint  # validated here, before any work

    @classmethod
    def load(cls, preset: str = "toy", config_file: str | Path | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> BenchConfig:
        from dataclasses import asdict

        from .distill import DistillConfig

        base = _read_yaml(resources.files("benchmarks") / "presets" / "base.yaml")
        base["distill"] = {**asdict(DistillConfig()), **base["distill"]}  # every DistillConfig field is a setting
        data = _merge(base, _preset(preset), f"preset {preset}")
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            data = _merge(data, _read_yaml(path), str(path))
        for assignment in overrides:
            data = _merge(data, parse_set(assignment), f"--set {assignment}")
        return cls(data)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def preset(self) -> str:
        return str(self.data["preset"])

    @property
    def experiment(self) -> str:
        return str(self.data["tracking"]["experiment"] or f"antidistill-{self.preset}")

    @property
    def registered_model(self) -> str:
        return str(self.data["tracking"]["registered_model"] or f"antidistill-{self.preset}-student")

    @property
    def answer_dataset(self) -> str:
        """The answer checker's family: GSM8K-style numbers or MATH-style boxed answers."""
        return "math" if self.data["dataset"] in ("math", "math500") else "gsm8k"

    def _grid(self) -> list[GridPoint]:
        grid = self.data["grid"]
        points = [GridPoint("temperature", _number(t, "grid.temperature.tau")) for t in _as_list(grid["temperature"]["tau"])]
        for sampler in ("antidistillation", "permutation"):
            section = grid[sampler]
            tau = _number(section["tau"], f"grid.{sampler}.tau", strict=True)
            eps = _number(section["eps"], f"grid.{sampler}.eps", strict=True)
            for lam in _as_list(section["lam"]):
                points.append(GridPoint(sampler, tau, _number(lam, f"grid.{sampler}.lam"), eps))
        points += self._calibrated_points()
        points += [replace(p, penalty=extra) for extra in self.extra_penalties
                   for p in points if p.sampler != "temperature"]
        names = [p.name for p in points]
        if len(set(names)) != len(names):
            raise ConfigError(f"the grid repeats a point: {sorted(n for n in names if names.count(n) > 1)}")
        return points

    def _calibrated_points(self) -> list[GridPoint]:
        """Placeholders (knob NaN) for every sampler in `grid.calibrate` at every target."""
        grid = self.data["grid"]
        samplers = _as_list(grid["calibrate"] or [])
        unknown = [s for s in samplers if s not in SAMPLER_SECTIONS]
        if unknown:
            raise ConfigError(f"grid.calibrate: unknown sampler(s) {unknown}: choose from {', '.join(SAMPLER_SECTIONS)}")
        if not samplers:
            return []
        targets = [_number(t, "grid.targets", strict=True) for t in _as_list(grid["targets"] or [])]
        if not targets or any(t > 1 for t in targets):
            raise ConfigError(f"grid.targets must be teacher accuracies in (0, 1] (fractions of the greedy "
                              f"teacher's when grid.targets_relative), got {grid['targets']!r}")
        calibration = grid["calibration"]
        for key in ("n_problems", "probes_per_target"):
            if not isinstance(calibration[key], int) or calibration[key] < 1:
                raise ConfigError(f"grid.calibration.{key} must be a positive integer, got {calibration[key]!r}")
        points = []
        for sampler in dict.fromkeys(samplers):
            section = grid[sampler]
            for target in targets:
                if sampler == "temperature":
                    points.append(GridPoint(sampler, math.nan, 0.0, 0.01, target=target))
                else:
                    points.append(GridPoint(sampler, _number(section["tau"], f"grid.{sampler}.tau", strict=True),
                                            math.nan, _number(section["eps"], f"grid.{sampler}.eps", strict=True),
                                            target=target))
        return points

    @property
    def extra_penalties(self) -> list[str]:
        """Δ methods besides `grid.penalty` whose tilted points form curves of their own (e.g. `[head]`)."""
        extra = _as_list(self.data["grid"]["extra_penalties"] or [])
        unknown = [m for m in extra if m not in PENALTY_METHODS]
        if unknown:
            raise ConfigError(f"grid.extra_penalties: unknown method(s) {unknown}: choose from "
                              f"{', '.join(PENALTY_METHODS)}")
        if len(set(extra)) != len(extra) or self.data["grid"]["penalty"] in extra:
            raise ConfigError(f"grid.extra_penalties {extra} must be distinct methods other than grid.penalty "
                              f"({self.data['grid']['penalty']!r}), whose points are in the grid already")
        return extra

    @property
    def distill_seeds(self) -> list[int]:
        """The students' seeds per grid point: `distill.seeds`, or the one `distill.seed`."""
        return list(self.data["distill"]["seeds"] or [self.data["distill"]["seed"]])

    @property
    def endpoint_seeds(self) -> list[int]:
        """Extra students' seeds at the points that bracket the endpoint T* on each sampler's curve."""
        return list(self.data["distill"]["endpoint_seeds"] or [])

    def distill_config(self, seed: int | None = None, processes: int = 1) -> Any:
        """`DistillConfig` of the `distill` section (its `seeds` list is the suite's, not the trainer's).

        `distill.batch_size` is the global batch: under `accelerate launch` with `processes` ranks each takes an
        equal share, so the optimizer sees the same batches and steps as in one process (a per-device batch
        would double the global batch and halve the steps on two processes, which is another recipe).
        """
        from .distill import DistillConfig

        settings = {k: v for k, v in self.data["distill"].items() if k not in ("seeds", "endpoint_seeds")}
        if seed is not None:
            settings["seed"] = seed
        batch = int(settings.get("batch_size", DistillConfig.batch_size))
        if processes > 1:
            if batch % processes:
                raise ConfigError(f"distill.batch_size={batch} (the global batch) does not split evenly over "
                                  f"{processes} processes: choose a multiple of {processes}")
            settings["batch_size"] = batch // processes
        return DistillConfig(**settings)

    @property
    def endpoint(self) -> float | None:
        value = self.data["grid"]["endpoint"]
        if value is None:
            return None
        value = _number(value, "grid.endpoint", strict=True)
        if value > 1:
            raise ConfigError(f"grid.endpoint is a teacher accuracy in (0, 1], got {value}")
        return value

    @property
    def calibrated(self) -> bool:
        return any(p.target is not None for p in self.grid)

    def _validate(self) -> None:
        data = self.data
        if data["dataset"] not in DATASETS:
            raise ConfigError(f"unknown dataset {data['dataset']!r}: choose one of {', '.join(DATASETS)}")
        models = data["models"]
        if data["dataset"] != "toy" and not all(models[k] for k in ("teacher", "proxy", "student")):
            raise ConfigError(f"dataset {data['dataset']} needs models.teacher, models.proxy and models.student "
                              "(only the toy dataset builds its own)")
        if not 0 < _number(data["data"]["train_fraction"], "data.train_fraction") < 1:
            raise ConfigError("data.train_fraction must be between 0 and 1")
        for section, key in (("generation", "max_new_tokens"), ("generation", "batch_size"),
                             ("evaluation", "max_new_tokens"), ("evaluation", "batch_size"),
                             ("gradient", "batch_size")):
            if not isinstance(data[section][key], int) or data[section][key] < 1:
                raise ConfigError(f"{section}.{key} must be a positive integer, got {data[section][key]!r}")
        for key in ("n_train", "n_holdout", "n_test"):
            value = data["data"][key]
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{key} must be a positive integer or null, got {value!r}")
        for key in ("experiment", "registered_model"):
            name = data["tracking"][key]
            if name is not None and (not isinstance(name, str) or not name.strip() or set(name) & set("'`\"")):
                raise ConfigError(f"tracking.{key} must be a non-empty name without quotes or backquotes (MLflow "
                                  f"looks it up in a quoted filter), got {name!r}")
        self._validate_more()
        top_p = _number(data["generation"]["top_p"], "generation.top_p", strict=True)
        if top_p > 1:
            raise ConfigError(f"generation.top_p must be in (0, 1], got {top_p}")

        seeds = data["distill"]["seeds"]
        if seeds is not None and (not _distinct_integers(seeds) or not seeds):
            raise ConfigError(f"distill.seeds must be null or a list of distinct integers, got {seeds!r}")
        extra = data["distill"]["endpoint_seeds"]
        if extra is None:
            extra = []
        if not _distinct_integers(extra):
            raise ConfigError(f"distill.endpoint_seeds must be a list of distinct integers, got {extra!r}")
        if extra and self.endpoint is None:
            raise ConfigError("distill.endpoint_seeds needs grid.endpoint: the extra students go to the points "
                              "the endpoint G is read between")
        if set(extra) & set(self.distill_seeds):
            raise ConfigError(f"distill.endpoint_seeds {extra} repeats a seed every point already has "
                              f"({self.distill_seeds}): choose other seeds")
        try:
            self.distill_config()
        except TypeError as error:
            raise ConfigError(f"bad distill settings: {error}") from None
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def _validate_more(self) -> None:
        """Settings that would otherwise fail only after work (a bad penalty after two grid points, for one)."""
        data = self.data
        if data["grid"]["penalty"] not in PENALTY_METHODS:
            raise ConfigError(f"grid.penalty must be one of {', '.join(PENALTY_METHODS)}, got {data['grid']['penalty']!r}")
        if data["gradient"]["loss_tokens"] not in LOSS_TOKENS:
            raise ConfigError(f"gradient.loss_tokens must be one of {', '.join(LOSS_TOKENS)}, got "
                              f"{data['gradient']['loss_tokens']!r}")
        for key in ("dtype", "proxy_dtype"):
            if data["models"][key] is not None and data["models"][key] not in DTYPE_NAMES:
                raise ConfigError(f"models.{key} must be null or one of {', '.join(DTYPE_NAMES)}, "
                                  f"got {data['models'][key]!r}")
        for section, key, minimum in (("generation", "top_k", 0), ("generation", "seed", 0),
                                      ("evaluation", "answer_forcing_tokens", 0), ("distill", "batch_size", 1),
                                      ("distill", "seed", 0)):
            value = data[section][key]
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{section}.{key} must be an integer >= {minimum}, got {value!r}")
        _number(data["distill"]["epochs"], "distill.epochs", strict=True)
        _number(data["distill"]["learning_rate"], "distill.learning_rate", strict=True)
        if data["dataset"] == "toy":
            from .toy_world.presets import PRESETS

            if data["toy_world"] not in PRESETS:
                raise ConfigError(f"toy_world must be one of {', '.join(sorted(PRESETS))}, got {data['toy_world']!r}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True)


def _distinct_integers(value: Any) -> bool:
    """A list of distinct integers (booleans are not seeds), as `distill.seeds` and `distill.endpoint_seeds` need."""
    return (isinstance(value, list) and len(set(map(str, value))) == len(value)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value))
