"""The real command lines, end to end, on tiny random models with `--limit` and offline data.

Few subprocesses, each checking several things (every lm-eval start imports torch and indexes ~15k built-in tasks):
- plain `lm_eval --model antidistill` (the .pth hook), ads sampler, answer forcing;
- `accelerate launch --cpu --num_processes 2 -m harness_plugin --mlflow ...`: data parallel over two CPU
  processes, the `python -m` fallback, the permutation sampler on two tasks, one MLflow run from rank 0;
- `antidistill lm-eval --include_path TASKS` (the fallback command) with the hook off, temperature sampler;
- `lm_eval --model hf` on our task in the same environment.
Every run reads `$ANTIDISTILL_DATA_DIR` (a tiny data folder written here), never the hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness_plugin.lm_eval.tasks import protocol

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
GSM8K = [{"question": "Ann has 2 pens and buys 3 more. How many pens does she have?", "answer": "2 + 3 = 5\n#### 5"},
         {"question": "What is 4 times 3?", "answer": "4 * 3 = 12\n#### 12"},
         {"question": "Tom has 10 apples and eats 4. How many are left?", "answer": "10 - 4 = 6\n#### 6"},
         {"question": "A box holds 6 eggs. How many eggs are in 2 boxes?", "answer": "6 * 2 = 12\n#### 12"}]
MATH500 = [{"problem": "What is $1+1$?", "solution": "$\\boxed{2}$", "answer": "2"},
           {"problem": "Simplify $\\frac{2}{4}$.", "solution": "$\\boxed{\\frac{1}{2}}$", "answer": "\\frac{1}{2}"}]


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{path} is missing: install the package with its dependencies (pip install -e '.[dev]')")
    return str(path)


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    """Tiny models, a proxy gradient, a tiny offline data folder and a clean environment for the subprocesses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness_plugin import ProxyGradient

    root = tmp_path_factory.mktemp("lm_eval_cli")
    proxy = AutoModelForCausalLM.from_pretrained(tiny_dir / "proxy")
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "proxy")
    traces = [{"prompt": "<s>Tom has 3 apples.", "completion": " 3 + 5 = 8. #### 8"},
              {"prompt": "<s>A train travels", "completion": " 60 km in 2 hours. #### 30"}]
    gradient = ProxyGradient.compute(proxy, tokenizer, traces, progress=False)
    gradient.save(root / "gradient")
    data = root / "data"
    for name, rows in (("gsm8k_platinum", GSM8K), ("math500", MATH500)):
        (data / name).mkdir(parents=True)
        (data / name / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLFLOW_", "ANTIDISTILL_", "ACCELERATE_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "ANTIDISTILL_DATA_DIR": str(data), "HF_HOME": str(root / "hf_home")})
    return {"root": root, "tiny": tiny_dir, "gradient": root / "gradient", "norm": gradient.norm, "env": env}


