"""Is the finite difference still the derivative in a low-precision proxy dtype?

In bf16, θ ± εg is rounded to 8 bits of mantissa: where |εg| is below half a unit of |θ| the perturbation is lost,
and the difference of two rounded log-probabilities divided by 2ε amplifies rounding noise by 1/ε. So bf16 fd is a
numerical risk, not only a speed setting. The check compares Δ_fd (in the proxy dtype, for a few ε) with the exact
Δ_jvp (fp32) on a few random prefixes, as the angle between the two vocabulary-sized vectors: |sin θ| above 0.1
means that more than about 1% of Δ's energy is not the derivative. The angle has two causes, so the best ε is in
between: rounding (ε too small for the dtype) and truncation (ε‖g‖ too large a step for the model to be linear:
with ‖g‖ = 31, ε = 1e-2 is already off by |sin θ| ≈ 0.3 in fp32 on a tiny model).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from harness_plugin.gradient import ProxyGradient
from harness_plugin.penalty import AntidistillationPenalty

SIN_WARN = 0.1
CANDIDATE_EPS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def _sin(fd: torch.Tensor, exact: torch.Tensor) -> list[float]:
    cos = F.cosine_similarity(fd.double(), exact.double(), dim=-1).clamp(-1.0, 1.0)
    return [math.sqrt(max(0.0, 1.0 - c * c)) if c > 0 else 1.0 for c in cos.tolist()]  # anti-aligned: as bad


def fd_fidelity(proxy: PreTrainedModel, gradient: ProxyGradient, vocab: int, eps: float, dtype: torch.dtype,
                device: torch.device, seed: int = 0, prefixes: int = 3, length: int = 32,
                candidates: tuple[float, ...] = CANDIDATE_EPS) -> dict[str, Any]:
    """|sin θ| between fd (in `dtype`, for `eps` and each candidate ε) and jvp (fp32) on random prefixes.

    Returns the worst |sin θ| over the prefixes per ε, the ε with the smallest, and whether `eps` is above
    `SIN_WARN`. Builds one penalty at a time (one fp32 proxy copy for jvp, then two `dtype` copies per ε).
    """
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (prefixes, length), generator=generator).to(device)
    exact_penalty = AntidistillationPenalty(proxy, gradient, method="jvp", vocab_size=vocab, dtype=torch.float32,
                                            device=device)
    exact = exact_penalty(ids)
    del exact_penalty
    worst: dict[float, float] = {}
    for value in sorted({*candidates, eps}):
        fd = AntidistillationPenalty(proxy, gradient, eps=value, method="fd", vocab_size=vocab, dtype=dtype,
                                     device=device, defer_checks=False)
        try:
            worst[value] = max(_sin(fd(ids), exact))
        except FloatingPointError:  # NaN/inf in fd at this ε: as far from the derivative as can be
            worst[value] = 1.0
        del fd
    best = min(worst, key=lambda value: (worst[value], abs(math.log(value / eps))))
    return {"dtype": str(dtype).removeprefix("torch."), "eps": eps, "prefixes": prefixes, "prefix_length": length,
            "sin_by_eps": {repr(k): v for k, v in worst.items()}, "sin": worst[eps], "best_eps": best,
            "warn": worst[eps] > SIN_WARN}


def fidelity_lines(report: dict[str, Any]) -> list[str]:
    """What to print: the angle at the chosen ε, and which ε to use when it is too large."""
    table = ", ".join(f"ε={k}: {v:.3f}" for k, v in report["sin_by_eps"].items())
    lines = [f"fd fidelity in {report['dtype']} against fp32 jvp ({report['prefixes']} random prefixes of "
             f"{report['prefix_length']} tokens), worst |sin θ|: {table}"]
    if report["warn"]:
        lines.append(f"WARNING: at eps={report['eps']} the {report['dtype']} finite difference is off the derivative "
                     f"(|sin θ| = {report['sin']:.3f} > {SIN_WARN}); use --eps {report['best_eps']} "
                     f"(|sin θ| = {report['sin_by_eps'][repr(report['best_eps'])]:.3f}) or a float32 proxy")
    return lines
