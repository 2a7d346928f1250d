"""Tokenizers of the toy world, trained on its own corpus and saved as `PreTrainedTokenizerFast`.

Two families, as in the paper where the student comes from another model family than the teacher:
- "teacher" (shared by teacher and proxy): byte-level BPE, Llama-like chat markers `<|user|>` / `<|assistant|>`.
- "student": byte-level BPE with a different vocabulary size and ChatML markers `<|im_start|>` / `<|im_end|>`.
Digits are always split one per token (as Llama and Qwen do): it is what lets tiny models learn arithmetic.
Both are loadable through `AutoTokenizer.from_pretrained(path)` with no custom code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


@dataclass(frozen=True)
class TokenizerStyle:
    """Special tokens and chat template of one tokenizer family."""

    bos: str
    eos: str
    pad: str
    extra: tuple[str, ...]
    chat_template: str

    def prompt(self, question: str) -> str:
        """`question` as this family's chat template renders it for generation: what
        `harness_plugin.prompts.format_prompt` gives once the tokenizer exists (the build needs it before, to
        train the tokenizer on chat-formatted text)."""
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([[{"role": "user", "content": question}]],
                                            chat_template=self.chat_template, add_generation_prompt=True)
        return str(rendered[0])


TEACHER_STYLE = TokenizerStyle(
    bos="<s>",
    eos="<|end|>",
    pad="<pad>",
    extra=("<|user|>", "<|assistant|>", "<|system|>"),
    chat_template=(
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
)
STUDENT_STYLE = TokenizerStyle(
    bos="<|endoftext|>",
    eos="<|im_end|>",
    pad="<|endoftext|>",
    extra=("<|im_start|>",),
    chat_template=(
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
)
STYLES = {"teacher": TEACHER_STYLE, "student": STUDENT_STYLE}


def train_tokenizer(texts: Iterable[str], style: TokenizerStyle, vocab_size: int, out_dir: Path) -> Path:
    """Train a byte-level BPE on `texts` and save it (with its chat template) with `save_pretrained`."""
    specials = list(dict.fromkeys([style.pad, style.bos, style.eos, *style.extra]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=style.bos,
        eos_token=style.eos,
        pad_token=style.pad,
        additional_special_tokens=[t for t in style.extra],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = style.chat_template
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return out_dir
