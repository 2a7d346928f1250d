"""The perf grid: build each sampler once per model set, then time every (batch, length) cell round by round.

Rows of one cell are interleaved (round r runs every method once, in an order rotated by r) so that a change of
machine load during the run hits all methods alike; the median over rounds is reported. Each method's objects
(proxy copies, caches) are built once and their memory measured when built; a row's peak memory is the teacher's
weights + the method's own objects + the peak working memory of its generations (KV caches, activations, logits).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from harness_plugin.errors import AntidistillError
from harness_plugin.gradient import ProxyGradient
from harness_plugin.penalty import AntidistillationPenalty, resolve_dtype
from harness_plugin.sampling import AntidistillationLogitsProcessor, PermutationLogitsProcessor

from . import METHODS
from .baselines import nocache_processor, perturbed_proxy, reference_processor
from .measure import MemoryProbe, machine_info, timed, versions
from .models import (
    describe_model,
    kv_bytes_per_token,
    random_models,
    random_token_gradient,
    shape_summary,
    weight_bytes,
)
from .report import evaluate_targets, format_table, markdown_section

MB = 2**20
# which built objects each method needs (shared where the method reuses another's)
COMPONENT = {"plain": None, "ads-fd": "fd", "permutation": "fd", "ads-head": "head", "ads-jvp": "jvp",
             "reference": "copies", "nocache": "copies"}
# methods whose cost per step grows with the prefix (for the time estimate)
QUADRATIC = ("nocache", "ads-jvp")


@dataclass
class Settings:
    shape: str = "realistic"
    vocab: int = 32000
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    new_tokens: tuple[int, ...] = (64, 256, 1024)
    repeats: int = 3
    methods: tuple[str, ...] = METHODS
    prompt_length: int = 16
    lam: float = 1.0
    tau: float = 1.0
    eps: float = 1e-2
    top_p: float = 0.95
    max_nocache_tokens: int = 256
    max_nocache_batch: int = 32
    max_jvp_tokens: int = 64
    max_jvp_batch: int = 8
    seed: int = 0
    quick: bool = False

    def skip_reason(self, method: str, batch: int, new_tokens: int) -> str | None:
        if method == "nocache" and (new_tokens > self.max_nocache_tokens or batch > self.max_nocache_batch):
            return (f"nocache re-runs the prefix every step: skipped beyond {self.max_nocache_tokens} new tokens "
                    f"or batch {self.max_nocache_batch}")
        if method == "ads-jvp" and (new_tokens > self.max_jvp_tokens or batch > self.max_jvp_batch):
            return (f"jvp re-runs the prefix every step (forward-mode tangents have no KV cache): skipped beyond "
                    f"{self.max_jvp_tokens} new tokens or batch {self.max_jvp_batch}")
        return None


QUICK = {"shape": "small", "batch_sizes": (1, 8), "new_tokens": (32, 64), "repeats": 2, "max_nocache_tokens": 64,
         "max_nocache_batch": 1, "max_jvp_tokens": 32, "max_jvp_batch": 1}


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings(quick=bool(args.quick))
    if args.quick:
        settings = replace(settings, **QUICK)  # type: ignore[arg-type]
    given = {"shape": args.shape, "batch_sizes": args.batch_sizes and tuple(args.batch_sizes),
             "new_tokens": args.new_tokens and tuple(args.new_tokens), "repeats": args.repeats,
             "methods": args.methods and tuple(dict.fromkeys(["plain", *args.methods])),
             "max_nocache_tokens": args.max_nocache_tokens, "max_nocache_batch": args.max_nocache_batch,
             "max_jvp_tokens": args.max_jvp_tokens,
             "max_jvp_batch": args.max_jvp_batch}
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
    settings = replace(settings, vocab=args.vocab, prompt_length=args.prompt_length, lam=args.lam, tau=args.tau,
                       eps=args.eps, top_p=args.top_p, seed=args.seed)
    problems = [name for name, values in (("--batch-sizes", settings.batch_sizes),
                                          ("--new-tokens", settings.new_tokens)) if min(values) < 1]
    if problems or settings.repeats < 1 or settings.prompt_length < 1:
        raise AntidistillError(f"{', '.join(problems) or '--repeats/--prompt-length'} must be >= 1")
    if settings.lam <= 0 or settings.tau <= 0 or settings.eps <= 0:
        raise AntidistillError("--lam, --tau and --eps must be > 0 (the sampler does no proxy work at λ = 0)")
    return settings


@dataclass
class ModelSet:
    """A teacher, its proxy and the proxy's gradient, with the sizes the report needs."""

    name: str
    teacher: PreTrainedModel
    proxy: PreTrainedModel
    gradient: ProxyGradient
    vocab: int
    pad_id: int
    proxy_dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        teacher_flops = describe_model(self.teacher)["flops_per_token"]
        proxy_flops = describe_model(self.proxy)["flops_per_token"]
        self.flop_floor_ratio = (teacher_flops + 2 * proxy_flops) / teacher_flops
        self.teacher_bytes = weight_bytes(self.teacher)
        self.proxy_copy_bytes = weight_bytes(self.proxy, self.proxy_dtype)
        teacher_dtype = next(self.teacher.parameters()).dtype
        self.teacher_kv_per_token = kv_bytes_per_token(self.teacher, teacher_dtype)
        self.proxy_kv_per_token = kv_bytes_per_token(self.proxy, self.proxy_dtype)
        self.info = {"name": self.name, "teacher": describe_model(self.teacher), "proxy": describe_model(self.proxy),
                     "proxy_copy_dtype": str(self.proxy_dtype).removeprefix("torch."),
                     "flop_floor_ratio": self.flop_floor_ratio, **self.info}