def run(setup, name, command, model_args, tasks="gsm8k_antidistill", limit=2, extra=(), env=None):
    output = setup["root"] / name
    args = [*command, "--model_args", model_args, "--tasks", tasks, "--limit", str(limit), "--device", "cpu",
            "--gen_kwargs", "max_gen_toks=4", "--output_path", str(output), "--log_samples", "--seed", "1", *extra]
    result = subprocess.run(args, cwd=setup["root"], env={**setup["env"], **(env or {})}, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    results = sorted(output.glob("*/results_*.json"))
    samples = sorted(output.glob("*/samples_*.jsonl"))
    assert len(results) == 1, f"expected one results file, found {results}"
    lines = [json.loads(line) for path in samples for line in path.read_text().splitlines()]
    return json.loads(results[0].read_text()), lines, result


def antidistill_args(setup, **extra):
    args = {"pretrained": setup["tiny"] / "teacher", "proxy": setup["tiny"] / "proxy", "gradient": setup["gradient"],
            "lam": 1.0, "answer_forcing": 3, **extra}
    return ",".join(f"{key}={value}" for key, value in args.items())


def test_plain_lm_eval_runs_the_antidistill_model_through_the_startup_hook(setup):
    results, samples, _ = run(setup, "ads", [_tool("lm_eval"), "--model", "antidistill"],
                              antidistill_args(setup, sampler="ads", tau=0.9))
    config = results["config"]["antidistill"]
    assert config["sampler"] == "antidistillation" and config["lam"] == 1.0 and config["tau"] == 0.9
    assert config["eps"] == 0.01 and config["penalty"] == "fd"
    assert config["grad_norm"] == pytest.approx(setup["norm"])
    assert {"acc,none", "acc_forced,none"} <= set(results["results"]["gsm8k_antidistill"])
    # the offline override: the documents are ours, not GSM8K-Platinum's
    assert [s["doc"]["question"] for s in samples] == [r["question"] for r in GSM8K[:2]]
    assert [s["target"] for s in samples] == ["5", "12"]
    assert all(protocol.ANSWER_FORCING_SEPARATOR in s["resps"][0][0] for s in samples)


def _free_port() -> str:
    """Not accelerate's default 29500: a stale run elsewhere on the machine must not collide with this one."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def test_module_under_accelerate_splits_two_cpu_processes_and_logs_to_mlflow_once(setup, monkeypatch):
    tracking = f"file://{setup['root'] / 'mlruns'}"
    results, samples, result = run(
        setup, "permutation", [_tool("accelerate"), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                               "--mixed_precision", "no", "--dynamo_backend", "no",
                               "--main_process_port", _free_port(), "-m", "harness_plugin",
                               "--mlflow", "--mlflow-experiment", "cli-test", "--model", "antidistill"],
        antidistill_args(setup, sampler="permutation", seed=3), tasks="gsm8k_antidistill,math500_antidistill",
        limit=4, env={"MLFLOW_TRACKING_URI": tracking, "MLFLOW_ALLOW_FILE_STORE": "true"})
    config = results["config"]["antidistill"]
    assert config["sampler"] == "permutation" and config["seed"] == 3
    assert config["grad_norm"] == pytest.approx(setup["norm"])
    # one results file (only rank 0 writes; without data parallel each process would write its own) holding every
    # document once, gathered from both ranks
    gsm8k = sorted((s["doc_id"], s["target"]) for s in samples if s["doc"]["dataset"] == "gsm8k")
    assert gsm8k == [(0, "5"), (1, "12"), (2, "6"), (3, "12")]
    assert sorted(s["target"] for s in samples if s["doc"]["dataset"] == "math") == ["2", "\\frac{1}{2}"]
    assert result.stdout.count("MLflow: run") == 1
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the test's store: no database migrations to wait for
    client = mlflow.MlflowClient(tracking_uri=tracking)
    (logged,) = client.search_runs([client.get_experiment_by_name("cli-test").experiment_id])
    assert logged.data.params["antidistill.sampler"] == "permutation"
    assert logged.data.params["model_args.proxy"] == str(setup["tiny"] / "proxy")
    assert logged.data.metrics["math500_antidistill/acc"] == results["results"]["math500_antidistill"]["acc,none"]
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"results.json", "samples_gsm8k_antidistill.jsonl", "samples_math500_antidistill.jsonl"} <= artifacts


def test_fallback_command_with_include_path_and_temperature_sampler(setup):
    from harness_plugin.lm_eval.hook import tasks_path

    model_args = f"pretrained={setup['tiny'] / 'teacher'},sampler=temperature,tau=0.7,answer_forcing=0"
    results, samples, _ = run(setup, "temperature", [_tool("antidistill"), "lm-eval", "--model", "antidistill"],
                              model_args, extra=("--include_path", tasks_path()),
                              env={"ANTIDISTILL_LM_EVAL_HOOK": "0"})
    config = results["config"]["antidistill"]
    assert config["sampler"] == "temperature" and config["tau"] == 0.7 and config["grad_norm"] is None
    assert "acc_forced,none" not in results["results"]["gsm8k_antidistill"]
    assert len(samples) == 2 and not any(protocol.ANSWER_FORCING_SEPARATOR in s["resps"][0][0] for s in samples)


def test_hf_model_still_works_next_to_the_hook(setup):
    results, samples, _ = run(setup, "hf", [_tool("lm_eval"), "--model", "hf"],
                              f"pretrained={setup['tiny'] / 'teacher'}", limit=1)
    assert results["config"]["model"] == "hf" and "antidistill" not in results["config"]
    assert set(results["results"]["gsm8k_antidistill"]) >= {"acc,none"} and len(samples) == 1
