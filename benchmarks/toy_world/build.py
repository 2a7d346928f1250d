"""Build (or reuse) a toy world: data splits, two tokenizers, teacher, proxy, student, and reference numbers.

The whole build is keyed by a content hash of the preset and of the code that produces it, written in a
temporary directory and moved into `<cache>/<hash>` only when complete, so a crashed or concurrent build never
leaves a half-written world behind, and a finished one is reused instantly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.intervals import wilson_interval
from benchmarks.toy_world.presets import Preset, get_preset, gsm8k_splits
from benchmarks.toy_world.workers import TrainJob, build_workers, train_models
from harness_plugin.io import apply_umask, read_jsonl, write_jsonl
from harness_plugin.progress import progress_enabled

# Bump when the meaning of a built world changes in a way the hashed sources do not show.
BUILD_VERSION = "5"  # v5: recipe A of the second v5 probe (numbers <= 40, 1-3 steps); v4: splits dealt by hash per stratum
_HASHED_SOURCES = [
    "toy_world/generator.py",
    "toy_world/vocab.py",
    "toy_world/train.py",
    "toy_world/presets.py",
    "toy_world/build.py",
    "distill.py",
    "evaluate.py",
]
# What a world's numbers depend on besides the preset and the code: the same hash built with another torch gave
# another world (teacher 66% with torch 2.14.1 against 78% with 2.13.0), so the libraries' versions are in the key.
_KEYED_LIBRARIES = ("torch", "transformers", "tokenizers")
# Fixed settings the build's diagnostics look at: a low, middle and high tilt per sampler. The bench calibrates
# its own grid to target teacher accuracies (its calibration.json); measured on world v2, λ = 0.5 was a 2.8-nat
# tilt that took the teacher from 37% to 5%, so these λ are smaller than the v1 grid's 0.5-2.
DIAGNOSTIC_SAMPLERS = (
    {"sampler": "temperature", "tau": 0.8, "lam": 0.0, "eps": 0.01},
    {"sampler": "temperature", "tau": 1.6, "lam": 0.0, "eps": 0.01},
    {"sampler": "ads", "tau": 0.8, "lam": 0.05, "eps": 0.01},
    {"sampler": "ads", "tau": 0.8, "lam": 0.2, "eps": 0.01},
    {"sampler": "ads", "tau": 0.8, "lam": 0.5, "eps": 0.01},
    {"sampler": "permutation", "tau": 0.8, "lam": 0.2, "eps": 0.01},
    {"sampler": "permutation", "tau": 0.8, "lam": 0.5, "eps": 0.01},
)
FAMILIES = ("gsm8k", "math")
SPLITS = ("train", "holdout", "test")


def default_cache_dir() -> Path:
    """`$ANTIDISTILL_CACHE/toy_world`, else `~/.cache/antidistill/toy_world`."""
    root = os.environ.get("ANTIDISTILL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "antidistill") / "toy_world"


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numerics shape a built world (part of its cache key and report)."""
    from importlib.metadata import version

    return {name: version(name) for name in _KEYED_LIBRARIES}


def world_hash(preset: Preset) -> str:
    """Content hash of a preset, of the code that turns it into a world, and of the libraries' versions."""
    h = hashlib.sha256()
    h.update(json.dumps(asdict(preset), sort_keys=True, default=str).encode())
    h.update(BUILD_VERSION.encode())
    h.update(json.dumps(library_versions(), sort_keys=True).encode())
    package_root = Path(__file__).resolve().parents[1]
    for rel in _HASHED_SOURCES:
        h.update(rel.encode())
        h.update((package_root / rel).read_bytes())
    return h.hexdigest()[:16]