class Bench:
    """Builds each method's objects once (measuring their memory) and runs one generation on demand."""

    def __init__(self, models: ModelSet, settings: Settings, device: torch.device, probe: MemoryProbe) -> None:
        self.models, self.settings, self.device, self.probe = models, settings, device, probe
        self.components: dict[str, tuple[Any, int]] = {}

    def component(self, name: str) -> tuple[Any, int]:
        """(object, bytes it added when built)."""
        if name not in self.components:
            self.probe.start()
            built = self._build(name)
            self.components[name] = (built, self.probe.current())
        return self.components[name]

    def _build(self, name: str) -> Any:
        m, s = self.models, self.settings
        if name in ("fd", "head", "jvp"):
            return AntidistillationPenalty(m.proxy, m.gradient, eps=s.eps, method=name,  # type: ignore[arg-type]
                                           vocab_size=m.vocab, dtype=m.proxy_dtype)
        if name == "copies":
            return (perturbed_proxy(m.proxy, m.gradient, +s.eps, m.proxy_dtype),
                    perturbed_proxy(m.proxy, m.gradient, -s.eps, m.proxy_dtype))
        raise ValueError(name)

    def static_bytes(self, method: str) -> int:
        name = COMPONENT[method]
        return 0 if name is None else self.component(name)[1]

    def processors(self, method: str, mask: torch.Tensor, seed: int) -> tuple[list[LogitsProcessor], float]:
        """The logits processors for one generation, started afresh, and the temperature to give HF."""
        m, s = self.models, self.settings
        name = COMPONENT[method]
        if name is None:
            return [], s.tau  # plain teacher sampling
        built = self.component(name)[0]
        if method in ("reference", "nocache"):
            make = reference_processor if method == "reference" else nocache_processor
            baseline = make(built[0], built[1], s.lam, s.tau, s.eps, m.vocab)
            baseline.start()
            return [baseline], s.tau
        if method == "permutation":
            permutation = PermutationLogitsProcessor(built, s.lam, s.tau, m.vocab, seed=seed)
            permutation.start(mask, seed=seed)
            return [permutation], 1.0
        ads = AntidistillationLogitsProcessor(built, s.lam, s.tau, m.vocab)
        ads.start(mask)
        return [ads], 1.0  # our processor owns τ

    def prompts(self, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, self.models.vocab, (batch, self.settings.prompt_length), generator=generator)
        return ids.to(self.device), torch.ones_like(ids).to(self.device)

    @torch.no_grad()
    def generate(self, method: str, batch: int, new_tokens: int, seed: int) -> torch.Tensor:
        ids, mask = self.prompts(batch, seed)
        processors, temperature = self.processors(method, mask, seed)
        torch.manual_seed(seed)
        out = self.models.teacher.generate(
            input_ids=ids, attention_mask=mask, logits_processor=LogitsProcessorList(processors), do_sample=True,
            temperature=temperature, top_p=self.settings.top_p, top_k=0, repetition_penalty=1.0,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=self.models.pad_id)
        if out.shape[1] != ids.shape[1] + new_tokens:  # a row that stopped early would inflate tokens/s
            raise RuntimeError(f"{method} generated {out.shape[1] - ids.shape[1]} tokens instead of {new_tokens}")
        return out


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run_grid(bench: Bench, progress: bool = True) -> list[dict[str, Any]]:
    """Every (batch, new tokens) cell, every method, `repeats` interleaved rounds; one row per method and cell."""
    s, m = bench.settings, bench.models
    cells = [(b, n) for b in s.batch_sizes for n in s.new_tokens]
    plan = [(b, n, [meth for meth in s.methods if not s.skip_reason(meth, b, n)]) for b, n in cells]
    total = sum(len(active) for _, _, active in plan) * s.repeats
    warmed: set[tuple[str, int]] = set()
    rows: list[dict[str, Any]] = []
    per_token: dict[str, float] = {}
    bar = tqdm(total=total, desc=f"perf {m.name}", unit="gen", disable=not progress)
    for index, (batch, new_tokens, active) in enumerate(plan):
        walls: dict[str, list[float]] = {meth: [] for meth in active}
        cpus: dict[str, list[float]] = {meth: [] for meth in active}
        working: dict[str, int] = dict.fromkeys(active, 0)
        for meth in active:
            bench.static_bytes(meth)  # build outside the timed region
            if (meth, batch) not in warmed:
                bench.generate(meth, batch, 4, seed=s.seed)
                warmed.add((meth, batch))
        for round_ in range(s.repeats):
            shift = round_ % len(active)
            for meth in active[shift:] + active[:shift]:
                bar.set_postfix_str(f"{meth} b={batch} n={new_tokens}")
                bench.probe.start()
                call = functools.partial(bench.generate, meth, batch, new_tokens, s.seed + round_)
                wall, cpu = timed(call, bench.device)
                working[meth] = max(working[meth], bench.probe.peak())
                walls[meth].append(wall)
                cpus[meth].append(cpu)
                bar.update(1)
        for meth in s.methods:
            reason = s.skip_reason(meth, batch, new_tokens)
            row: dict[str, Any] = {"models": m.name, "method": meth, "batch": batch, "new_tokens": new_tokens,
                                   "prompt_tokens": s.prompt_length}
            if reason:
                rows.append({**row, "tokens_per_s": None, "peak_mem_mb": None, "skipped": reason})
                continue
            weights = m.teacher_bytes + bench.static_bytes(meth)
            seconds = _median(walls[meth])
            rows.append({**row, "tokens_per_s": batch * new_tokens / seconds,
                         "peak_mem_mb": (weights + working[meth]) / MB, "seconds": seconds,
                         "cpu_seconds": _median(cpus[meth]), "seconds_all": [round(x, 4) for x in walls[meth]],
                         "weights_mb": weights / MB, "working_mb": working[meth] / MB, "skipped": None})
            per_token.setdefault(meth, seconds / (batch * new_tokens * _growth(meth, new_tokens, s)))
        _add_relative_fields(rows, m, batch, new_tokens)
        if index == 0 and len(plan) > 1 and progress:
            remaining = sum(per_token.get(meth, 0.0) * b * n * _growth(meth, n, s) * s.repeats
                            for b, n, active in plan[1:] for meth in active)
            tqdm.write(f"estimated time for the remaining cells of {m.name}: ~{remaining / 60:.0f} min "
                       "(linear in batch x tokens from the first cell; quadratic for nocache/jvp)")
    bar.close()
    return rows


