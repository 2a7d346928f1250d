"""Build presets of the toy world: how much data, how big the models, how long they train.

`toy` is the offline default of the benchmark suite (about 10 minutes on a 2-core laptop CPU; accuracy targets:
teacher >= 70%, student gains >= 30 points from clean teacher traces). `smoke` builds the same pipeline in well
under a minute for CI and end-to-end tests; its models are loadable but not accurate.

World v2 has the paper's preconditions for poisoning (issue 12): solutions with harmless choices (phrasings,
connectors, side remarks, step order), a teacher that also learns to continue after noise in its own context,
and a proxy trained like the undistilled student (the student's corpus, never a worked solution).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from benchmarks.distill import DistillConfig
from benchmarks.toy_world.generator import Difficulty
from benchmarks.toy_world.train import ModelSpec, TrainSpec


@dataclass(frozen=True)
class Preset:
    """Everything that determines a built toy world (its cache key is a hash of this plus the code)."""

    name: str
    budget_s: int  # printed target for the whole build on a 2-core CPU
    seed: int = 0
    difficulty: Difficulty = field(default_factory=Difficulty)
    # GSM8K-like family: splits dealt test first, then holdout, then train (disjoint by problem).
    n_test: int = 200
    n_holdout: int = 200
    n_train: int = 20_000
    # Let the train split hold other wordings (names, items) of its problems: many distinct questions are what
    # make the tiny teacher read the question instead of memorising it (see generator.make_splits).
    train_rewordings: bool = False
    # The share of every stratum of problems (template and step count) dealt to test, holdout and train, in that
    # order; None deals in proportion to the sizes. Shares rather than turns: world v3 dealt test first, and its
    # 1,000 test problems took every problem of the small strata, which train then lacked (generator.make_splits).
    split_shares: tuple[float, float, float] | None = None
    # Solutions in sampled styles (generator._Steps.solution); False gives the v1 world's one fixed phrasing.
    solution_styles: bool = True
    # The rich style's extra choices (generator._Extras: line tails, remark openings, closing sentence), drawn from
    # a stream of their own, so the problems and splits are those of the same preset without them.
    rich_solutions: bool = False
    # MATH-like family (\boxed answers): data for the sympy checker, not used to train the models.
    n_math_test: int = 100
    n_math_holdout: int = 100
    n_math_train: int = 500
    teacher_vocab: int = 512
    student_vocab: int = 448
    teacher: ModelSpec = ModelSpec("llama", hidden=128, layers=4, heads=4)
    # The proxy shares the teacher's tokenizer but is built and trained like the undistilled student: the
    # student's family and its corpus (rendered in the teacher's chat format), never a worked solution.
    proxy: ModelSpec = ModelSpec("gpt_neox", hidden=128, layers=4, heads=4)
    # The student is another family (GPT-NeoX: rotary, parallel residual) with another tokenizer, as in the paper.
    # Measured: GPT-2 (learned positions) pretrained the same way reached 6% after distillation, GPT-NeoX 22-33%.
    student: ModelSpec = ModelSpec("gpt_neox", hidden=128, layers=4, heads=4)
    teacher_train: TrainSpec = TrainSpec(steps=300)
    # Arithmetic-practice documents (the student's fact chains) mixed into the teacher's and proxy's data,
    # as a fraction of the number of worked solutions: dense arithmetic signal, cheaper than more solutions.
    teacher_fact_fraction: float = 0.0
    # Copies of this fraction of the teacher's solutions with a share (drawn in `noise_rate`) of their non-digit
    # completion tokens replaced by random tokens, the loss masked there: the teacher recovers from odd context.
    teacher_noisy_fraction: float = 0.5
    noise_rate: tuple[float, float] = (0.05, 0.10)
    proxy_train: TrainSpec = TrainSpec(steps=120)
    student_train: TrainSpec = TrainSpec(steps=200)
    n_student_docs: int = 8_000  # generic corpus: problem statements and arithmetic facts, no solutions
    facts_per_doc: int = 8
    student_stories: bool = True  # the student also reads problems told as stories (generator.story)
    # Question -> short answer pairs ("The answer is 42.") in the student's chat format, no working: the
    # undistilled student has some skill (the paper's has 31%), so "falls below undistilled" is reachable.
    n_student_qa: int = 600
    n_distill: int = 1_000  # clean greedy teacher traces for the reference distillation
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval_batch_size: int = 100
    max_new_tokens: int = 96
    # The build's diagnostics (benchmarks.diagnostics): greedy holdout traces, g, and these many traces
    # teacher-forced / sampled per sampler.
    n_diagnostic_forced: int = 64
    n_diagnostic_sampled: int = 100


PRESETS: dict[str, Preset] = {
    "toy": Preset(
        name="toy",
        budget_s=600,
        # One or two arithmetic lines, numbers <= 99, factors <= 9. Measured on this 2-core VM (teacher alone,
        # one thread): with 1,400 distinct problems the teacher memorises them (train loss ~0, test 50%); with
        # 12,000 distinct questions it learns to read them (v1's plain solutions: 78-84% after 3,500-4,000 steps
        # of 8). Batches of 8 beat batches of 16 or 32 for the same time, and a 512-token vocabulary beat 1,024.
        # World v3's styled solutions with noisy copies: 54.2% (n = 500) after 4,000 steps, 597 s (probe); on v4's
        # splits (n = 1,000, training seeds 1 / 2): 40.1% / 20.4% with v3's varied joins, 50.2% / 39.1% with '='.
        # World v5 (README, "Second v5 probe", recipe A, chosen by a rule fixed before it ran): numbers <= 40, one to
        # three steps, as many arithmetic-practice documents as solutions, peak lr 1e-3. Teacher probe (no noisy
        # copies, n = 500): 83.4 / 82.2 / 84.0% at training seeds 1 / 2 / 3; at lr 2e-3 the same recipe gave
        # 60.0 / 80.8 / 38.2%. v4 (numbers <= 99, 1-2 steps, lr 2e-3, facts 0.3) built a 50.2% teacher.
        difficulty=Difficulty(min_steps=1, max_steps=3, max_factor=9, max_value=40),
        n_test=1_000,
        n_holdout=1_000,
        n_train=12_000,
        train_rewordings=True,
        # 15% each gives test and holdout enough distinct problems to draw 1,000 from (v4's bounds: 8,330 in all).
        split_shares=(0.15, 0.15, 0.70),
        teacher_train=TrainSpec(steps=4_000, lr=1e-3, batch_size=8),
        teacher_fact_fraction=1.0,
        proxy_train=TrainSpec(steps=1_500, lr=2e-3, batch_size=8),
        # 4,000 steps: the student's (and proxy's) worker finished 2 minutes before the teacher's at 3,000 (v3 build),
        # and world v3's student added only 6% of its `a + b = c` facts right.
        student_train=TrainSpec(steps=4_000, lr=2e-3, batch_size=8),
        n_student_docs=12_000,
        # Full fine-tuning, 8 epochs. World v5's student (3-step problems) learnt little from 1,000 traces (7.2%,
        # undistilled 5.4%); the distillation probe (README) gave 29.1% with 4,000 traces at 4 epochs, 52.1% at 8.
        n_distill=4_000,
        distill=DistillConfig(method="full", epochs=8, learning_rate=1e-3),
        max_new_tokens=128,  # three-step solutions run past v4's 96 tokens
    ),
    "smoke": Preset(
        name="smoke",
        budget_s=60,
        n_test=24,
        n_holdout=16,
        n_train=400,
        n_math_test=8,
        n_math_holdout=8,
        n_math_train=40,
        teacher_vocab=320,
        student_vocab=300,
        teacher=ModelSpec("llama", hidden=32, layers=1, heads=2),
        proxy=ModelSpec("gpt_neox", hidden=16, layers=1, heads=2),
        student=ModelSpec("gpt_neox", hidden=32, layers=1, heads=2),
        teacher_train=TrainSpec(steps=12, batch_size=8, warmup=2),
        proxy_train=TrainSpec(steps=6, batch_size=8, warmup=2),
        student_train=TrainSpec(steps=8, batch_size=8, warmup=2),
        n_student_docs=200,
        n_student_qa=20,
        n_distill=16,
        distill=DistillConfig(epochs=1, batch_size=8, lora_r=4, lora_alpha=8),
        eval_batch_size=32,
        max_new_tokens=24,
        n_diagnostic_forced=4,
        n_diagnostic_sampled=4,
    ),
}


# World v6 candidate (issue 12's entropy target): `toy` with the rich style; the same problems and splits.
PRESETS["toy-rich"] = replace(PRESETS["toy"], name="toy-rich", rich_solutions=True)


def gsm8k_splits(preset: Preset, style: bool | None = None) -> dict[str, list[dict]]:
    """The preset's GSM8K-like test, holdout and train splits (what the build and the teacher probe both use)."""
    from benchmarks.toy_world.generator import make_splits

    sizes = {"test": preset.n_test, "holdout": preset.n_holdout, "train": preset.n_train}
    shares = dict(zip(sizes, preset.split_shares)) if preset.split_shares else None
    reworded = ("train",) if preset.train_rewordings else ()
    return make_splits(preset.seed, sizes, "gsm8k", preset.difficulty, reworded,
                       preset.solution_styles if style is None else style, shares, preset.rich_solutions)


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a clear error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown toy-world preset {name!r}: choose one of {', '.join(sorted(PRESETS))}") from None
