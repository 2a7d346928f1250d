"""`lm_eval --model antidistill`: lm-eval's Hugging Face model with antidistillation, permutation or temperature
sampling.

`AntidistillLM` is `HFLM` with one change to generation: every `generate` call gets this package's logits processor
(proxy caches reset for each call) and the sampler's τ, top-p and top-k; the task's own sampling gen_kwargs are
ignored, with a warning, because the sampler configuration is what is being measured. Loglikelihood requests are
answered by the teacher unchanged (one warning says so). Everything else (batching, chat templates, data parallel
under `accelerate launch -m lm_eval`, where every rank holds the teacher and the proxy copies) is HFLM's.

Answer forcing (the paper's second accuracy): after a trace, "**Final Answer** \\[\\boxed{" is appended and the
teacher continues greedily for `answer_forcing` tokens (default 32; 0 turns it off). It is applied to the tasks of
this package (or any task whose gen_kwargs set `answer_forcing: N`); the continuation follows the trace behind
`ANSWER_FORCING_SEPARATOR`, which the tasks split off to score `acc` and `acc_forced` separately.

Model arguments are validated, and teacher and proxy tokenizers compared, before any weights are loaded.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM
from transformers import LogitsProcessorList

from .errors import AntidistillError
from .names import DTYPE_NAMES
from .sampling import SAMPLERS, SamplerConfig
from .tasks.protocol import ANSWER_FORCING_PROMPT, ANSWER_FORCING_SEPARATOR, ANSWER_FORCING_TASKS

log = logging.getLogger("lm_eval.models.antidistill")

DEFAULT_ANSWER_FORCING_TOKENS = 32
ANSWER_FORCING_KEY = "answer_forcing"
SAMPLER_NAMES = {"ads": "ads", "antidistillation": "ads", "permutation": "permutation",
                 "temperature": "temperature"}
PROXY_DTYPES = DTYPE_NAMES
# Spellings people reach for, mapped to our names (they would otherwise flow into from_pretrained unnoticed).
ALIASES = {"lambda": "lam", "epsilon": "eps", "temperature": "tau", "proxy_student": "proxy"}
OWN_ARGS = ("pretrained", "teacher", "proxy", "gradient", "sampler", "lam", "eps", "tau", "top_p", "top_k",
            "penalty", "proxy_dtype", "proxy_revision", "seed", ANSWER_FORCING_KEY)
# Decoding settings a task may carry that the sampler decides instead.
SAMPLING_GEN_KWARGS = frozenset({"do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p",
                                 "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "num_beams"})


def _fail(message: str) -> AntidistillError:
    return AntidistillError(f"antidistill model_args: {message}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise _fail(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise _fail(f"{name} must be finite, got {value!r}")
    return number


def _integer(name: str, value: Any) -> int:
    number = _number(name, value)
    if number != int(number):
        raise _fail(f"{name} must be a whole number, got {value!r}")
    return int(number)


@dataclass(frozen=True)
class AntidistillSettings:
    """The validated sampler-side model arguments."""

    config: SamplerConfig
    proxy: str | None = None
    gradient: str | None = None
    proxy_dtype: str | None = None
    proxy_revision: str | None = None
    answer_forcing: int = DEFAULT_ANSWER_FORCING_TOKENS

    @classmethod
    def from_model_args(cls, sampler: Any = "ads", lam: Any = 0.0, eps: Any = 1e-2, tau: Any = 1.0,
                        top_p: Any = 0.95, top_k: Any = 0, penalty: Any = "fd", seed: Any = 0, proxy: Any = None,
                        gradient: Any = None, proxy_dtype: Any = None, proxy_revision: Any = None,
                        answer_forcing: Any = DEFAULT_ANSWER_FORCING_TOKENS) -> AntidistillSettings:
        """Check every argument (types, ranges, required pairs, files) and raise one clear error."""
        name = str(sampler).strip().lower()
        if name not in SAMPLER_NAMES:
            raise _fail(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        try:
            config = SamplerConfig(sampler=SAMPLER_NAMES[name], tau=_number("tau", tau), lam=_number("lam", lam),
                                   eps=_number("eps", eps), top_p=_number("top_p", top_p),
                                   top_k=_integer("top_k", top_k), penalty=str(penalty), seed=_integer("seed", seed))
        except AntidistillError as error:
            if str(error).startswith("antidistill model_args"):
                raise
            raise _fail(str(error)) from None
        if proxy_dtype is not None and str(proxy_dtype) not in PROXY_DTYPES:
            raise _fail(f"unknown proxy_dtype {proxy_dtype!r}: use one of {', '.join(PROXY_DTYPES)}")
        if answer_forcing is True:
            answer_forcing = DEFAULT_ANSWER_FORCING_TOKENS
        forcing = 0 if answer_forcing in (False, None) else _integer(ANSWER_FORCING_KEY, answer_forcing)
        if forcing < 0:
            raise _fail(f"answer_forcing is a number of tokens (0 turns it off), got {answer_forcing!r}")
        if config.needs_penalty:
            if proxy is None or gradient is None:
                raise _fail(f"sampler={config.sampler} with lam > 0 needs proxy=MODEL and gradient=FOLDER (compute "
                            "the gradient with `antidistill gradient --proxy MODEL --traces TRACES.jsonl --output "
                            "FOLDER`)")
            from .gradient import TENSORS_FILE

            if not (Path(str(gradient)).expanduser() / TENSORS_FILE).is_file():
                raise _fail(f"gradient={gradient} has no {TENSORS_FILE}: give the folder written by "
                            "`antidistill gradient`")
        elif proxy is not None or gradient is not None:
            log.warning("antidistill: sampler=%s with lam=%s does not use the proxy or the gradient; they are "
                        "ignored", config.sampler, config.lam)
            proxy = gradient = None
        return cls(config=config, proxy=None if proxy is None else str(proxy),
                   gradient=None if gradient is None else str(Path(str(gradient)).expanduser()),
                   proxy_dtype=None if proxy_dtype in (None, "auto") else str(proxy_dtype),
                   proxy_revision=None if proxy_revision is None else str(proxy_revision), answer_forcing=forcing)


def _hflm_parameters() -> set[str]:
    return set(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}


def _reject_misspelled(kwargs: dict[str, Any]) -> None:
    """Unknown keys go to `from_pretrained`; one that looks like ours is almost surely a typo."""
    known = _hflm_parameters()
    for key in kwargs:
        if key in known:
            continue
        close = difflib.get_close_matches(key, OWN_ARGS, n=1, cutoff=0.75)
        if close:
            raise _fail(f"unknown argument {key!r}: did you mean {close[0]!r}?")


def cut_at_box_close(continuation: str) -> str:
    """The forced continuation up to the brace that closes the box the forcing prompt opened (all of it if none).

    The teacher often rambles on after the box; only the boxed answer is what answer forcing asks for.
    """
    from .answers.latex import matching_close

    close = matching_close("{" + continuation, 0)
    return continuation if close is None else continuation[:close]


def _teacher(pretrained: Any, teacher: Any) -> Any:
    if pretrained is None and teacher is None:
        raise _fail("the teacher is missing: pretrained=NAME_OR_PATH (alias teacher=...)")
    if pretrained is not None and teacher is not None and pretrained != teacher:
        raise _fail(f"pretrained={pretrained!r} and teacher={teacher!r} disagree: give only one of them")
    return pretrained if pretrained is not None else teacher


class AntidistillLM(HFLM):
    """HFLM whose generation samples under antidistillation, permutation or temperature sampling."""

    def __init__(
        self,
        pretrained: Any = None,
        teacher: Any = None,
        proxy: str | None = None,
        gradient: str | None = None,
        sampler: str = "ads",
        lam: float = 0.0,
        eps: float = 1e-2,
        tau: float = 1.0,
        top_p: float = 0.95,
        top_k: int = 0,
        penalty: str = "fd",
        proxy_dtype: str | None = None,
        proxy_revision: str | None = None,
        seed: int = 0,
        answer_forcing: int | bool = DEFAULT_ANSWER_FORCING_TOKENS,
        **kwargs: Any,
    ) -> None:
        for alias, name in ALIASES.items():
            if alias in kwargs:
                raise _fail(f"unknown argument {alias!r}: this model calls it {name!r}")
        _reject_misspelled(kwargs)
        teacher_source = _teacher(pretrained, teacher)
        self.settings = AntidistillSettings.from_model_args(
            sampler=sampler, lam=lam, eps=eps, tau=tau, top_p=top_p, top_k=top_k, penalty=penalty, seed=seed,
            proxy=proxy, gradient=gradient, proxy_dtype=proxy_dtype, proxy_revision=proxy_revision,
            answer_forcing=answer_forcing)
        trust_remote_code = bool(kwargs.get("trust_remote_code", False))
        teacher_tokenizer = self._check_tokenizers(teacher_source, kwargs, trust_remote_code)
        super().__init__(pretrained=teacher_source, **kwargs)
        if self.backend != "causal":
            raise _fail(f"the teacher {teacher_source!r} is a {self.backend} model; antidistillation needs a "
                        "decoder-only (causal) teacher")
        from .vocab import check_model_covers_vocab, real_vocab_size

        # The vocabulary of the teacher's own tokenizer, before HFLM may add a pad token: rows past it are masked.
        self.vocab_limit = real_vocab_size(teacher_tokenizer)
        check_model_covers_vocab(self.model, self.vocab_limit, "teacher")
        self.penalty = self._build_penalty(teacher_tokenizer, trust_remote_code)
        from .generation import build_processor

        self.processor = build_processor(self.settings.config, self.vocab_limit, self.penalty)
        self._enable_cpu_data_parallel()
        self._generate_calls = 0
        self._warned: set[str] = set()
        self._think_close = "\n</think>" if "</think>" in self.tokenizer.get_vocab() else ""

    # ------------------------------------------------------------------ set-up
    def _check_tokenizers(self, teacher_source: Any, kwargs: dict[str, Any], trust_remote_code: bool) -> Any:
        """Load the teacher's tokenizer (and the proxy's, when used) and compare them, before any weights."""
        from .loading import load_tokenizer
        from .vocab import check_same_tokenizer

        source = kwargs.get("tokenizer") or teacher_source
        if not isinstance(source, str):
            source = getattr(source, "name_or_path", None) or getattr(getattr(source, "config", None),
                                                                        "_name_or_path", None)
        if not isinstance(source, str) or not source:
            raise _fail("cannot tell which tokenizer the teacher uses: pass tokenizer=NAME_OR_PATH")
        revision = kwargs.get("revision")
        teacher_tokenizer = load_tokenizer(source, None if revision in (None, "main") else str(revision),
                                           trust_remote_code)
        if self.settings.config.needs_penalty:
            assert self.settings.proxy is not None
            proxy_tokenizer = load_tokenizer(self.settings.proxy, self.settings.proxy_revision, trust_remote_code)
            check_same_tokenizer(teacher_tokenizer, proxy_tokenizer, f"teacher {source!r}",
                                 f"proxy {self.settings.proxy!r}")
        return teacher_tokenizer

    def _build_penalty(self, teacher_tokenizer: Any, trust_remote_code: bool) -> Any:
        if not self.settings.config.needs_penalty:
            return None
        from .generation import build_penalty
        from .gradient import ProxyGradient
        from .loading import load_model

        settings = self.settings
        proxy = load_model(str(settings.proxy), dtype=settings.proxy_dtype, device=self.device,
                           revision=settings.proxy_revision, trust_remote_code=trust_remote_code)
        gradient = ProxyGradient.load(str(settings.gradient), proxy=proxy)
        penalty = build_penalty(settings.config, teacher_tokenizer, proxy, gradient, proxy_dtype=settings.proxy_dtype)
        self._gradient_metadata = dict(gradient.metadata)
        del proxy  # the penalty keeps its own perturbed copies
        return penalty

    def _enable_cpu_data_parallel(self) -> None:
        """Under `accelerate launch` on CPUs, split requests across processes like HFLM does across GPUs.

        HFLM turns data parallelism on only when it sees more than one GPU; without this every CPU process would
        evaluate every request (and the runs would race writing the same results).
        """
        accelerator = getattr(self, "accelerator", None)
        if accelerator is None or accelerator.num_processes <= 1 or self.world_size > 1:
            return
        if torch.device(self.device).type == "cpu":
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes

    # -------------------------------------------------------------- reporting
    def describe(self) -> dict[str, Any]:
        """The sampler configuration, as recorded in lm-eval's results JSON (`config.antidistill`)."""
        info: dict[str, Any] = self.settings.config.as_params()
        info.update({"teacher": str(self.pretrained), "proxy": self.settings.proxy, "gradient": self.settings.gradient,
                     "grad_norm": None, "answer_forcing_tokens": self.settings.answer_forcing,
                     "vocab_size": self.vocab_limit})
        if self.penalty is not None:
            info.update(self.penalty.describe())
            info["proxy"] = self.settings.proxy
            meta = getattr(self, "_gradient_metadata", {})
            info["gradient_metadata"] = {key: meta.get(key) for key in (
                "num_tokens", "num_traces", "loss", "traces_sha256", "proxy_name", "world_size", "created_at")}
        return info

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["antidistill"] = self.describe()
        return info

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned and self.rank == 0:
            self._warned.add(key)
            log.warning(message, *args)

    # ----------------------------------------------------------- likelihoods
    def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
        self._warn_once("loglikelihood", "antidistill: antidistillation changes only generation; loglikelihood "
                                         "requests are answered by the teacher unchanged")
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
        self._warn_once("loglikelihood", "antidistill: antidistillation changes only generation; loglikelihood "
                                         "requests are answered by the teacher unchanged")
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    # ------------------------------------------------------------- generation
    def _next_seed(self) -> int:
        """A distinct, reproducible seed for every generate call on every rank."""
        seed = self.settings.config.seed + self._generate_calls * self.world_size + self.rank
        self._generate_calls += 1
        return seed

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str],
                        **generation_kwargs: Any) -> torch.Tensor:
        """HFLM's generation with our logits processor and the sampler's decoding settings instead of the task's."""
        for key in (*SAMPLING_GEN_KWARGS, ANSWER_FORCING_KEY):
            generation_kwargs.pop(key, None)
        config = self.settings.config
        seed = self._next_seed()
        processors = LogitsProcessorList()
        if self.processor is not None:
            self.processor.start(generation_kwargs.get("attention_mask"), seed=seed)  # resets the proxy caches
            processors.append(self.processor)
        if config.greedy:
            generation_kwargs.update(do_sample=False, temperature=0.0, top_p=None, top_k=None)
        else:  # the processor has divided by τ already
            generation_kwargs.update(do_sample=True, temperature=1.0, top_p=config.top_p, top_k=config.top_k)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = super()._model_generate(context, max_length, stop, logits_processor=processors,
                                          repetition_penalty=1.0, **generation_kwargs)
        if self.processor is not None:
            self.processor.finish()  # the penalty's last deferred check (NaN Δ) of this generation
        return out

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
        self._warn_ignored_gen_kwargs(requests)
        responses = super().generate_until(requests, disable_tqdm=disable_tqdm)
        budgets = [self._answer_forcing_tokens(request) for request in requests]
        if any(budgets):
            responses = self._force_answers(requests, responses, budgets)
        return responses

    def _warn_ignored_gen_kwargs(self, requests: Any) -> None:
        for request in requests:
            gen_kwargs = request.args[1] if len(request.args) > 1 and isinstance(request.args[1], dict) else {}
            ignored = sorted(set(gen_kwargs) & SAMPLING_GEN_KWARGS)
            if ignored:
                config = self.settings.config
                self._warn_once(
                    "gen_kwargs", "antidistill: the sampler from model_args decides decoding (sampler=%s, tau=%s, "
                    "lam=%s, top_p=%s, top_k=%s); the gen_kwargs %s of task %s are ignored", config.sampler,
                    config.tau, config.lam, config.top_p, config.top_k,
                    {key: gen_kwargs[key] for key in ignored}, request.task_name)
                return

    def _answer_forcing_tokens(self, request: Any) -> int:
        gen_kwargs = request.args[1] if len(request.args) > 1 and isinstance(request.args[1], dict) else {}
        if ANSWER_FORCING_KEY in gen_kwargs:
            return _integer(ANSWER_FORCING_KEY, gen_kwargs[ANSWER_FORCING_KEY])
        return self.settings.answer_forcing if request.task_name in ANSWER_FORCING_TASKS else 0

    def _force_answers(self, requests: Any, traces: list[str], budgets: list[int]) -> list[str]:
        """Append the forcing prompt to each trace and let the teacher finish the box greedily (no tilt)."""
        from tqdm.auto import tqdm

        responses = list(traces)
        todo = sorted((i for i, budget in enumerate(budgets) if budget > 0), key=lambda i: budgets[i])
        size = self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 0 else 1
        batches = [todo[start:start + size] for start in range(0, len(todo), size)]
        for batch in tqdm(batches, desc="answer forcing", disable=self.rank != 0):
            budget = max(budgets[i] for i in batch)
            suffixes = [(self._think_close if "</think>" not in traces[i] else "") + ANSWER_FORCING_PROMPT
                        for i in batch]
            contexts = [requests[i].args[0] + traces[i] + suffix for i, suffix in zip(batch, suffixes)]
            input_ids, attention_mask = self.tok_batch_encode(contexts, left_truncate_len=self.max_length - budget)
            with torch.no_grad():
                sequences = self.model.generate(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                    do_sample=False, temperature=None, top_p=None, top_k=None, repetition_penalty=1.0,
                    max_new_tokens=budget, pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
            for row, (i, suffix) in enumerate(zip(batch, suffixes)):
                tokens = sequences[row, input_ids.shape[1]:input_ids.shape[1] + budgets[i]].tolist()
                continuation = cut_at_box_close(self.tok_decode(tokens))
                responses[i] = traces[i] + ANSWER_FORCING_SEPARATOR + suffix + continuation
                self.cache_hook.add_partial("generate_until", requests[i].args, responses[i])
        return responses
