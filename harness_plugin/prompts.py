"""The text a teacher or student is fed for a question, once for the library, the CLI, the suite and lm-eval.

The paper's protocol (its appendix E and its reference code): the math-teacher system prompt, the question as the
user turn of the model's chat template with the generation prompt, and "**Final Answer** \\[\\boxed{" appended
after a trace for answer forcing. A tokenizer without a chat template gets the same parts as plain text.
"""

from __future__ import annotations

from typing import Any

PAPER_SYSTEM_PROMPT = (
    "You are a math teacher. You will be given a math problem and you will solve it step by step.\n"
    "You will output your final solution like \\boxed{ANSWER}. Be sure to include relevant units within the "
    "brackets and fully evaluate arithmetic expressions.\n"
)
ANSWER_FORCING_PROMPT = "\n\n**Final Answer**\n\\[\\boxed{"
# What `paper` stands for where a setting takes a system prompt or an answer-forcing string (the suite's presets).
PAPER = "paper"


def system_prompt(value: str | None) -> str | None:
    """A system-prompt setting: `paper` for the paper's prompt, else the text itself (None: no system turn)."""
    return PAPER_SYSTEM_PROMPT if value == PAPER else value


def answer_forcing_prompt(value: str | None) -> str | None:
    """An answer-forcing setting: `paper` for the paper's string, else the text itself (None or "": off)."""
    return ANSWER_FORCING_PROMPT if value == PAPER else value


def format_prompt(tokenizer: Any, question: str, system: str | None = None) -> str:
    """The exact model input for `question`: the chat template's rendering (a system turn when `system` is given),
    or, for a tokenizer without a template (or None), `system`, a blank line and the question, as plain text."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return f"{system.rstrip()}\n\n{question.rstrip()}\n" if system else f"{question.rstrip()}\n"
