"""The antidistill lm-eval model, tasks and import hook, in-process (the real CLI runs are in test_lm_eval_cli.py).

Tiny random models from the `tiny_dir` fixture; the model's generation is checked against the library's own
`generate()` with the same seed, so the lm-eval wiring (processor, τ, top-p, proxy resets, seeds) cannot drift.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness_plugin.errors import AntidistillError, VocabularyMismatchError
from harness_plugin.lm_eval.hook import REGISTRY_MODULE, _run, _with_tasks_path, add_tasks_path, tasks_path
from harness_plugin.lm_eval.tasks import protocol
from harness_plugin.names import DATA_DIR_VARIABLE
from harness_plugin.prompts import ANSWER_FORCING_PROMPT, PAPER_SYSTEM_PROMPT

TRACES = [{"prompt": "<s>Tom has 3 apples and buys 5 more.", "completion": " 3 + 5 = 8. #### 8"},
          {"prompt": "<s>A train travels", "completion": " 60 km in 2 hours. #### 30"}]
PROMPTS = ["<s>Tom has 3 apples and buys", "<s>A train travels 60 km in 2 hours. What is"]
TASK_NAMES = {"gsm8k_antidistill", "gsm8k_antidistill_gsm8k", "math_antidistill", "math500_antidistill"}


@pytest.fixture(scope="module")
def grad_dir(tiny_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness_plugin import ProxyGradient

    proxy = AutoModelForCausalLM.from_pretrained(tiny_dir / "proxy")
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "proxy")
    folder = tmp_path_factory.mktemp("lm_eval_grad") / "gradient"
    ProxyGradient.compute(proxy, tokenizer, TRACES, progress=False).save(folder)
    return folder


def make_lm(tiny_dir, grad_dir, **overrides):
    from harness_plugin.lm_eval.model import AntidistillLM

    args = {"pretrained": str(tiny_dir / "teacher"), "proxy": str(tiny_dir / "proxy"), "gradient": str(grad_dir),
            "sampler": "ads", "lam": 2.0, "tau": 0.8, "seed": 7, "device": "cpu", "answer_forcing": 0}
    args.update(overrides)
    return AntidistillLM(**args)


# ----------------------------------------------------------------------------------------- model arguments
@pytest.mark.parametrize(("overrides", "message"), [
    ({"sampler": "bogus"}, "unknown sampler"),
    ({"lam": -1.0}, "lam must be >= 0"),
    ({"lam": "abc"}, "lam must be a number"),
    ({"eps": 0}, "eps must be"),
    ({"tau": 0.0}, "tau must be > 0"),
    ({"top_p": 1.5}, "top_p must be in"),
    ({"top_k": 1.5}, "top_k must be a whole number"),
    ({"penalty": "exact"}, "unknown penalty"),
    ({"proxy_dtype": "int8"}, "unknown proxy_dtype"),
    ({"answer_forcing": -1}, "answer_forcing"),
    ({"proxy": None}, "needs proxy=MODEL and gradient=FOLDER"),
    ({"lamda": 1.0}, "did you mean 'lam'"),
    ({"lambda": 1.0}, "calls it 'lam'"),
    ({"pretrained": None}, "teacher is missing"),
    ({"teacher": "/elsewhere"}, "disagree"),
])
def test_bad_model_args_fail_before_loading_anything(tmp_path, grad_dir, overrides, message):
    from harness_plugin.lm_eval.model import AntidistillLM

    args = {"pretrained": str(tmp_path / "no-such-teacher"), "proxy": str(tmp_path / "no-such-proxy"),
            "gradient": str(grad_dir), "sampler": "ads", "lam": 1.0}
    args.update(overrides)
    with pytest.raises(AntidistillError, match=message):
        AntidistillLM(**args)


def test_gradient_folder_without_gradient_is_rejected(tmp_path):
    from harness_plugin.lm_eval.model import AntidistillLM

    with pytest.raises(AntidistillError, match="has no gradient.safetensors"):
        AntidistillLM(pretrained=str(tmp_path / "t"), proxy=str(tmp_path / "p"), gradient=str(tmp_path), lam=1.0)


def test_proxy_with_another_tokenizer_fails_before_any_weights(tiny_dir, grad_dir, tmp_path):
    # The teacher folder holds only a tokenizer: had weights been loaded first, that would fail differently.
    teacher = tmp_path / "teacher-tokenizer-only"
    shutil.copytree(tiny_dir / "tokenizer", teacher)
    proxy = tiny_dir / "proxy_other_vocab"
    with pytest.raises(VocabularyMismatchError) as error:
        make_lm(tiny_dir, grad_dir, pretrained=str(teacher), proxy=str(proxy))
    assert str(teacher) in str(error.value) and str(proxy) in str(error.value)


# ------------------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("sampler", ["ads", "permutation", "temperature"])
def test_generation_equals_library_generate(tiny_dir, grad_dir, sampler):
    from harness_plugin import ProxyGradient, generate
    from harness_plugin.loading import load_model

    lm = make_lm(tiny_dir, grad_dir, sampler=sampler)
    context, mask = lm.tok_batch_encode(PROMPTS)
    new_tokens = 6
    sequences = lm._model_generate(context, max_length=context.shape[1] + new_tokens, stop=[], attention_mask=mask,
                                   do_sample=False, temperature=0.0)  # task gen_kwargs the sampler overrides
    ours = sequences[:, context.shape[1]:].tolist()
    needs_proxy = sampler != "temperature"
    proxy = load_model(tiny_dir / "proxy", device="cpu") if needs_proxy else None
    gradient = ProxyGradient.load(grad_dir, proxy=proxy) if needs_proxy else None
    reference = generate(lm.model, lm.tokenizer, PROMPTS, sampler=sampler, proxy=proxy, gradient=gradient, lam=2.0,
                         tau=0.8, seed=7, max_new_tokens=new_tokens, batch_size=len(PROMPTS), progress=False)
    for row, trace in zip(ours, reference):
        assert row[: len(trace.token_ids)] == trace.token_ids
    # the next call uses the next seed and starts from fresh proxy caches
    again = lm._model_generate(context, max_length=context.shape[1] + new_tokens, stop=[], attention_mask=mask)
    assert lm._generate_calls == 2 and again.shape[0] == len(PROMPTS)


def _request(prompt, task, **gen_kwargs):
    from lm_eval.api.instance import Instance

    kwargs = {"until": [], "max_gen_toks": 3, **gen_kwargs}
    return Instance(request_type="generate_until", doc={}, arguments=(prompt, kwargs), idx=0,
                    metadata=(task, 0, 1))


def test_answer_forcing_appends_the_teachers_greedy_box(tiny_dir, grad_dir):
    lm = make_lm(tiny_dir, grad_dir, sampler="temperature", answer_forcing=4)
    responses = lm.generate_until([_request(PROMPTS[0], "gsm8k_antidistill"), _request(PROMPTS[1], "other_task"),
                                   _request(PROMPTS[1], "other_task", answer_forcing=2)])
    trace, forced = protocol.split_forced(responses[0])
    assert forced is not None and forced.startswith(ANSWER_FORCING_PROMPT)
    assert protocol.split_forced(responses[1])[1] is None  # other tasks are left alone unless they ask
    assert protocol.split_forced(responses[2])[1] is not None
    ids, mask = lm.tok_batch_encode([PROMPTS[0] + trace + ANSWER_FORCING_PROMPT])
    greedy = lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=4,
                               pad_token_id=lm.tokenizer.pad_token_id, top_p=None, top_k=None, temperature=None)
    from harness_plugin.answer_forcing import cut_at_box_close

    expected = cut_at_box_close(lm.tok_decode(greedy[0, ids.shape[1]:].tolist()))
    assert forced == ANSWER_FORCING_PROMPT + expected


@pytest.mark.parametrize(("continuation", "kept"), [
    ("18}\\] so the answer", "18}"), ("\\frac{1}{2}}\\]", "\\frac{1}{2}}"), ("\\{1\\}} x", "\\{1\\}}"), ("18", "18")])
def test_forced_continuation_is_cut_at_the_closing_brace(continuation, kept):
    from harness_plugin.answer_forcing import cut_at_box_close

    assert cut_at_box_close(continuation) == kept


def test_loglikelihood_is_the_teachers_and_warns_once(tiny_dir, grad_dir, caplog, monkeypatch):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    monkeypatch.setattr(logging.getLogger("lm_eval"), "propagate", True)
    lm = make_lm(tiny_dir, grad_dir, sampler="ads")
    plain = HFLM(pretrained=str(tiny_dir / "teacher"), device="cpu")
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=("<s>Tom has 3", " apples"), idx=0,
                         metadata=("t", 0, 1)),
                Instance(request_type="loglikelihood", doc={}, arguments=("<s>A train", " travels fast"), idx=0,
                         metadata=("t", 1, 1))]
    with caplog.at_level(logging.WARNING, logger="lm_eval.models.antidistill"):
        ours = lm.loglikelihood(requests) + lm.loglikelihood(requests[:1])
    theirs = plain.loglikelihood(requests)
    assert [round(x, 5) for x, _ in ours[:2]] == [round(x, 5) for x, _ in theirs]
    assert sum("answered by the teacher unchanged" in r.message for r in caplog.records) == 1


def test_results_config_records_the_sampler(tiny_dir, grad_dir):
    from harness_plugin import ProxyGradient

    info = make_lm(tiny_dir, grad_dir, sampler="permutation", lam=3.0, eps=0.02).get_model_info()["antidistill"]
    assert info["sampler"] == "permutation" and info["lam"] == 3.0 and info["eps"] == 0.02 and info["tau"] == 0.8
    assert info["penalty"] == "fd" and info["proxy"] == str(tiny_dir / "proxy")
    assert info["grad_norm"] == pytest.approx(ProxyGradient.load(grad_dir).norm)
    assert info["lam_code"] == pytest.approx(0.8 * 3.0)
    json.dumps(info)  # lm-eval writes it into the results JSON


# ------------------------------------------------------------------------------------------------ the tasks
def write_data(root: Path) -> Path:
    (root / "gsm8k_platinum").mkdir(parents=True)
    rows = [{"question": "Ann has 2 pens and buys 3. How many pens?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
            {"question": "What is 4 times 3?", "answer": "4 * 3 = 12\n#### 12"}]
    (root / "gsm8k_platinum" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "math500").mkdir()
    rows = [{"problem": "What is $\\frac{1}{2}+\\frac{1}{2}$?", "solution": "It is $\\boxed{1}$.", "answer": "1"},
            {"problem": "Solve $x+1=3$.", "solution": "$x=\\boxed{2}$", "answer": "2"}]
    (root / "math500" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_offline_data_override_and_chat_template(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(write_data(tmp_path / "data")))
    docs = protocol.load_gsm8k_platinum(pretrained=str(tiny_dir / "teacher"), version=1.0)["test"]
    assert docs["reference"] == ["5", "12"]
    assert docs[0]["prompt"].startswith("<s><|system|>You are a math teacher.")
    assert docs[0]["prompt"].endswith("How many pens?\n\n<|assistant|>")
    plain = protocol.load_math500(pretrained=str(tiny_dir / "teacher"), chat_template=False)["test"]
    assert plain[1]["prompt"] == PAPER_SYSTEM_PROMPT + "\nSolve $x+1=3$.\n" and plain["reference"] == ["1", "2"]
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "data" / "math" / "test.jsonl")):
        protocol.load_math()


def test_without_data_dir_or_network_the_error_names_the_offline_fix(monkeypatch):
    monkeypatch.delenv(DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="set ANTIDISTILL_DATA_DIR to a folder holding math500/test.jsonl"):
        protocol.load_math500()


def test_tasks_load_the_shared_offline_data(shared_data, monkeypatch):
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(shared_data))
    sizes = {protocol.load_gsm8k_platinum: 1209, protocol.load_gsm8k: 1319, protocol.load_math500: 500}
    for loader, size in sizes.items():
        docs = loader()["test"]
        assert len(docs) == size and all(docs["reference"])
    math = protocol.load_math()["test"]
    assert len(math) == 5000 and math[0]["reference"] == "2"  # test/algebra/1.json: \boxed{2} asymptotes


def test_process_results_scores_trace_and_forced_answer():
    doc = {"reference": "18", "dataset": "gsm8k"}
    assert protocol.process_results(doc, ["She makes 9 * 2 = 18 dollars. \\boxed{18}"]) == {"acc": 1.0, "undecided": 0.0}
    forced = "I think it is 7." + protocol.ANSWER_FORCING_SEPARATOR + ANSWER_FORCING_PROMPT + "18}"
    assert protocol.process_results(doc, [forced]) == {"acc": 0.0, "acc_forced": 1.0, "undecided": 0.0}
    doc = {"reference": "\\frac{1}{2}", "dataset": "math"}
    assert protocol.process_results(doc, ["so $\\boxed{0.5}$"])["acc"] == 1.0


def test_process_results_counts_a_comparison_cut_off_by_the_limit():
    """A comparison the checker could not finish in time (sympy needs minutes for this one) is not correct and
    is counted as undecided."""
    doc = {"reference": "(x+y+z)^{30}", "dataset": "math"}
    assert protocol.process_results(doc, ["\\boxed{(x+y+z+1)^{30}}"]) == {"acc": 0.0, "undecided": 1.0}


# ------------------------------------------------------------------------------------------------- the hook
def test_include_path_finds_exactly_our_tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=tasks_path(), include_defaults=False)
    assert set(manager.all_subtasks) == TASK_NAMES  # the template yaml is not a task
    assert "antidistill" in manager.all_tags


def test_installed_entry_points_name_our_model_and_our_task_folder():
    """What plugin-discovering lm-eval releases read: the installed metadata, not our source tree."""
    from importlib.metadata import entry_points

    model = {ep.name: ep for ep in entry_points(group="lm_eval.models")}["antidistill"]
    assert model.load().__name__ == "AntidistillLM"
    package = {ep.name: ep for ep in entry_points(group="lm_eval.tasks")}["antidistill"].load()
    folders = [os.path.abspath(folder) for folder in package.__path__]
    assert folders == [os.path.abspath(tasks_path())]
    assert {name for name in os.listdir(folders[0]) if name.endswith(".yaml")} >= {f"{t}.yaml" for t in TASK_NAMES}


def test_tasks_path_goes_first_and_only_once():
    ours = tasks_path()
    assert _with_tasks_path(None) == [ours]
    assert _with_tasks_path("/mine") == [ours, "/mine"]
    assert _with_tasks_path([ours + os.sep]) == [ours + os.sep]


def test_task_manager_wrapper_keeps_signature_and_respects_include_defaults():
    class Manager:  # the shape of lm-eval's TaskManager.__init__
        def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
            self.include_path, self.metadata = include_path, metadata

    add_tasks_path(type("module", (), {"TaskManager": Manager}))
    add_tasks_path(type("module", (), {"TaskManager": Manager}))  # idempotent
    assert Manager(None, "/mine", metadata={"a": 1}).include_path == [tasks_path(), "/mine"]
    assert Manager(include_defaults=False).include_path is None
    assert Manager(metadata={"a": 1}).metadata == {"a": 1}


def test_a_failing_hook_step_warns_instead_of_raising(caplog):
    with caplog.at_level(logging.WARNING):
        _run(REGISTRY_MODULE, object())
    assert "antidistill lm-eval" in caplog.text


def _python(code: str, cwd: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


def _hook_installed() -> bool:
    import sysconfig
    from importlib import metadata

    try:
        metadata.distribution("antidistill")
    except metadata.PackageNotFoundError:
        pytest.skip("antidistill is not installed (pip install -e . / tox installs it with its .pth hook)")
    return (Path(sysconfig.get_paths()["purelib"]) / "antidistill_lm_eval.pth").is_file()


def test_startup_hook_costs_no_import_and_registers_lazily(tmp_path):
    assert _hook_installed(), "antidistill is installed without antidistill_lm_eval.pth: reinstall it (pip install .)"
    startup = _python("import sys, json; print(json.dumps([m in sys.modules for m in ('lm_eval', 'torch', "
                      "'transformers')] + [any(getattr(f, 'antidistill_hook', False) for f in sys.meta_path)]))",
                      tmp_path)
    assert json.loads(startup.stdout) == [False, False, False, True], startup.stderr
    code = ("import json, sys, lm_eval.api.registry as r\n"
            "from lm_eval.tasks import manager\n"
            "print(json.dumps(['antidistill' in r.model_registry, r.get_model('dummy').__name__, "
            "'torch' in sys.modules, getattr(manager.TaskManager.__init__, '_antidistill_tasks_path', False), "
            "type(r.__loader__).__name__]))")
    on = _python(code, tmp_path)
    assert json.loads(on.stdout) == [True, "DummyLM", False, True, "SourceFileLoader"], on.stderr
    off = _python("import lm_eval.api.registry as r; print('antidistill' in r.model_registry)", tmp_path,
                  ANTIDISTILL_LM_EVAL_HOOK="0")
    assert off.stdout.strip() == "False", off.stderr


# ---------------------------------------------------------------------------------------- CLI and MLflow parts
def test_lm_eval_subcommand_passes_every_argument_through():
    from harness_plugin.cli import build_parser

    args = build_parser().parse_args(["lm-eval", "--model", "antidistill", "--tasks", "a,b", "-h", "--mlflow"])
    assert args.lm_eval_args == ["--model", "antidistill", "--tasks", "a,b", "-h", "--mlflow"]
    assert callable(args.func)


def test_mlflow_options_are_taken_out_and_follow_the_environment(monkeypatch):
    from harness_plugin.lm_eval.tracking import MlflowOptions

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    options, rest = MlflowOptions.pop_from(["--model", "x", "--mlflow-experiment=e", "--mlflow-run-name", "r"])
    assert (options.enabled, options.experiment, options.run_name, rest) == (True, "e", "r", ["--model", "x"])
    assert MlflowOptions.pop_from(["--model", "x"])[0].enabled is False
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert MlflowOptions.pop_from(["--model", "x"])[0].enabled is True
    assert MlflowOptions.pop_from(["--no-mlflow"])[0].enabled is False


def test_mlflow_params_and_metrics_from_lm_eval_results():
    from harness_plugin.lm_eval.tracking import run_metrics, run_params

    results = {"results": {"gsm8k_antidistill": {"alias": "gsm8k_antidistill", "acc,none": 0.5,
                                                 "acc_stderr,none": "N/A", "acc_forced,strict": 0.25}},
               "config": {"model": "antidistill", "model_args": "pretrained=t,lam=1.0", "limit": 2,
                          "antidistill": {"sampler": "antidistillation", "gradient_metadata": {"num_tokens": 9}}}}
    assert run_metrics(results) == {"gsm8k_antidistill/acc": 0.5, "gsm8k_antidistill/acc_forced/strict": 0.25}
    params = run_params(results)
    assert params["model_args.lam"] == "1.0" and params["antidistill.gradient_metadata.num_tokens"] == "9"
    assert params["lm_eval.limit"] == "2" and params["lm_eval.tasks"] == "gsm8k_antidistill"


def test_tasks_path_command_prints_the_task_folder(capsys):
    from harness_plugin.cli import main

    assert main(["tasks-path"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == Path(tasks_path()) and (printed / "gsm8k_antidistill.yaml").is_file()
