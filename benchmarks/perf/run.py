"""The perf grid: build each sampler once per model set, then time every (batch, length) cell round by round.

Rows of one cell are interleaved (round r runs every method once, in an order rotated by r) so that a change of
machine load during the run hits all methods alike; the median over rounds is reported. Each method's objects
(proxy copies, caches) are built once and their memory measured when built; a row's peak memory is the teacher's
weights + the method's own objects + the peak working memory of its generations (KV caches, activations, logits).

The measured floor: every cell also times the teacher alone (`plain`) and one proxy copy alone (`proxy`: the
prompt, then one cached token per step, no sampling loop), in seconds per generated token. A method's floor is
the teacher's time plus its proxy forwards' time (`FLOOR`), and `floor_ratio` = its time / its floor.

Residency: with `resident="all"` (the CPU default) every method's objects stay built and all methods of a cell are
interleaved; with `resident="one"` (the CUDA default) methods run grouped by the objects they need, each group
interleaved within itself, and a group's objects are freed before the next group is built, so the device holds
the teacher and one method's copies at a time (a 7B teacher and 3B proxy copies do not fit all at once).
The source proxy (fp32) stays on the CPU; the copies are built from it on the device tensor by tensor.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from harness_plugin.errors import AntidistillError
from harness_plugin.gradient import ProxyGradient
from harness_plugin.loading import resolve_dtype
from harness_plugin.penalty import AntidistillationPenalty
from harness_plugin.sampling import AntidistillationLogitsProcessor, PermutationLogitsProcessor

from . import METHODS
from .baselines import ProxyAlone, nocache_processor, perturbed_proxy, proxy_copy, reference_processor
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
COMPONENT = {"plain": None, "proxy": "proxy", "ads-fd": "fd", "ads-fd-no-transpose": "fd-no-transpose",
             "permutation": "fd", "ads-head": "head", "ads-jvp": "jvp", "reference": "copies",
             "nocache": "copies"}
# the measured floor of each method: (teacher-alone seconds, proxy-alone seconds) per token it must spend at least.
# fd, its ablation, permutation and both baselines run two proxy forwards per step; head one. jvp: one forward with
# its tangent is about two forwards, so it shares fd's floor (its ratio then shows the prefix it re-runs).
FLOOR = {"plain": (1, 0), "proxy": (0, 1), "ads-fd": (1, 2), "ads-fd-no-transpose": (1, 2), "permutation": (1, 2),
         "ads-head": (1, 1), "ads-jvp": (1, 2), "reference": (1, 2), "nocache": (1, 2)}
ALWAYS = ("plain", "proxy")  # the floor's two terms are timed in every cell
# methods whose cost per step grows with the prefix (for the time estimate)
QUADRATIC = ("nocache", "ads-jvp")
RESIDENT = ("all", "one")


@dataclass
class Settings:
    shape: str = "realistic"
    vocab: int = 32000
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    new_tokens: tuple[int, ...] = (64, 256, 1024)
    repeats: int = 5
    methods: tuple[str, ...] = METHODS
    prompt_length: int = 256
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
    resident: str = "all"

    def skip_reason(self, method: str, batch: int, new_tokens: int) -> str | None:
        if method == "nocache" and (new_tokens > self.max_nocache_tokens or batch > self.max_nocache_batch):
            return (f"nocache re-runs the prefix every step: skipped beyond {self.max_nocache_tokens} new tokens "
                    f"or batch {self.max_nocache_batch}")
        if method == "ads-jvp" and (new_tokens > self.max_jvp_tokens or batch > self.max_jvp_batch):
            return (f"jvp re-runs the prefix every step (forward-mode tangents have no KV cache): skipped beyond "
                    f"{self.max_jvp_tokens} new tokens or batch {self.max_jvp_batch}")
        return None


# quick keeps 64-token prompts so that the whole grid stays within minutes on a laptop CPU (at 256 the nocache and
# jvp rows re-run four times longer prefixes); the default grid uses 256-token prompts, as real chat prompts are
QUICK = {"shape": "small", "batch_sizes": (1, 8), "new_tokens": (32, 64), "repeats": 3, "prompt_length": 64,
         "max_nocache_tokens": 64, "max_nocache_batch": 1, "max_jvp_tokens": 32, "max_jvp_batch": 1}


def settings_from_args(args: argparse.Namespace, device: torch.device | None = None) -> Settings:
    settings = Settings(quick=bool(args.quick))
    if args.quick:
        settings = replace(settings, **QUICK)  # type: ignore[arg-type]
    resident = getattr(args, "resident", None) or ("one" if device is not None and device.type == "cuda" else "all")
    given = {"shape": args.shape, "batch_sizes": args.batch_sizes and tuple(args.batch_sizes),
             "new_tokens": args.new_tokens and tuple(args.new_tokens), "repeats": args.repeats,
             "methods": args.methods and tuple(dict.fromkeys([*ALWAYS, *args.methods])),
             "prompt_length": args.prompt_length,
             "max_nocache_tokens": args.max_nocache_tokens, "max_nocache_batch": args.max_nocache_batch,
             "max_jvp_tokens": args.max_jvp_tokens,
             "max_jvp_batch": args.max_jvp_batch}
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
    settings = replace(settings, vocab=args.vocab, lam=args.lam, tau=args.tau, eps=args.eps, top_p=args.top_p,
                       seed=args.seed, resident=resident)
    if resident not in RESIDENT:
        raise AntidistillError(f"--resident must be one of {', '.join(RESIDENT)}, got {resident!r}")
    problems = [name for name, values in (("--batch-sizes", settings.batch_sizes),
                                          ("--new-tokens", settings.new_tokens)) if min(values) < 1]
    if problems or settings.repeats < 1 or settings.prompt_length < 1:
        raise AntidistillError(f"{', '.join(problems) or '--repeats/--prompt-length'} must be >= 1")
    if settings.lam <= 0 or settings.tau <= 0 or settings.eps <= 0:
        raise AntidistillError("--lam, --tau and --eps must be > 0 (the sampler does no proxy work at λ = 0)")
    return settings


@dataclass
class ModelSet:
    """A teacher (on the device), its source proxy (fp32, on the CPU) and the proxy's gradient, with sizes."""

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
                     "flop_floor_ratio": self.flop_floor_ratio,
                     "source_proxy_device": str(next(self.proxy.parameters()).device), **self.info}


