"""transformers `LogitsProcessor`s for antidistillation and permutation sampling.

Both turn the teacher's raw scores into   log p_T / τ + λ·Δ   over the real vocabulary (rows beyond it get -inf),
and HF's top-p / top-k warpers then run on the result. The processor owns τ: call `generate` with
`temperature=1.0` so HF does not divide again. λ is the paper's λ. The reference code adds λ_code·Δ to the raw
logits *before* HF divides by τ, so its λ_code equals τ·λ here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from transformers import LogitsProcessor

from .errors import AntidistillError
from .names import PENALTY_METHODS, SAMPLER_LONG_NAMES, SAMPLERS
from .penalty import AntidistillationPenalty

Sampler = Literal["ads", "permutation", "temperature"]


@dataclass(frozen=True)
class SamplerConfig:
    """Everything that defines how traces were sampled; recorded with every run."""

    sampler: str = "ads"
    tau: float = 1.0
    lam: float = 0.0
    eps: float = 1e-2
    top_p: float = 0.95
    top_k: int = 0
    penalty: str = "fd"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise AntidistillError(f"unknown sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if not math.isfinite(self.lam) or self.lam < 0:
            raise AntidistillError(f"lam must be >= 0 (λ = 0 is plain temperature sampling), got {self.lam}")
        if not math.isfinite(self.tau) or self.tau < 0 or (self.tau == 0 and self.sampler != "temperature"):
            raise AntidistillError(f"tau must be > 0 for {self.sampler} sampling (tau = 0 is greedy decoding, "
                                   f"only for --sampler temperature), got {self.tau}")
        if not math.isfinite(self.eps) or self.eps <= 0:
            raise AntidistillError(f"eps must be > 0 (the finite-difference step), got {self.eps}")
        if not 0 < self.top_p <= 1:
            raise AntidistillError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise AntidistillError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if self.penalty not in PENALTY_METHODS:
            raise AntidistillError(f"unknown penalty method {self.penalty!r}: use one of {', '.join(PENALTY_METHODS)}")

    @property
    def needs_penalty(self) -> bool:
        return self.sampler in ("ads", "permutation") and self.lam > 0

    @property
    def greedy(self) -> bool:
        return self.tau == 0

    def as_params(self) -> dict[str, object]:
        """Flat parameters for result files and MLflow (`sampler` spelled out as in the paper)."""
        params: dict[str, object] = asdict(self)
        params["sampler"] = SAMPLER_LONG_NAMES[self.sampler]
        params["lam_code"] = self.tau * self.lam
        return params


class _TiltedTeacherProcessor(LogitsProcessor):
    """Shared machinery: the prompt attention mask, vocabulary masking and the tilt itself."""

    def __init__(self, penalty: AntidistillationPenalty | None, lam: float, tau: float, vocab_size: int) -> None:
        if lam < 0 or not math.isfinite(lam):
            raise AntidistillError(f"lam must be >= 0, got {lam}")
        if tau <= 0 or not math.isfinite(tau):
            raise AntidistillError(f"tau must be > 0, got {tau}")
        if lam > 0 and penalty is None:
            raise AntidistillError("lam > 0 needs a penalty (a proxy and its gradient)")
        if penalty is not None and penalty.vocab_size != vocab_size:
            raise AntidistillError(
                f"the penalty covers {penalty.vocab_size} tokens but the teacher's vocabulary has {vocab_size}")
        self.penalty, self.lam, self.tau, self.vocab_size = penalty, float(lam), float(tau), int(vocab_size)
        self._prompt_mask: torch.Tensor | None = None
        self._last_length: int | None = None

    def start(self, attention_mask: torch.Tensor | None, seed: int | None = None) -> None:
        """Begin a new generation: reset the proxy caches and remember the prompt's padding.

        `seed` seeds the processor's own randomness for this generation, where it has some (permutation's).
        """
        self._prompt_mask = attention_mask
        self._last_length = None
        if self.penalty is not None:
            self.penalty.reset()

    def finish(self) -> None:
        """After a generation: raise for a penalty check still pending from its last step (see the penalty)."""
        if self.penalty is not None:
            self.penalty.check()

    def attention_mask_for(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Prompt mask followed by ones for generated tokens (what HF itself feeds the teacher)."""
        prompt = self._prompt_mask
        if prompt is None:
            return torch.ones_like(input_ids)
        if prompt.shape[0] != input_ids.shape[0] or prompt.shape[1] > input_ids.shape[1]:
            raise AntidistillError(
                "the logits processor was started for another batch: call processor.start(attention_mask) "
                "before each generate() call")
        generated = input_ids.shape[1] - prompt.shape[1]
        ones = torch.ones((input_ids.shape[0], generated), dtype=prompt.dtype, device=prompt.device)
        return torch.cat([prompt.to(ones.device), ones], dim=1)

    def delta(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        assert self.penalty is not None
        # after start(), generate() feeds one more token per step: the penalty may defer its checks (no host sync)
        continues = self._prompt_mask is not None and self._last_length == input_ids.shape[1] - 1
        self._last_length = input_ids.shape[1]
        return self.penalty(input_ids, self.attention_mask_for(input_ids), continues=continues).to(scores.device)

    def tilt(self, scores: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        logp = torch.log_softmax(scores[:, : self.vocab_size].float(), dim=-1)
        tilted = logp / self.tau if delta is None else logp / self.tau + self.lam * delta
        out = torch.full(scores.shape, float("-inf"), dtype=tilted.dtype, device=scores.device)
        out[:, : self.vocab_size] = tilted
        return out


class AntidistillationLogitsProcessor(_TiltedTeacherProcessor):
    """Sample from softmax(log p_T / τ + λ·Δ): tokens that would raise a distilled student's loss gain mass."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        delta = self.delta(input_ids, scores) if self.lam > 0 else None
        return self.tilt(scores, delta)  # type: ignore[return-value]


class PermutationLogitsProcessor(_TiltedTeacherProcessor):
    """The control: the same Δ, permuted over the vocabulary and sign-flipped afresh at every step and sequence.

    It keeps Δ's statistics (the multiset of |Δ|) and destroys its information about which token is which.
    """

    def __init__(self, penalty: AntidistillationPenalty | None, lam: float, tau: float, vocab_size: int,
                 seed: int = 0, independent_signs: bool = False) -> None:
        super().__init__(penalty, lam, tau, vocab_size)
        self.seed, self.independent_signs = int(seed), independent_signs
        self._generator: torch.Generator | None = None

    def start(self, attention_mask: torch.Tensor | None, seed: int | None = None) -> None:
        super().start(attention_mask, seed)
        if seed is not None:
            self.seed = int(seed)
        self._generator = None

    def permute(self, delta: torch.Tensor) -> torch.Tensor:
        """A fresh uniform permutation per row and a random sign (per row, or per entry)."""
        if self._generator is None or self._generator.device != delta.device:
            self._generator = torch.Generator(device=delta.device).manual_seed(self.seed)
        order = torch.rand(delta.shape, generator=self._generator, device=delta.device).argsort(dim=-1)
        sign_shape = delta.shape if self.independent_signs else (delta.shape[0], 1)
        signs = torch.randint(0, 2, sign_shape, generator=self._generator, device=delta.device) * 2 - 1
        return delta.gather(-1, order) * signs.to(delta.dtype)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        delta = self.permute(self.delta(input_ids, scores)) if self.lam > 0 else None
        return self.tilt(scores, delta)  # type: ignore[return-value]


class TeacherLogProbRecorder(LogitsProcessor):
    """Records log p_T of every sampled token (untempered, before any tilt) to measure how far traces drift.

    Put it first in the processor list. It keeps one [batch, vocab] tensor: the previous step's log-probs are
    read at the token that was then sampled (the last column of the next step's input ids).
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []
        self._pending: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids[:, -1])
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self._pending is not None:
            self.steps.append(self._pending.gather(-1, tokens.view(-1, 1).to(self._pending.device)).squeeze(-1))
            self._pending = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """Log-probs of the generated tokens, shape [batch, generated]."""
        self._take(sequences[:, -1])
        if not self.steps:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(self.steps, dim=1).cpu()
