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

import logging
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM
from transformers import LogitsProcessorList

from ..prompts import ANSWER_FORCING_PROMPT
from .settings import (
    ANSWER_FORCING_KEY,
    DEFAULT_ANSWER_FORCING_TOKENS,
    AntidistillSettings,
    fail,
    integer,
    reject_misspelled,
    teacher_source,
)
from .tasks.protocol import ANSWER_FORCING_SEPARATOR, ANSWER_FORCING_TASKS

log = logging.getLogger("lm_eval.models.antidistill")

# Decoding settings a task may carry that the sampler decides instead.
SAMPLING_GEN_KWARGS = frozenset({"do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p",
                                 "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "num_beams"})


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
        reject_misspelled(kwargs)
        teacher_path = teacher_source(pretrained, teacher)
        self.settings = AntidistillSettings.from_model_args(
            sampler=sampler, lam=lam, eps=eps, tau=tau, top_p=top_p, top_k=top_k, penalty=penalty, seed=seed,
            proxy=proxy, gradient=gradient, proxy_dtype=proxy_dtype, proxy_revision=proxy_revision,
            answer_forcing=answer_forcing)
        trust_remote_code = bool(kwargs.get("trust_remote_code", False))
        teacher_tokenizer = self._check_tokenizers(teacher_path, kwargs, trust_remote_code)
        super().__init__(pretrained=teacher_path, **kwargs)
        if self.backend != "causal":
            raise fail(f"the teacher {teacher_path!r} is a {self.backend} model; antidistillation needs a "
                        "decoder-only (causal) teacher")
        from ..vocab import check_model_covers_vocab, real_vocab_size

        # The vocabulary of the teacher's own tokenizer, before HFLM may add a pad token: rows past it are masked.
        self.vocab_limit = real_vocab_size(teacher_tokenizer)
        check_model_covers_vocab(self.model, self.vocab_limit, "teacher")
        self.penalty = self._build_penalty(teacher_tokenizer, trust_remote_code)
        from ..generation import build_processor

        self.processor = build_processor(self.settings.config, self.vocab_limit, self.penalty)
        self._enable_cpu_data_parallel()
        self._generate_calls = 0
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ set-up
    def _check_tokenizers(self, teacher_source: Any, kwargs: dict[str, Any], trust_remote_code: bool) -> Any:
        """Load the teacher's tokenizer (and the proxy's, when used) and compare them, before any weights."""
        from ..loading import load_tokenizer
        from ..vocab import check_same_tokenizer

        source = kwargs.get("tokenizer") or teacher_source
        if not isinstance(source, str):
            source = getattr(source, "name_or_path", None) or getattr(getattr(source, "config", None),
                                                                        "_name_or_path", None)
        if not isinstance(source, str) or not source:
            raise fail("cannot tell which tokenizer the teacher uses: pass tokenizer=NAME_OR_PATH")
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
        from ..generation import build_penalty
        from ..gradient import ProxyGradient
        from ..loading import load_model

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
            return integer(ANSWER_FORCING_KEY, gen_kwargs[ANSWER_FORCING_KEY])
        return self.settings.answer_forcing if request.task_name in ANSWER_FORCING_TASKS else 0

    def _force_answers(self, requests: Any, traces: list[str], budgets: list[int]) -> list[str]:
        """Append the forcing prompt to each trace and let the teacher finish the box greedily (no tilt)."""
        from ..answer_forcing import force_answers, think_close

        forced = force_answers([request.args[0] for request in requests], traces, budgets, self._continue_greedily,
                               ANSWER_FORCING_PROMPT, think_close(self.tokenizer))
        responses = list(traces)
        for i, answer in enumerate(forced):
            if answer is not None:
                responses[i] = traces[i] + ANSWER_FORCING_SEPARATOR + answer
                self.cache_hook.add_partial("generate_until", requests[i].args, responses[i])
        return responses

    def _continue_greedily(self, texts: list[str], max_new_tokens: int) -> list[str]:
        """The teacher's greedy continuation of each text (untilted), in HFLM's batches and left truncation."""
        from tqdm.auto import tqdm

        size = self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 0 else 1
        out: list[str] = []
        for start in tqdm(range(0, len(texts), size), desc="answer forcing", disable=self.rank != 0):
            input_ids, attention_mask = self.tok_batch_encode(texts[start:start + size],
                                                              left_truncate_len=self.max_length - max_new_tokens)
            with torch.no_grad():
                sequences = self.model.generate(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                    do_sample=False, temperature=None, top_p=None, top_k=None, repetition_penalty=1.0,
                    max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
            out += [self.tok_decode(row[input_ids.shape[1]:].tolist()) for row in sequences]
        return out