class Bench:
    """Builds each method's objects once (measuring their memory) and runs one generation on demand."""

    def __init__(self, models: ModelSet, settings: Settings, device: torch.device, probe: MemoryProbe) -> None:
        self.models, self.settings, self.device, self.probe = models, settings, device, probe
        self.components: dict[str, Any] = {}
        self.built_bytes: dict[str, int] = {}  # kept after a component is released

    def component(self, name: str) -> Any:
        """The built object (proxy copies, penalty) of a component; its memory is measured when built."""
        if name not in self.components:
            self.probe.start()
            self.components[name] = self._build(name)
            self.built_bytes[name] = self.probe.current()
        return self.components[name]

    def release(self, names: Sequence[str | None]) -> None:
        """Free components (between method groups; outside any timed region, the device cache too)."""
        for name in names:
            if name is not None:
                self.components.pop(name, None)
        self.probe.release()

    def _build(self, name: str) -> Any:
        m, s, device = self.models, self.settings, self.device
        if name in ("fd", "head", "jvp", "fd-no-transpose"):
            method = "fd" if name == "fd-no-transpose" else name
            return AntidistillationPenalty(m.proxy, m.gradient, eps=s.eps, method=method,  # type: ignore[arg-type]
                                           vocab_size=m.vocab, dtype=m.proxy_dtype, device=device,
                                           transposed_head=name != "fd-no-transpose")
        if name == "copies":
            return (perturbed_proxy(m.proxy, m.gradient, +s.eps, m.proxy_dtype, device),
                    perturbed_proxy(m.proxy, m.gradient, -s.eps, m.proxy_dtype, device))
        if name == "proxy":
            return ProxyAlone(proxy_copy(m.proxy, m.proxy_dtype, device))
        raise ValueError(name)

    def static_bytes(self, method: str) -> int:
        name = COMPONENT[method]
        if name is None:
            return 0
        if name not in self.built_bytes:
            self.component(name)
        return self.built_bytes[name]

    def processors(self, method: str, mask: torch.Tensor, seed: int) -> tuple[list[LogitsProcessor], float]:
        """The logits processors for one generation, started afresh, and the temperature to give HF."""
        m, s = self.models, self.settings
        name = COMPONENT[method]
        if name is None:
            return [], s.tau  # plain teacher sampling
        built = self.component(name)
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
        if method == "proxy":
            return self.component("proxy").run(ids, mask, new_tokens, seed)
        processors, temperature = self.processors(method, mask, seed)
        torch.manual_seed(seed)
        out = self.models.teacher.generate(
            input_ids=ids, attention_mask=mask, logits_processor=LogitsProcessorList(processors), do_sample=True,
            temperature=temperature, top_p=self.settings.top_p, top_k=0, repetition_penalty=1.0,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=self.models.pad_id)
        if out.shape[1] != ids.shape[1] + new_tokens:  # a row that stopped early would inflate tokens/s
            raise RuntimeError(f"{method} generated {out.shape[1] - ids.shape[1]} tokens instead of {new_tokens}")
        for processor in processors:  # the penalty's last deferred check (part of the method's cost)
            finish = getattr(processor, "finish", None)
            if finish is not None:
                finish()
        return out


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def method_groups(settings: Settings) -> list[tuple[str, ...]]:
    """The methods run together: all at once, or grouped by the objects they need (see the module docstring)."""
    if settings.resident == "all":
        return [settings.methods]
    groups: dict[str | None, list[str]] = {}
    for method in settings.methods:
        groups.setdefault(COMPONENT[method], []).append(method)
    return [tuple(group) for group in groups.values()]


