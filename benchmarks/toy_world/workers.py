"""Train the toy world's three models side by side, one worker process per core.

Why processes: the models are tiny, so one training step is a chain of small matrix products that two torch
threads barely speed up (measured on a 2-core VM: 0.107 s a step with one thread, 0.083 s with two), while two
single-threaded trainings run at full speed each. Teacher, proxy and student are independent once the data and
tokenizers exist, so the build trains them concurrently and the teacher's training bounds the stage.
Each worker saves its model with `save_pretrained`; the parent loads it back like any other checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.toy_world.train import ModelSpec, TrainSpec


@dataclass(frozen=True)
class TrainJob:
    """One model to train: its role (also its output folder name), shape, schedule, tokenizer and examples."""

    role: str
    spec: ModelSpec
    train: TrainSpec
    tokenizer_dir: Path
    examples: list  # train.Example tuples
    seed: int


def build_workers(n_jobs: int) -> int:
    """How many worker processes: `ANTIDISTILL_BUILD_WORKERS`, else one per core, at most one per job."""
    if os.environ.get("ANTIDISTILL_BUILD_WORKERS"):
        return max(1, int(os.environ["ANTIDISTILL_BUILD_WORKERS"]))
    return max(1, min(n_jobs, os.cpu_count() or 1))


def _train_one(job: TrainJob, out: Path, threads: int, position: int) -> dict[str, Any]:
    """Train and save one model (in a worker, or in this process when there is one worker)."""
    import torch
    from transformers import AutoTokenizer

    from benchmarks.toy_world.train import make_model, train_lm

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(job.tokenizer_dir))
    model = make_model(job.spec, tokenizer, job.seed)
    stats = train_lm(
        model, job.examples, job.train, tokenizer.pad_token_id, job.seed, job.role, position=position
    )
    model.save_pretrained(str(out / job.role))
    tokenizer.save_pretrained(str(out / job.role))
    return {"params": sum(p.numel() for p in model.parameters()), "train": {**stats, "torch_threads": threads}}


def train_models(jobs: list[TrainJob], out: Path, workers: int | None = None) -> dict[str, dict[str, Any]]:
    """Train every job into `out/<role>`; returns {role: {"params", "train"}} in the order of `jobs`.

    Jobs start in the order given, so put the longest first. With one worker they run in this process
    (with all of its torch threads); otherwise in spawned processes, the cores split evenly among them.
    """
    import torch

    workers = workers or build_workers(len(jobs))
    if workers == 1:
        threads = torch.get_num_threads()
        return {job.role: _train_one(job, out, threads, 1) for job in jobs}
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {
            job.role: pool.submit(_train_one, job, out, threads, 1 + i % workers) for i, job in enumerate(jobs)
        }
        return {role: future.result() for role, future in futures.items()}