def _growth(method: str, new_tokens: int, settings: Settings) -> float:
    """Relative per-token cost: mean prefix length for methods that re-run it, else 1."""
    return settings.prompt_length + new_tokens / 2 if method in QUADRATIC else 1.0


def _add_relative_fields(rows: list[dict[str, Any]], models: ModelSet, batch: int, new_tokens: int) -> None:
    """Slowdown against plain and the memory budget (teacher + two proxy copies + all KV caches) per row."""
    cell = [r for r in rows if r["models"] == models.name and r["batch"] == batch and r["new_tokens"] == new_tokens]
    plain = next((r for r in cell if r["method"] == "plain" and r["tokens_per_s"]), None)
    length = batch * (cell[0]["prompt_tokens"] + new_tokens)
    for row in cell:
        row["slowdown_vs_plain"] = (plain["tokens_per_s"] / row["tokens_per_s"]
                                    if plain and row["tokens_per_s"] else None)
        if plain and row["method"] != "plain":
            budget = plain["peak_mem_mb"] * MB + 2 * models.proxy_copy_bytes + 2 * models.proxy_kv_per_token * length
            row["memory_budget_mb"] = budget / MB


def load_checkpoints(args: argparse.Namespace, device: torch.device, proxy_dtype: torch.dtype,
                     seed: int) -> ModelSet:
    """Teacher and proxy by name or folder; the gradient from --gradient or, for speed alone, random tokens."""
    from harness_plugin.loading import load_model, load_tokenizer
    from harness_plugin.vocab import check_model_covers_vocab, check_same_tokenizer, real_vocab_size

    tokenizer = load_tokenizer(args.teacher, args.revision, args.trust_remote_code)
    check_same_tokenizer(tokenizer, load_tokenizer(args.proxy, args.revision, args.trust_remote_code),
                         args.teacher, args.proxy)
    vocab = real_vocab_size(tokenizer)
    teacher = load_model(args.teacher, dtype=args.dtype, device=device, revision=args.revision,
                         trust_remote_code=args.trust_remote_code)
    proxy = load_model(args.proxy, dtype="float32", device=device, revision=args.revision,
                       trust_remote_code=args.trust_remote_code)
    check_model_covers_vocab(teacher, vocab, "teacher")
    check_model_covers_vocab(proxy, vocab, "proxy")
    if args.gradient is not None:
        gradient = ProxyGradient.load(args.gradient, proxy=proxy)
        source = str(args.gradient)
    else:
        gradient = random_token_gradient(proxy, vocab, seed=seed)
        source = "random tokens (speed only)"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ModelSet(f"{args.teacher} + {args.proxy}", teacher, proxy, gradient, vocab, int(pad or 0), proxy_dtype,
                    {"gradient": source})