@dataclass
class ToyWorld:
    """A built toy world on disk. Model directories also hold their tokenizer (AutoTokenizer loads them)."""

    root: Path
    preset: str
    hash: str
    report: dict = field(default_factory=dict)

    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def proxy_dir(self) -> Path:
        return self.root / "proxy"

    @property
    def student_dir(self) -> Path:
        return self.root / "student"

    @property
    def distilled_student_dir(self) -> Path:
        """The student distilled on clean greedy teacher traces (the reference the benchmark compares to)."""
        return self.root / "student_distilled_clean"

    @property
    def teacher_tokenizer_dir(self) -> Path:
        """Shared by teacher and proxy."""
        return self.root / "tokenizer_teacher"

    @property
    def student_tokenizer_dir(self) -> Path:
        return self.root / "tokenizer_student"

    @property
    def holdout_traces_path(self) -> Path:
        """Greedy teacher traces of the holdout split: what the world's diagnostics compute g from."""
        return self.root / "traces" / "teacher_greedy_holdout.jsonl"

    @property
    def diagnostics_path(self) -> Path:
        return self.root / "diagnostics.json"

    @property
    def clean_traces_path(self) -> Path:
        return self.root / "traces" / "teacher_greedy_train.jsonl"

    def split_path(self, split: str, family: str = "gsm8k") -> Path:
        if split not in SPLITS or family not in FAMILIES:
            raise ValueError(f"unknown split {family}/{split}: splits are {SPLITS}, families {FAMILIES}")
        return self.root / "data" / family / f"{split}.jsonl"

    def split(self, split: str, family: str = "gsm8k") -> list[dict]:
        return read_jsonl(self.split_path(split, family))

    @property
    def train(self) -> list[dict]:
        return self.split("train")

    @property
    def holdout(self) -> list[dict]:
        return self.split("holdout")

    @property
    def test(self) -> list[dict]:
        return self.split("test")

    @property
    def splits(self) -> dict[str, list[dict]]:
        """The GSM8K-like train, holdout and test splits, keyed by name."""
        return {name: self.split(name) for name in SPLITS}

    @classmethod
    def load(cls, root: str | Path) -> ToyWorld:
        root = Path(root)
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{root} is not a built toy world (no manifest.json): run `antidistill bench toy-world`")
        data = json.loads(manifest.read_text())
        return cls(root=root, preset=data["preset"]["name"], hash=data["hash"], report=data.get("report", {}))


def _load_on_cpu(model_dir: Path) -> Any:
    """A world model in fp32 on the CPU, where it was trained: a world's numbers do not depend on a GPU nearby."""
    from harness_plugin.loading import load_model

    return load_model(model_dir, dtype="float32", device="cpu")


