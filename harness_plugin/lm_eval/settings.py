"""The `antidistill` model's own model_args (sampler, λ, ε, τ, proxy, gradient, answer forcing), validated before
any weights load, with one clear error per mistake; every other argument is HFLM's."""

from __future__ import annotations

import difflib
import inspect
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_eval.models.huggingface import HFLM

from ..errors import AntidistillError
from ..names import DTYPE_NAMES, SAMPLER_SPELLINGS
from ..sampling import SAMPLERS, SamplerConfig

log = logging.getLogger("lm_eval.models.antidistill")

DEFAULT_ANSWER_FORCING_TOKENS = 32
ANSWER_FORCING_KEY = "answer_forcing"
PROXY_DTYPES = DTYPE_NAMES
# Spellings people reach for, mapped to our names (they would otherwise flow into from_pretrained unnoticed).
ALIASES = {"lambda": "lam", "epsilon": "eps", "temperature": "tau", "proxy_student": "proxy"}
OWN_ARGS = ("pretrained", "teacher", "proxy", "gradient", "sampler", "lam", "eps", "tau", "top_p", "top_k",
            "penalty", "proxy_dtype", "proxy_revision", "seed", ANSWER_FORCING_KEY)


def fail(message: str) -> AntidistillError:
    return AntidistillError(f"antidistill model_args: {message}")


def number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise fail(f"{name} must be a number, got {value!r}")
    try:
        parsed = float(value)
    except ValueError:
        raise fail(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(parsed):
        raise fail(f"{name} must be finite, got {value!r}")
    return parsed


def integer(name: str, value: Any) -> int:
    value_as_float = number(name, value)
    if value_as_float != int(value_as_float):
        raise fail(f"{name} must be a whole number, got {value!r}")
    return int(value_as_float)


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
        if name not in SAMPLER_SPELLINGS:
            raise fail(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        try:
            config = SamplerConfig(sampler=SAMPLER_SPELLINGS[name], tau=number("tau", tau), lam=number("lam", lam),
                                   eps=number("eps", eps), top_p=number("top_p", top_p),
                                   top_k=integer("top_k", top_k), penalty=str(penalty), seed=integer("seed", seed))
        except AntidistillError as error:
            if str(error).startswith("antidistill model_args"):
                raise
            raise fail(str(error)) from None
        if proxy_dtype is not None and str(proxy_dtype) not in PROXY_DTYPES:
            raise fail(f"unknown proxy_dtype {proxy_dtype!r}: use one of {', '.join(PROXY_DTYPES)}")
        if answer_forcing is True:
            answer_forcing = DEFAULT_ANSWER_FORCING_TOKENS
        forcing = 0 if answer_forcing in (False, None) else integer(ANSWER_FORCING_KEY, answer_forcing)
        if forcing < 0:
            raise fail(f"answer_forcing is a number of tokens (0 turns it off), got {answer_forcing!r}")
        if config.needs_penalty:
            if proxy is None or gradient is None:
                raise fail(f"sampler={config.sampler} with lam > 0 needs proxy=MODEL and gradient=FOLDER (compute "
                            "the gradient with `antidistill gradient --proxy MODEL --traces TRACES.jsonl --output "
                            "FOLDER`)")
            from ..gradient import TENSORS_FILE

            if not (Path(str(gradient)).expanduser() / TENSORS_FILE).is_file():
                raise fail(f"gradient={gradient} has no {TENSORS_FILE}: give the folder written by "
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


def reject_misspelled(kwargs: dict[str, Any]) -> None:
    """Unknown keys go to `from_pretrained`; a spelling people reach for (`lambda`) or one that looks like ours is
    almost surely a mistake, so it stops here with the name to use."""
    for alias, name in ALIASES.items():
        if alias in kwargs:
            raise fail(f"unknown argument {alias!r}: this model calls it {name!r}")
    known = _hflm_parameters()
    for key in kwargs:
        if key in known:
            continue
        close = difflib.get_close_matches(key, OWN_ARGS, n=1, cutoff=0.75)
        if close:
            raise fail(f"unknown argument {key!r}: did you mean {close[0]!r}?")


def teacher_source(pretrained: Any, teacher: Any) -> Any:
    """`pretrained=` or its alias `teacher=`: exactly one teacher."""
    if pretrained is None and teacher is None:
        raise fail("the teacher is missing: pretrained=NAME_OR_PATH (alias teacher=...)")
    if pretrained is not None and teacher is not None and pretrained != teacher:
        raise fail(f"pretrained={pretrained!r} and teacher={teacher!r} disagree: give only one of them")
    return pretrained if pretrained is not None else teacher