def random_model_set(settings: Settings, device: torch.device, teacher_dtype: torch.dtype,
                     proxy_dtype: torch.dtype) -> ModelSet:
    teacher, proxy = random_models(settings.shape, settings.vocab, device, teacher_dtype, seed=settings.seed)
    gradient = random_token_gradient(proxy, settings.vocab, seed=settings.seed)
    return ModelSet(f"random-{settings.shape}", teacher, proxy, gradient, settings.vocab, 0, proxy_dtype,
                    {"shapes": shape_summary(settings.shape), "gradient": "random tokens (speed only)"})


def run_from_args(args: argparse.Namespace) -> int:
    from harness_plugin.loading import default_device

    try:
        settings = settings_from_args(args)
    except AntidistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (args.teacher is None) != (args.proxy is None):
        print("error: give --teacher and --proxy together", file=sys.stderr)
        return 2
    if args.no_random and args.teacher is None:
        print("error: --no-random needs --teacher and --proxy", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    teacher_dtype = resolve_dtype(args.dtype, device)
    proxy_dtype = resolve_dtype(args.proxy_dtype, device)
    probe = MemoryProbe(device)
    machine = machine_info(device)
    model_sets = []
    if not args.no_random:
        model_sets.append(lambda: random_model_set(settings, device, teacher_dtype, proxy_dtype))
    if args.teacher is not None:
        model_sets.append(lambda: load_checkpoints(args, device, proxy_dtype, settings.seed))
    rows: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    started = _dt.datetime.now(_dt.timezone.utc)
    for make in model_sets:
        models = make()
        print(f"{models.name}: teacher {models.info['teacher']['parameters'] / 1e6:.1f}M, proxy "
              f"{models.info['proxy']['parameters'] / 1e6:.1f}M parameters, vocab {models.vocab}; "
              f"FLOP floor ratio {models.flop_floor_ratio:.2f}", flush=True)
        rows.extend(run_grid(Bench(models, settings, device, probe), progress=not args.no_progress))
        infos.append(models.info)
        del models
    with_load = dict(machine)
    with contextlib.suppress(OSError, AttributeError):
        with_load["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {
        "results": rows,
        "flop_floor_ratio": infos[0]["flop_floor_ratio"],
        "model_sets": infos,
        "machine": with_load,
        "versions": versions(),
        "settings": asdict(settings),
        "peak_mem_mb_meaning": f"teacher weights + the method's own objects (proxy copies; measured when built) + "
                               f"the peak working memory of its generations, measured as {probe.kind}",
        "started_at": started.isoformat(timespec="seconds"),
        "wall_seconds": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
    }
    results["targets"] = evaluate_targets(results)
    print(format_table(results))
    if args.json is not None:
        from harness_plugin.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
        print(f"results -> {Path(args.json).resolve()}")
    if args.markdown is not None:
        from harness_plugin.io import atomic_write_text

        atomic_write_text(args.markdown, markdown_section(results))
        print(f"README section -> {Path(args.markdown).resolve()}")
    return 0