def _default_threads() -> int:
    """Torch threads for the build: all cores on an idle machine, one when others are busy.

    On a loaded 2-core machine, two intra-op threads wait on each other at every small matmul and a step
    takes several times longer than with one thread; `ANTIDISTILL_NUM_THREADS` overrides the guess.
    """
    if os.environ.get("ANTIDISTILL_NUM_THREADS"):
        return max(1, int(os.environ["ANTIDISTILL_NUM_THREADS"]))
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load > cores / 2 else min(cores, 4)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the model-training workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Clock:
    """Wall and CPU time per stage, for the budget line and the README numbers."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.wall0, self.cpu0 = time.perf_counter(), _cpu_seconds()

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        out = fn()
        self.stages[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu}
        return out

    def total(self) -> dict[str, float]:
        return {"wall_s": time.perf_counter() - self.wall0, "cpu_s": _cpu_seconds() - self.cpu0}


def _build(preset: Preset, out: Path, log: Callable[[str], None]) -> dict:
    import torch
    from tqdm.auto import tqdm

    from benchmarks.distill import distill_student
    from benchmarks.evaluate import evaluate_accuracy, forced_accuracy, generate_completions
    from benchmarks.toy_world.generator import generic_corpus, make_splits, short_answer, story
    from benchmarks.toy_world.train import encode_pairs, noise_vocabulary, perturbed_copies
    from benchmarks.toy_world.vocab import STYLES, train_tokenizer
    from harness_plugin.loading import load_tokenizer
    from harness_plugin.prompts import format_prompt

    clock = _Clock()
    stages = tqdm(total=10, desc=f"toy world ({preset.name})", dynamic_ncols=True, disable=not progress_enabled())
    report: dict[str, Any] = {"params": {}, "train": {}, "accuracy": {}}

    def step(name: str) -> None:
        stages.set_postfix_str(name)

    # 1. data
    step("data")
    math_sizes = {"test": preset.n_math_test, "holdout": preset.n_math_holdout, "train": preset.n_math_train}
    gsm = clock.run("data", lambda: gsm8k_splits(preset))
    maths = make_splits(preset.seed, math_sizes, "math", preset.difficulty)
    for family, splits in (("gsm8k", gsm), ("math", maths)):
        for split, records in splits.items():
            write_jsonl(out / "data" / family / f"{split}.jsonl", records)
    stages.update()

    # 2. tokenizers: teacher family on worked solutions (chat-formatted), student family on its generic corpus
    step("tokenizers")
    train_q = [p["question"] for p in gsm["train"]]
    stories = [story(p["question"], p["canonical"]) for p in gsm["train"]] if preset.student_stories else None
    student_docs = generic_corpus(
        train_q, preset.n_student_docs, preset.seed, preset.difficulty, preset.facts_per_doc, stories
    )
    # The undistilled student's (and proxy's) only question -> answer pairs: short answers, no working.
    qa_problems = random.Random(f"qa-{preset.seed}").sample(gsm["train"], min(preset.n_student_qa, len(gsm["train"])))
    teacher_style, student_style = STYLES["teacher"], STYLES["student"]

    def chat_texts(style_name: str, records: list[dict]) -> list[str]:
        style = STYLES[style_name]  # the chat template rendered without a tokenizer: none exists yet
        return [style.prompt(r["question"]) + r["answer"] + style.eos for r in records]

    # GSM8K-like text only: the models never train on the MATH-like family, and its LaTeX would take merges
    # from the words the teacher has to copy (a world built with it had a 56% teacher, one without 84%).
    tok_sample = gsm["train"][:4000]
    clock.run(
        "tokenizers",
        lambda: (
            train_tokenizer(
                chat_texts("teacher", tok_sample) + student_docs[:1000],
                teacher_style,
                preset.teacher_vocab,
                out / "tokenizer_teacher",
            ),
            train_tokenizer(
                student_docs + chat_texts("student", gsm["train"][:200]),
                student_style,
                preset.student_vocab,
                out / "tokenizer_student",
            ),
        ),
    )
    t_tok = load_tokenizer(out / "tokenizer_teacher")
    s_tok = load_tokenizer(out / "tokenizer_student")
    stages.update()

    max_len = preset.teacher.max_positions
    sft_pairs = [(format_prompt(t_tok, p["question"]), p["answer"] + t_tok.eos_token) for p in gsm["train"]]
    sft = encode_pairs(t_tok, sft_pairs, max_len)
    n_facts = int(len(sft) * preset.teacher_fact_fraction)
    fact_docs = generic_corpus([], n_facts, preset.seed + 1, preset.difficulty, preset.facts_per_doc)
    facts = encode_pairs(t_tok, [("", d + t_tok.eos_token) for d in fact_docs], max_len) if fact_docs else []
    replaceable, protected = noise_vocabulary(t_tok)
    noisy = perturbed_copies(
        sft,
        replaceable,
        protected,
        preset.teacher_noisy_fraction,
        preset.noise_rate,
        preset.seed,
    )

    def pretraining(tokenizer: Any) -> list:
        """The undistilled student's data in `tokenizer`: generic documents plus short-answer chats."""
        docs = encode_pairs(tokenizer, [("", d + tokenizer.eos_token) for d in student_docs], max_len)
        qa = [(format_prompt(tokenizer, p["question"]), short_answer(p["final"]) + tokenizer.eos_token)
              for p in qa_problems]
        return docs + encode_pairs(tokenizer, qa, max_len)

    # 3-5. teacher (worked solutions, their noisy copies, arithmetic practice), student (another architecture and
    # tokenizer, generic corpus, no worked solutions) and proxy (the student's recipe in the teacher's tokenizer)
    # are independent: they train side by side in worker processes, one per core.
    step("teacher, proxy, student")
    jobs = [  # longest first, so the teacher never waits for a free worker
        TrainJob("teacher", preset.teacher, preset.teacher_train, out / "tokenizer_teacher", sft + noisy + facts, 1),
        TrainJob("student", preset.student, preset.student_train, out / "tokenizer_student",
                 pretraining(s_tok), 3),
        TrainJob("proxy", preset.proxy, preset.proxy_train, out / "tokenizer_teacher", pretraining(t_tok), 2),
    ]
    report["data"] = {"strata": _strata(gsm), "teacher_examples": len(sft), "teacher_noisy_copies": len(noisy), "teacher_facts": len(facts),
                      "student_docs": len(student_docs), "student_qa": len(qa_problems)}
    for role, result in clock.run("models", lambda: train_models(jobs, out)).items():
        report["params"][role] = result["params"]
        report["train"][role] = result["train"]
    stages.update(3)
    models = {role: _load_on_cpu(out / role) for role in ("teacher", "proxy", "student")}

    # 6. accuracies of the three models on the test split (greedy; the students also answer-forced)
    step("evaluate")
    eval_dir = out / "eval"
    kw: dict[str, Any] = {"batch_size": preset.eval_batch_size, "max_new_tokens": preset.max_new_tokens}

    def evaluate_all() -> None:
        for role, tok in (("teacher", t_tok), ("proxy", t_tok), ("student", s_tok)):
            acc, recs = evaluate_accuracy(models[role], tok, gsm["test"], **kw)
            report["accuracy"][role] = acc
            if role != "teacher":
                report["accuracy"][f"{role}_forced"] = forced_accuracy(
                    models[role], tok, recs, batch_size=preset.eval_batch_size
                )
            write_jsonl(eval_dir / f"{role}.jsonl", recs)

    clock.run("evaluate", evaluate_all)
    stages.update()

    # 7. greedy holdout traces: what g is computed from (the diagnostics, `world_diagnostics`, start here)
    step("holdout traces")

    def holdout_traces() -> None:
        holdout = gsm["holdout"]
        prompts = [format_prompt(t_tok, p["question"]) for p in holdout]
        completions = generate_completions(
            models["teacher"], t_tok, prompts, preset.eval_batch_size, preset.max_new_tokens
        )
        traces = [{"prompt": pr, "completion": c, "reference": p["final"]}
                  for p, pr, c in zip(holdout, prompts, completions)]
        write_jsonl(out / "traces" / "teacher_greedy_holdout.jsonl", traces)

    clock.run("holdout_traces", holdout_traces)
    stages.update()

    # 8. clean greedy teacher traces on train problems (the prompt is the exact text fed to the teacher)
    step("traces")
    problems = gsm["train"][: preset.n_distill]
    prompts = [format_prompt(t_tok, p["question"]) for p in problems]
    completions = clock.run(
        "traces",
        lambda: generate_completions(
            models["teacher"], t_tok, prompts, preset.eval_batch_size, preset.max_new_tokens
        ),
    )
    traces = [
        {"question": p["question"], "prompt": pr, "completion": c, "final": p["final"]}
        for p, pr, c in zip(problems, prompts, completions)
    ]
    write_jsonl(out / "traces" / "teacher_greedy_train.jsonl", traces)
    stages.update()

    # 9. the reference distillation: student on clean traces
    step("distill")
    clock.run(
        "distill",
        lambda: distill_student(
            out / "student", traces, out / "student_distilled_clean", preset.distill, overwrite=True
        ),
    )
    stages.update()

    step("evaluate distilled")

    def evaluate_distilled() -> None:
        acc, recs = evaluate_accuracy(
            out / "student_distilled_clean", None, gsm["test"], **kw
        )
        report["accuracy"]["student_distilled_clean"] = acc
        write_jsonl(eval_dir / "student_distilled_clean.jsonl", recs)

    clock.run("evaluate_distilled", evaluate_distilled)
    stages.update()
    stages.close()
    report["timing"] = {"stages": clock.stages, "total": clock.total(), "torch_threads": torch.get_num_threads(),
                        "build_workers": build_workers(len(jobs)), "cpu_count": os.cpu_count()}
    report["libraries"] = library_versions()
    report["n_test"] = len(gsm["test"])
    report["clean_trace_accuracy"] = sum(
        _trace_correct(t["completion"], t["final"]) for t in traces
    ) / max(1, len(traces))
    return report