def run_grid(bench: Bench, progress: bool = True,
             on_group_done: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Every (batch, new tokens) cell, every method, `repeats` interleaved rounds; one row per method and cell.

    `on_group_done` gets the rows known so far after each method group (to write partial results).
    """
    s, m = bench.settings, bench.models
    cells = [(b, n) for b in s.batch_sizes for n in s.new_tokens]
    groups = method_groups(s)
    total = sum(1 for b, n in cells for meth in s.methods if not s.skip_reason(meth, b, n)) * s.repeats
    walls: dict[tuple[str, int, int], list[float]] = {}
    cpus: dict[tuple[str, int, int], list[float]] = {}
    working: dict[tuple[str, int, int], int] = {}
    bar = tqdm(total=total, desc=f"perf {m.name}", unit="gen", disable=not progress)
    rows: list[dict[str, Any]] = []
    for group in groups:
        per_token: dict[str, float] = {}
        warmed: set[tuple[str, int]] = set()
        for index, (batch, new_tokens) in enumerate(cells):
            active = [meth for meth in group if not s.skip_reason(meth, batch, new_tokens)]
            for meth in active:
                bench.static_bytes(meth)  # build outside the timed region
                if (meth, batch) not in warmed:
                    bench.generate(meth, batch, 4, seed=s.seed)
                    warmed.add((meth, batch))
            for round_ in range(s.repeats):
                shift = round_ % max(1, len(active))
                for meth in active[shift:] + active[:shift]:
                    bar.set_postfix_str(f"{meth} b={batch} n={new_tokens}")
                    key = (meth, batch, new_tokens)
                    bench.probe.start()
                    call = functools.partial(bench.generate, meth, batch, new_tokens, s.seed + round_)
                    wall, cpu = timed(call, bench.device)
                    working[key] = max(working.get(key, 0), bench.probe.peak())
                    walls.setdefault(key, []).append(wall)
                    cpus.setdefault(key, []).append(cpu)
                    bar.update(1)
            for meth in active:
                seconds = _median(walls[(meth, batch, new_tokens)])
                per_token.setdefault(meth, seconds / (batch * new_tokens * _growth(meth, new_tokens, s)))
            if index == 0 and len(cells) > 1 and progress and active:
                remaining = sum(per_token.get(meth, 0.0) * b * n * _growth(meth, n, s) * s.repeats
                                for b, n in cells[1:] for meth in group if not s.skip_reason(meth, b, n))
                tqdm.write(f"estimated time for the other cells of {', '.join(group)}: ~{remaining / 60:.0f} min "
                           "(linear in batch x tokens from the first cell; quadratic for nocache/jvp)")
        bench.release([COMPONENT[meth] for meth in group])
        rows = _rows(bench, cells, walls, cpus, working)
        if on_group_done is not None:
            on_group_done(rows)
    bar.close()
    return rows


def _rows(bench: Bench, cells: list[tuple[int, int]], walls: dict[tuple[str, int, int], list[float]],
          cpus: dict[tuple[str, int, int], list[float]],
          working: dict[tuple[str, int, int], int]) -> list[dict[str, Any]]:
    s, m = bench.settings, bench.models
    rows: list[dict[str, Any]] = []
    for batch, new_tokens in cells:
        for meth in s.methods:
            key = (meth, batch, new_tokens)
            reason = s.skip_reason(meth, batch, new_tokens)
            row: dict[str, Any] = {"models": m.name, "method": meth, "batch": batch, "new_tokens": new_tokens,
                                   "prompt_tokens": s.prompt_length}
            if reason or key not in walls:
                rows.append({**row, "tokens_per_s": None, "peak_mem_mb": None,
                             "skipped": reason or "not run (yet)"})
                continue
            weights = m.teacher_bytes + bench.static_bytes(meth)
            seconds = _median(walls[key])
            rows.append({**row, "tokens_per_s": batch * new_tokens / seconds,
                         "peak_mem_mb": (weights + working[key]) / MB, "seconds": seconds,
                         "cpu_seconds": _median(cpus[key]), "seconds_all": [round(x, 4) for x in walls[key]],
                         "cpu_seconds_all": [round(x, 4) for x in cpus[key]],
                         "seconds_per_token": seconds / (batch * new_tokens),
                         "weights_mb": weights / MB, "working_mb": working[key] / MB, "skipped": None})
        _add_relative_fields(rows, m, batch, new_tokens)
    return rows


def _growth(method: str, new_tokens: int, settings: Settings) -> float:
    """Relative per-token cost: mean prefix length for methods that re-run it, else 1."""
    return settings.prompt_length + new_tokens / 2 if method in QUADRATIC else 1.0


def _add_relative_fields(rows: list[dict[str, Any]], models: ModelSet, batch: int, new_tokens: int) -> None:
    """Slowdown against plain, the measured floor and the memory budget (teacher + two proxy copies + all KV
    caches) per row."""
    cell = [r for r in rows if r["models"] == models.name and r["batch"] == batch and r["new_tokens"] == new_tokens]
    plain = next((r for r in cell if r["method"] == "plain" and r["tokens_per_s"]), None)
    proxy = next((r for r in cell if r["method"] == "proxy" and r["tokens_per_s"]), None)
    length = batch * (cell[0]["prompt_tokens"] + new_tokens)
    for row in cell:
        row["slowdown_vs_plain"] = (plain["tokens_per_s"] / row["tokens_per_s"]
                                    if plain and row["tokens_per_s"] else None)
        teacher_terms, proxy_terms = FLOOR[row["method"]]
        row["floor"] = " + ".join(term for term in (
            {0: "", 1: "t_plain"}[teacher_terms], {0: "", 1: "t_proxy", 2: "2·t_proxy"}[proxy_terms]) if term)
        floor = None
        if plain and proxy:
            floor = teacher_terms * plain["seconds_per_token"] + proxy_terms * proxy["seconds_per_token"]
            row["t_plain"], row["t_proxy"] = plain["seconds_per_token"], proxy["seconds_per_token"]
        row["floor_seconds_per_token"] = floor
        row["floor_ratio"] = row["seconds_per_token"] / floor if floor and row.get("seconds_per_token") else None
        if plain and row["method"] not in ALWAYS:
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
    _source_to_cpu(proxy)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ModelSet(f"{args.teacher} + {args.proxy}", teacher, proxy, gradient, vocab, int(pad or 0), proxy_dtype,
                    {"gradient": source})


def _source_to_cpu(proxy: PreTrainedModel) -> None:
    """The fp32 source proxy is only read to build the copies: it waits on the CPU, not in device memory."""
    device = next(proxy.parameters()).device
    proxy.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()


def random_model_set(settings: Settings, device: torch.device, teacher_dtype: torch.dtype,
                     proxy_dtype: torch.dtype) -> ModelSet:
    teacher, proxy = random_models(settings.shape, settings.vocab, device, teacher_dtype, seed=settings.seed)
    gradient = random_token_gradient(proxy, settings.vocab, seed=settings.seed)  # on the device: fast
    _source_to_cpu(proxy)
    return ModelSet(f"random-{settings.shape}", teacher, proxy, gradient, settings.vocab, 0, proxy_dtype,
                    {"shapes": shape_summary(settings.shape), "gradient": "random tokens (speed only)"})


def run_from_args(args: argparse.Namespace) -> int:
    from harness_plugin.loading import default_device

    try:
        device = torch.device(args.device) if args.device else default_device()
        settings = settings_from_args(args, device)
    except (AntidistillError, RuntimeError) as error:
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
    fidelity: list[dict[str, Any]] = []

    def results_now(current: list[dict[str, Any]], info: dict[str, Any] | None, complete: bool) -> dict[str, Any]:
        every = [*infos, info] if info is not None else list(infos)
        with_load = dict(machine)
        with contextlib.suppress(OSError, AttributeError):
            with_load["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results = {
            "results": [*rows, *current],
            "complete": complete,
            "floor": {method: FLOOR[method] for method in settings.methods},
            "floor_meaning": "seconds per generated token a method must spend at least: (teacher-alone, "
                             "proxy-alone) multiples of t_plain (plain's time) and t_proxy (one proxy copy: the "
                             "prompt, then one cached token per step, no sampling loop), measured in the same cell",
            "flop_floor_ratio": every[0]["flop_floor_ratio"] if every else None,
            "model_sets": every,
            "fidelity": fidelity,
            "machine": with_load,
            "versions": versions(),
            "settings": asdict(settings),
            "peak_mem_mb_meaning": f"teacher weights + the method's own objects (proxy copies; measured when "
                                   f"built) + the peak working memory of its generations, measured as {probe.kind}",
            "started_at": started.isoformat(timespec="seconds"),
            "wall_seconds": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1),
        }
        results["targets"] = evaluate_targets(results)
        return results

    def write_json(results: dict[str, Any]) -> None:
        if args.json is not None:
            from harness_plugin.io import atomic_write_text

            atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")

    for make in model_sets:
        models = make()
        print(f"{models.name}: teacher {models.info['teacher']['parameters'] / 1e6:.1f}M, proxy "
              f"{models.info['proxy']['parameters'] / 1e6:.1f}M parameters, vocab {models.vocab}; "
              f"resident: {settings.resident}", flush=True)
        if getattr(args, "fidelity_check", None) or (getattr(args, "fidelity_check", None) is None
                                                     and proxy_dtype != torch.float32):
            from .fidelity import fd_fidelity, fidelity_lines

            report = fd_fidelity(models.proxy, models.gradient, models.vocab, eps=settings.eps, dtype=proxy_dtype,
                                 device=device, seed=settings.seed)
            fidelity.append({"models": models.name, **report})
            for line in fidelity_lines(report):
                print(line, flush=True)
            probe.release()
        info = models.info
        # partial results after each method group: a run cut short by a time limit still leaves its figures
        rows.extend(run_grid(Bench(models, settings, device, probe), progress=not args.no_progress,
                             on_group_done=lambda current, info=info: write_json(  # type: ignore[misc]
                                 results_now(current, info, complete=False))))
        infos.append(info)
        del models
        probe.release()
    results = results_now([], None, complete=True)
    print(format_table(results))
    write_json(results)
    if args.json is not None:
        print(f"results -> {Path(args.json).resolve()}")
    if args.markdown is not None:
        from harness_plugin.io import atomic_write_text

        atomic_write_text(args.markdown, markdown_section(results))
        print(f"README section -> {Path(args.markdown).resolve()}")
    return 0
