"""The paper's evaluation protocol as lm-eval task functions: data, prompt and the two accuracies.

- Data: with `ANTIDISTILL_DATA_DIR` set, `$ANTIDISTILL_DATA_DIR/<dataset>/<split>.jsonl` (the layout of the
  project's offline data: gsm8k/, gsm8k_platinum/, math/, math500/); otherwise the Hugging Face hub.
- Prompt (`harness_plugin.prompts`): the paper's math-teacher system prompt and the question, rendered with the
  teacher's chat template when its tokenizer has one (read from `--model_args pretrained=...`/`tokenizer=...`,
  which lm-eval passes to tasks as metadata), else as plain text. Pass `--metadata '{"chat_template": false}'` to get the plain text, e.g. when you
  add `--apply_chat_template` yourself (the template must not be applied twice).
- Scoring: `harness_plugin.answers` decides equivalence. `acc` scores the trace; `acc_forced` scores the answer
  the teacher writes after "**Final Answer** \\[\\boxed{" is appended to the trace (answer forcing, done by the
  `antidistill` model). `acc_forced` appears only when the responses carry a forced answer.

lm-eval calls the `load_*` functions with every model argument and `--metadata` entry as keywords, so they take
`**kwargs` and read only what they need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from harness_plugin.problems import load_records
from harness_plugin.prompts import PAPER_SYSTEM_PROMPT, format_prompt

# Put by the antidistill model between a trace and its answer-forced continuation; never produced by a model.
ANSWER_FORCING_SEPARATOR = "\n\n[antidistill: answer forcing]"
# Tasks whose responses the antidistill model answer-forces by default (they report acc_forced).
ANSWER_FORCING_TASKS = frozenset(
    {"gsm8k_antidistill", "gsm8k_antidistill_gsm8k", "math_antidistill", "math500_antidistill"})

def _tokenizer_source(metadata: dict[str, Any]) -> str | None:
    for key in ("tokenizer", "pretrained", "teacher"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
        if value is not None and hasattr(value, "apply_chat_template"):
            return value  # type: ignore[no-any-return]
    return None


def _prompt_renderer(metadata: dict[str, Any]) -> Callable[[str], str]:
    """question -> exact model input, in the teacher's chat template when it has one."""
    system = metadata.get("system_prompt") or PAPER_SYSTEM_PROMPT

    def plain(question: str) -> str:
        return format_prompt(None, question.strip() + "\n", system)

    source = _tokenizer_source(metadata)
    if source is None or metadata.get("chat_template") is False:
        return plain
    if isinstance(source, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, revision=metadata.get("revision"),
                                                  trust_remote_code=bool(metadata.get("trust_remote_code", False)))
    else:
        tokenizer = source
    if not getattr(tokenizer, "chat_template", None):
        return plain

    def chat(question: str) -> str:
        return format_prompt(tokenizer, question.strip() + "\n", system)

    return chat


def _build(records: Iterable[dict[str, Any]], kind: str, metadata: dict[str, Any],
           question_key: str, reference_of: Callable[[dict[str, Any]], str]) -> Any:
    import datasets

    from harness_plugin.answers import reference_answer, warm_up

    warm_up(wait=False)  # the checker's workers load while the model generates, not at the first score
    render = _prompt_renderer(metadata)
    rows = []
    for index, record in enumerate(records):
        question = record[question_key]
        rows.append({
            "index": index,
            "question": question,
            "prompt": render(question),
            "reference": reference_answer(reference_of(record), kind),
            "dataset": kind,
        })
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_gsm8k_platinum(**metadata: Any) -> Any:
    """GSM8K-Platinum test (the paper's GSM8K test set)."""
    return _build(load_records("gsm8k_platinum", "test"), "gsm8k", metadata, "question", lambda r: r["answer"])


def load_gsm8k(**metadata: Any) -> Any:
    """The original GSM8K test split."""
    return _build(load_records("gsm8k", "test"), "gsm8k", metadata, "question", lambda r: r["answer"])


def load_math(**metadata: Any) -> Any:
    """MATH test (5000 problems, all subjects)."""
    return _build(load_records("math", "test"), "math", metadata, "problem", lambda r: r["solution"])


def load_math500(**metadata: Any) -> Any:
    """MATH-500 (PRM800K's test subset of MATH), scored against its extracted answers."""
    return _build(load_records("math500", "test"), "math", metadata, "problem",
                  lambda r: r.get("answer") or r["solution"])


def split_forced(response: str) -> tuple[str, str | None]:
    """(trace, forced answer text or None) from a response of the antidistill model."""
    trace, separator, forced = response.partition(ANSWER_FORCING_SEPARATOR)
    return trace, (forced if separator else None)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """`acc` on the trace; `acc_forced` on the answer-forced continuation when there is one; `undecided`: the
    share of comparisons the checker could not finish in time (scored as not correct, counted here)."""
    from harness_plugin.answers import Verdict, judge

    trace, forced = split_forced(results[0])
    verdicts = [judge(trace, doc["reference"], doc["dataset"])]
    metrics = {"acc": float(verdicts[0] is Verdict.EQUIVALENT)}
    if forced is not None:
        verdicts.append(judge(forced, doc["reference"], doc["dataset"]))
        metrics["acc_forced"] = float(verdicts[1] is Verdict.EQUIVALENT)
    metrics["undecided"] = float(Verdict.UNDECIDED in verdicts)
    return metrics