def _strata(splits: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    """Problems per stratum (template and step count) in each split: the report shows that train covers test."""
    from collections import Counter

    return {name: dict(sorted(Counter(f"{r['template']}/{r['params']['n_steps']}" for r in records).items()))
            for name, records in splits.items()}


def _trace_correct(completion: str, final: str) -> bool:
    from benchmarks.evaluate import score_answer

    return score_answer(completion, final, "gsm8k")


def build_toy_world(
    preset: str | Preset = "toy",
    cache_dir: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> ToyWorld:
    """Return the toy world for `preset`, building it first unless a complete one is cached.

    The world lives in `<cache_dir>/<hash>`; `cache_dir` defaults to `default_cache_dir()`.
    `force=True` rebuilds and replaces a cached world.
    """
    import torch

    preset = get_preset(preset) if isinstance(preset, str) else preset
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    digest = world_hash(preset)
    target = cache / digest
    if (target / "manifest.json").is_file() and not force:
        world = ToyWorld.load(target)
        log(f"toy world ({preset.name}) reused from cache: {target}")
        return world

    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=cache))
    apply_umask(work)  # mkdtemp makes it 0700, and it becomes the world's folder
    threads_before = torch.get_num_threads()
    threads = _default_threads()
    torch.set_num_threads(threads)
    log(
        f"building toy world ({preset.name}) into {target}\n"
        f"budget: <= {preset.budget_s / 60:.0f} min on an idle 2-core CPU; torch threads: {threads}"
    )
    try:
        report = _build(preset, work, log)
        manifest = {"hash": digest, "build_version": BUILD_VERSION, "preset": asdict(preset), "report": report}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        if force and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(work, target)
        except OSError:
            # Another process finished the same world first: keep theirs, it is identical by construction.
            if not (target / "manifest.json").is_file():
                raise
            log(f"another build of {digest} finished first; using it")
    finally:
        torch.set_num_threads(threads_before)
        shutil.rmtree(work, ignore_errors=True)
    world = ToyWorld.load(target)
    total = world.report["timing"]["total"]
    # The budget is wall time on an idle 2-core machine; CPU time counts every torch thread, so it can exceed wall.
    within = "within" if total["wall_s"] <= preset.budget_s else "OVER"
    log(
        f"built in {total['wall_s']:.0f} s wall, {total['cpu_s']:.0f} s CPU "
        f"({within} the {preset.budget_s} s wall budget); world at {target}"
    )
    return world


def world_diagnostics(world: ToyWorld, force: bool = False, progress: bool = True) -> dict:
    """The world's diagnostics (benchmarks.diagnostics) on its greedy holdout traces, computed once.

    Kept beside the manifest in `diagnostics.json` rather than inside the build, so that improving a
    diagnostic never invalidates (or retrains) a built world.
    """
    if world.diagnostics_path.is_file() and not force:
        return json.loads(world.diagnostics_path.read_text())
    from benchmarks.diagnostics import diagnose
    from harness_plugin.io import atomic_write_text
    from harness_plugin.loading import load_tokenizer

    preset = get_preset(world.preset)
    tokenizer = load_tokenizer(world.teacher_tokenizer_dir)
    teacher, proxy = _load_on_cpu(world.teacher_dir), _load_on_cpu(world.proxy_dir)
    traces = read_jsonl(world.holdout_traces_path)
    result = diagnose(
        teacher, proxy, tokenizer, traces, None, [dict(s) for s in DIAGNOSTIC_SAMPLERS],
        n_forced=preset.n_diagnostic_forced, n_sampled=preset.n_diagnostic_sampled,
        batch_size=preset.eval_batch_size, max_new_tokens=preset.max_new_tokens, seed=preset.seed,
        progress=progress,
    )
    atomic_write_text(world.diagnostics_path, json.dumps(result, indent=2) + "\n")
    return result


def accuracy_table(world: ToyWorld) -> str:
    """The reference accuracies on the test split, each with n and a 95% interval, and the build targets."""
    acc = world.report.get("accuracy", {})
    n = int(world.report.get("n_test") or get_preset(world.preset).n_test)
    rows = [
        ("teacher", "teacher"),
        ("proxy", "proxy"),
        ("proxy, answer-forced", "proxy_forced"),
        ("student (undistilled)", "student"),
        ("student (undistilled), answer-forced", "student_forced"),
        ("student distilled on clean greedy teacher traces", "student_distilled_clean"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'model'.ljust(width)}  accuracy (test, greedy, n={n}) [95% interval]"]
    for label, key in rows:
        value = acc.get(key)
        if value is None:
            continue
        low, high = wilson_interval(value * n, n)
        lines.append(f"{label.ljust(width)}  {100 * value:5.1f}%  [{100 * low:.1f}, {100 * high:.1f}]")
    teacher, base, clean = acc.get("teacher"), acc.get("student"), acc.get("student_distilled_clean")
    if teacher is not None and base is not None and clean is not None:
        lines.append(f"target teacher >= 70%: {'pass' if teacher >= 0.70 else 'FAIL'}; "
                     f"target distilled >= undistilled + 30 points ({100 * (clean - base):+.1f}): "
                     f"{'pass' if clean - base >= 0.30 else 'FAIL'}")
    return "\n".join(lines)
