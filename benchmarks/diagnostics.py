"""Diagnostics that say whether antidistillation *can* poison a world, before any student is distilled.

Antidistillation only works when (a) g is signal, not the noise of a few traces; (b) the proxy's loss, and so Δ,
sits on tokens the teacher may change without harm; (c) the teacher has harmless choices to spend the tilt on; and
(d) the tilt is large enough to move sampling but not so large that it breaks answers. Each number here measures
one of these on greedy teacher traces of holdout problems:

- `split_half_cosine`: g from the even-indexed traces against g from the odd ones (a), with the Spearman-Brown
  estimate for the full set;
- `proxy_nll_digit_share`: the share of the proxy's completion NLL on digit tokens (b): when it is high, Δ mostly
  rewards wrong digits, which costs the teacher as much as the student;
- teacher entropy at digit and other positions (c), and the share of other positions with entropy ≥ 0.3 nats;
- `delta_top20_std_median`: the spread of Δ over the teacher's top tokens, so λ·spread is the tilt in nats (d);
- per sampler: where its expected deviations from the greedy token fall (digit or other positions, teacher-forced
  on the greedy traces, exactly from the sampling distribution), and, on sampled traces, how often the final answer
  survives a deviation.

A "digit position" is a completion token whose decoded text, stripped, is non-empty and all ASCII digits (the toy
tokenizers write numbers one digit per token); every other completion token, EOS included, is "other".

`diagnose` works on loaded models (the toy world's build calls it); `diagnose_run` on a folder made by
`antidistill bench run` (the `antidistill bench diagnose RUN_DIR` command).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from harness_plugin.errors import AntidistillError
from harness_plugin.gradient import ProxyGradient
from harness_plugin.tokens import EncodedTrace, encode_prompt, encode_trace

DIAGNOSTICS_FILE = "diagnostics.json"
DELTA_EPS = 0.01  # ε of the finite difference behind delta_top20_std_median
ENTROPY_THRESHOLD = 0.3  # nats: a position "has a choice" above this
PERMUTATION_DRAWS = 4
TARGETS = {"split_half_cosine": 0.8, "other_positions_entropy_ge_0_3": 0.30}
_DIGITS = frozenset("0123456789")


# ---------------------------------------------------------------------------------------------- tokens and positions

def digit_token_mask(tokenizer: Any, vocab_size: int | None = None) -> torch.Tensor:
    """Bool [vocab]: True for token ids whose decoded text, stripped, is non-empty and all digits."""
    size = int(vocab_size or len(tokenizer))
    mask = torch.zeros(size, dtype=torch.bool)
    for token_id in range(size):
        text = tokenizer.decode([token_id]).strip()
        mask[token_id] = bool(text) and set(text) <= _DIGITS
    return mask


def encode_for_diagnostics(tokenizer: Any, trace: Mapping[str, Any]) -> EncodedTrace:
    """Prompt + completion ids with the exact token boundary.

    A trace written by `harness_plugin.generate` carries the ids it sampled ("token_ids") and whether it ended with
    EOS ("finished"); those are used as they are, since re-encoding the text can merge tokens differently from what
    the teacher chose. Otherwise the completion is encoded like the proxy gradient does (`encode_trace`, EOS
    appended unless the trace says it was cut off).
    """
    finished = trace.get("finished", True) is not False
    ids = trace.get("token_ids")
    if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
        prompt_ids = encode_prompt(tokenizer, trace["prompt"])
        eos = [int(tokenizer.eos_token_id)] if finished and tokenizer.eos_token_id is not None else []
        return EncodedTrace(prompt_ids + list(ids) + eos, len(prompt_ids))
    return encode_trace(tokenizer, trace["prompt"], trace["completion"], append_eos=finished)


def _batches(encoded: Sequence[EncodedTrace], batch_size: int, desc: str, progress: bool
             ) -> Iterator[tuple[int, Sequence[EncodedTrace]]]:
    starts = range(0, len(encoded), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        yield start, encoded[start:start + batch_size]


def _right_pad(batch: Sequence[EncodedTrace], pad_id: int, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, attention mask, and `target` [B, T-1]: True where logits[:, t] predict a completion token ids[:, t+1]."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    target = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, trace in enumerate(batch):
        n = len(trace.input_ids)
        ids[row, :n] = torch.tensor(trace.input_ids)
        mask[row, :n] = 1
        target[row, max(trace.prompt_length, 1):n] = True  # position 0 has no context to predict it from
    return ids.to(device), mask.to(device), target[:, 1:].to(device)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _fp32(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself when already fp32, otherwise an fp32 copy (Δ by finite differences needs fp32)."""
    if next(model.parameters()).dtype == torch.float32:
        return model
    return copy.deepcopy(model).float().eval()


# ---------------------------------------------------------------------------------------------- the gradient

def gradient_dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """⟨a, b⟩ over all tensors flattened (float64); both must have the same names."""
    if set(a) != set(b):
        raise AntidistillError("the two gradients cover different parameters: compute both for the same proxy")
    return float(sum(float((a[n].double() * b[n].double()).sum()) for n in a))


def gradient_cosine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Cosine between two gradients, every tensor flattened into one vector."""
    norm = math.sqrt(gradient_dot(a, a) * gradient_dot(b, b))
    return gradient_dot(a, b) / norm if norm > 0 else float("nan")


def gradient_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    return math.sqrt(gradient_dot(tensors, tensors))


def split_half_gradients(proxy: Any, tokenizer: Any, traces: Sequence[Mapping[str, Any]], batch_size: int = 32,
                         progress: bool = True) -> tuple[ProxyGradient, ProxyGradient]:
    """g on the even-indexed traces and g on the odd-indexed ones (each normalised by its own token count)."""
    if len(traces) < 2:
        raise AntidistillError("the split-half cosine needs at least 2 traces")
    return (ProxyGradient.compute(proxy, tokenizer, traces[0::2], batch_size=batch_size, progress=progress),
            ProxyGradient.compute(proxy, tokenizer, traces[1::2], batch_size=batch_size, progress=progress))


def combine_halves(even: ProxyGradient, odd: ProxyGradient) -> ProxyGradient:
    """The full-set g from its two halves: ℓ is a mean over tokens, so g = (n_e·g_e + n_o·g_o) / (n_e + n_o)."""
    n_even, n_odd = int(even.metadata["num_tokens"]), int(odd.metadata["num_tokens"])
    total = n_even + n_odd
    tensors = {name: (n_even * even.tensors[name] + n_odd * odd.tensors[name]) / total for name in even.tensors}
    metadata = {**even.metadata, "norm": gradient_norm(tensors), "num_tokens": total,
                "num_traces": int(even.metadata["num_traces"]) + int(odd.metadata["num_traces"]),
                "loss": (n_even * even.metadata["loss"] + n_odd * odd.metadata["loss"]) / total,
                "traces_sha256": None, "note": "combined from the even and odd halves of the traces"}
    return ProxyGradient(tensors, metadata)


def spearman_brown(cosine: float) -> float | None:
    """Estimated cosine for twice the traces (2c/(1+c)): what the full set's g would agree with, roughly."""
    if not math.isfinite(cosine) or cosine <= -1:
        return None
    return 2 * cosine / (1 + cosine)


# ---------------------------------------------------------------------------------------------- Δ by finite difference

def perturbed_parameters(proxy: torch.nn.Module, gradient: ProxyGradient, eps: float
                         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """θ_P + εg and θ_P − εg in fp32, by parameter name (for `torch.func.functional_call`)."""
    if not (math.isfinite(eps) and eps > 0):
        raise AntidistillError(f"eps must be a finite number > 0, got {eps!r}")
    gradient.check_matches(proxy)
    plus, minus = {}, {}
    for name, parameter in proxy.named_parameters():
        base = parameter.detach().float()
        step = eps * gradient.tensors[name].to(base.device, torch.float32)
        plus[name], minus[name] = base + step, base - step
    return plus, minus


@torch.no_grad()
def finite_difference_delta(proxy: torch.nn.Module, gradient: ProxyGradient, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor | None = None, eps: float = DELTA_EPS,
                            vocab_size: int | None = None,
                            parameters: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
                            ) -> torch.Tensor:
    """Δ at every position of full (right-padded) sequences at once, float32 [batch, length, vocab].

    Δ(v | x_≤t) = [log p(v | x_≤t; θ_P + εg) − log p(v | x_≤t; θ_P − εg)] / (2ε): one forward per perturbed
    parameter set over the whole sequence instead of the sampler's per-step KV-cached copies. `parameters` reuses
    prebuilt `perturbed_parameters(...)`. The proxy should be fp32 (the difference of two nearby log-probs).
    """
    plus, minus = parameters if parameters is not None else perturbed_parameters(proxy, gradient, eps)
    device = _device(proxy)
    input_ids = input_ids.to(device)
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    width = vocab_size or None

    def log_probs(params: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = torch.func.functional_call(proxy, params, args=(), kwargs=kwargs).logits
        return torch.log_softmax(logits[..., :width].float(), dim=-1)

    return (log_probs(plus) - log_probs(minus)).mul_(0.5 / eps)


# ---------------------------------------------------------------------------------------------- proxy NLL by position

@torch.no_grad()
def proxy_nll_by_position(proxy: torch.nn.Module, tokenizer: Any, traces: Sequence[Mapping[str, Any]],
                          batch_size: int = 32, digit_mask: torch.Tensor | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """How the proxy's teacher-forced completion NLL (the loss g differentiates) splits over digit/other tokens."""
    digit_mask = digit_token_mask(tokenizer) if digit_mask is None else digit_mask
    encoded = [encode_for_diagnostics(tokenizer, t) for t in traces]
    device, pad = _device(proxy), _pad_id(tokenizer)
    sums = {"digit": 0.0, "other": 0.0}
    counts = {"digit": 0, "other": 0}
    for _, batch in _batches(encoded, batch_size, "proxy NLL", progress):
        ids, mask, target = _right_pad(batch, pad, device)
        logits = proxy(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        labels = ids[:, 1:][target]
        is_digit = digit_mask.to(device)[labels]
        values = nll[target].double()
        sums["digit"] += float(values[is_digit].sum())
        sums["other"] += float(values[~is_digit].sum())
        counts["digit"] += int(is_digit.sum())
        counts["other"] += int((~is_digit).sum())
    total, n = sums["digit"] + sums["other"], counts["digit"] + counts["other"]
    if n == 0:
        raise AntidistillError("the traces have no completion tokens: check the holdout traces file")
    return {
        "proxy_nll_digit_share": sums["digit"] / total if total > 0 else None,
        "proxy_nll_digit_mean": sums["digit"] / counts["digit"] if counts["digit"] else None,
        "proxy_nll_other_mean": sums["other"] / counts["other"] if counts["other"] else None,
        "proxy_nll_mean": total / n,
        "digit_position_share": counts["digit"] / n,
        "n_digit_positions": counts["digit"],
        "n_other_positions": counts["other"],
    }


# ---------------------------------------------------------------------------------------------- sampler distributions

def _check_sampler(spec: Mapping[str, Any], top_p: float) -> dict[str, Any]:
    from harness_plugin.sampling import SamplerConfig

    row = {"sampler": spec["sampler"], "tau": float(spec["tau"]), "lam": float(spec.get("lam", 0.0)),
           "eps": float(spec.get("eps", DELTA_EPS))}
    SamplerConfig(sampler=row["sampler"], tau=row["tau"], lam=row["lam"], eps=row["eps"], top_p=top_p)
    return row


def _tilted(spec: Mapping[str, Any]) -> bool:
    return spec["sampler"] in ("ads", "permutation") and spec["lam"] > 0


def greedy_token_probability(teacher_logp: torch.Tensor, greedy: torch.Tensor, tau: float, top_p: float,
                             tilt: torch.Tensor | None = None) -> torch.Tensor:
    """q(greedy token) for q = top-p(softmax(log p_T / τ + tilt)), per row; τ = 0 is greedy decoding (one-hot).

    The same distribution `harness_plugin.generate` samples from: the processors' tilt, then transformers'
    own top-p warper (HF applies it after the logits processors).
    """
    if tau == 0:
        return (teacher_logp.argmax(dim=-1) == greedy).to(torch.float32)
    from transformers import TopPLogitsWarper

    scores = teacher_logp / tau if tilt is None else teacher_logp / tau + tilt
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)  # type: ignore[arg-type]
    return torch.softmax(scores, dim=-1).gather(-1, greedy[:, None])[:, 0]


def _permuters(specs: Sequence[Mapping[str, Any]], vocab: int, seed: int) -> dict[int, list[Any]]:
    """The permutation control's own permute-and-sign-flip, PERMUTATION_DRAWS seeded draws per sampler row."""
    from harness_plugin.sampling import PermutationLogitsProcessor

    return {index: [PermutationLogitsProcessor(None, 0.0, max(spec["tau"], 1e-6), vocab, seed=seed + 1000 * index + k)
                    for k in range(PERMUTATION_DRAWS)]
            for index, spec in enumerate(specs) if spec["sampler"] == "permutation" and spec["lam"] > 0}


def expected_deviations(teacher_logp: torch.Tensor, greedy: torch.Tensor, spec: Mapping[str, Any], top_p: float,
                        delta: torch.Tensor | None = None, permuters: Sequence[Any] = ()) -> torch.Tensor:
    """1 − q(greedy token) per position under one sampler (float32 [N]); for permutation the mean over draws."""
    if not _tilted(spec):
        return 1.0 - greedy_token_probability(teacher_logp, greedy, spec["tau"], top_p)
    if delta is None:
        raise AntidistillError(f"sampler {spec['sampler']} with lam > 0 needs Δ")
    if spec["sampler"] == "ads":
        return 1.0 - greedy_token_probability(teacher_logp, greedy, spec["tau"], top_p, spec["lam"] * delta)
    if not permuters:
        raise AntidistillError("the permutation sampler's expectation needs its permutation draws")
    keep = [greedy_token_probability(teacher_logp, greedy, spec["tau"], top_p, spec["lam"] * p.permute(delta))
            for p in permuters]
    return 1.0 - torch.stack(keep).mean(dim=0)


@torch.no_grad()
def teacher_forced_diagnostics(teacher: torch.nn.Module, proxy: torch.nn.Module, tokenizer: Any,
                               traces: Sequence[Mapping[str, Any]], gradient: ProxyGradient,
                               samplers: Sequence[Mapping[str, Any]], *, batch_size: int = 32, top_k: int = 20,
                               top_p: float = 0.95, seed: int = 0, digit_mask: torch.Tensor | None = None,
                               progress: bool = True) -> dict[str, Any]:
    """Teacher entropy, Δ's spread over the teacher's top-k, and each sampler's expected deviations, per position.

    Everything is teacher-forced on `traces` (greedy teacher traces): at each completion position the greedy
    token is the trace's own token. Δ is computed at ε = 0.01 for the spread and at each sampler's own ε.
    """
    from harness_plugin.vocab import real_vocab_size

    vocab = real_vocab_size(tokenizer)
    digit_mask = digit_token_mask(tokenizer, vocab) if digit_mask is None else digit_mask
    specs = [dict(s) for s in samplers]
    proxy = _fp32(proxy)
    eps_values = sorted({DELTA_EPS} | {s["eps"] for s in specs if _tilted(s)})
    parameters = {eps: perturbed_parameters(proxy, gradient, eps) for eps in eps_values}
    permuters = _permuters(specs, vocab, seed)
    encoded = [encode_for_diagnostics(tokenizer, t) for t in traces]
    t_device, pad = _device(teacher), _pad_id(tokenizer)
    entropy: dict[str, list[float]] = {"digit": [], "other": []}
    spread: dict[str, list[float]] = {"digit": [], "other": []}
    deviations = [{"digit": 0.0, "other": 0.0} for _ in specs]
    for _, batch in _batches(encoded, batch_size, "teacher-forced diagnostics", progress):
        ids, mask, target = _right_pad(batch, pad, t_device)
        logits = teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1, :vocab]
        teacher_logp = torch.log_softmax(logits.float(), dim=-1)[target]  # [N, vocab]
        greedy = ids[:, 1:][target]
        is_digit = digit_mask.to(t_device)[greedy]
        position_entropy = -(teacher_logp.exp() * teacher_logp).sum(-1)
        deltas = {eps: finite_difference_delta(proxy, gradient, ids, mask, eps, vocab, parameters[eps])[:, :-1]
                  [target.to(_device(proxy))].to(t_device) for eps in eps_values}
        top = teacher_logp.topk(min(top_k, vocab), dim=-1).indices
        position_spread = deltas[DELTA_EPS].gather(-1, top).std(dim=-1, correction=0)
        for kind, rows in (("digit", is_digit), ("other", ~is_digit)):
            entropy[kind] += position_entropy[rows].tolist()
            spread[kind] += position_spread[rows].tolist()
        for index, spec in enumerate(specs):
            delta = deltas[spec["eps"]] if _tilted(spec) else None
            dev = expected_deviations(teacher_logp, greedy, spec, top_p, delta, permuters.get(index, ()))
            deviations[index]["digit"] += float(dev[is_digit].double().sum())
            deviations[index]["other"] += float(dev[~is_digit].double().sum())
    n = max(1, len(encoded))
    other = entropy["other"]
    all_spread = spread["digit"] + spread["other"]
    return {
        "n_forced": len(encoded),
        "n_forced_positions": len(entropy["digit"]) + len(other),
        "teacher_entropy_digit_mean": _mean(entropy["digit"]),
        "teacher_entropy_other_mean": _mean(other),
        "other_positions_entropy_ge_0_3": (sum(h >= ENTROPY_THRESHOLD for h in other) / len(other)) if other else None,
        "delta_top20_std_median": statistics.median(all_spread) if all_spread else None,
        "delta_top20_std_median_digit": statistics.median(spread["digit"]) if spread["digit"] else None,
        "delta_top20_std_median_other": statistics.median(spread["other"]) if spread["other"] else None,
        "expected_deviations": [{"digit": d["digit"] / n, "other": d["other"] / n} for d in deviations],
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------- sampled traces

def _deviates(completion: str, finished: bool, greedy: str, greedy_finished: bool) -> bool:
    """Whether a sampled completion differs from the greedy one (a cut-off prefix of the other does not count)."""
    if completion == greedy:
        return False
    if not finished and greedy.startswith(completion):
        return False
    return not (not greedy_finished and completion.startswith(greedy))


def sampled_diagnostics(teacher: Any, proxy: Any, tokenizer: Any, traces: Sequence[Mapping[str, Any]],
                        gradient: ProxyGradient, spec: Mapping[str, Any], *, top_p: float = 0.95,
                        max_new_tokens: int = 96, batch_size: int = 32, seed: int = 0, dataset: str = "gsm8k",
                        penalty: Any = None, progress: bool = True) -> dict[str, Any]:
    """Sample each trace's prompt with one sampler; accuracy, how often it left the greedy trace, and whether the
    answer survived when it did."""
    from harness_plugin import AntidistillationPenalty, generate
    from harness_plugin.answers import score
    from harness_plugin.vocab import real_vocab_size

    if penalty is None and _tilted(spec):
        penalty = AntidistillationPenalty(proxy, gradient, eps=spec["eps"], vocab_size=real_vocab_size(tokenizer))
    sampled = generate(teacher, tokenizer, [t["prompt"] for t in traces], sampler=spec["sampler"], tau=spec["tau"],
                       lam=spec["lam"], eps=spec["eps"], top_p=top_p, penalty=penalty if _tilted(spec) else None,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress)
    correct = [score(s.completion, str(t["reference"]), dataset) for s, t in zip(sampled, traces)]
    deviated = [_deviates(s.completion, s.finished, str(t["completion"]), t.get("finished", True) is not False)
                for s, t in zip(sampled, traces)]
    n_deviated = sum(deviated)
    survived = sum(c for c, d in zip(correct, deviated) if d)
    return {"accuracy": sum(correct) / len(sampled), "deviated_share": n_deviated / len(sampled),
            "answer_survives": survived / n_deviated if n_deviated else None, "n_sampled": len(sampled)}


# ---------------------------------------------------------------------------------------------- the whole report

def diagnose(teacher, proxy, tokenizer, traces: list[dict], gradient: ProxyGradient | None, samplers: list[dict],
             *, n_forced: int = 64, n_sampled: int = 64, batch_size: int = 32, top_k: int = 20, top_p: float = 0.95,
             max_new_tokens: int = 96, seed: int = 0, progress: bool = True, dataset: str = "gsm8k") -> dict:
    """All diagnostics on greedy teacher traces of holdout problems ({"prompt", "completion", "reference"}).

    `gradient` None: g is computed from `traces` (from its two halves, which the split-half cosine needs anyway).
    `samplers`: {"sampler": "temperature"|"ads"|"permutation", "tau", "lam", "eps"} dicts. The result is plain
    JSON (numbers, None, lists and dicts).
    """
    if not traces:
        raise AntidistillError("diagnostics need greedy teacher traces of holdout problems; none were given")
    for index, trace in enumerate(traces):
        if not isinstance(trace.get("prompt"), str) or not isinstance(trace.get("completion"), str):
            raise AntidistillError(f"trace {index} needs string fields 'prompt' and 'completion'")
    if n_sampled > 0 and any("reference" not in t for t in traces[:n_sampled]):
        raise AntidistillError("the sampled diagnostics score answers: every trace needs its gold 'reference'")
    specs = [_check_sampler(s, top_p) for s in samplers]
    proxy32 = _fp32(proxy)
    digits = digit_token_mask(tokenizer)

    if len(traces) >= 2:
        even, odd = split_half_gradients(proxy32, tokenizer, traces, batch_size, progress)
        cosine: float | None = gradient_cosine(even.tensors, odd.tensors)
        if gradient is None:
            gradient = combine_halves(even, odd)
        del even, odd
    else:
        cosine = None
        if gradient is None:
            gradient = ProxyGradient.compute(proxy32, tokenizer, traces, batch_size=batch_size, progress=progress)
    gradient.check_matches(proxy32)
    norm = gradient_norm(gradient.tensors)

    result: dict[str, Any] = {
        "grad_norm": norm,
        "n_traces": len(traces),
        "n_tokens": int(sum(encode_trace(tokenizer, t["prompt"], t["completion"]).completion_length for t in traces)),
        "split_half_cosine": cosine,
        "split_half_cosine_expected_full": spearman_brown(cosine) if cosine is not None else None,
        "split_half_cosine_expected_full_note": "Spearman-Brown estimate 2c/(1+c), not a measurement",
    }
    result.update(proxy_nll_by_position(proxy32, tokenizer, traces, batch_size, digits, progress))
    forced = teacher_forced_diagnostics(teacher, proxy32, tokenizer, traces[:n_forced], gradient, specs,
                                        batch_size=batch_size, top_k=top_k, top_p=top_p, seed=seed,
                                        digit_mask=digits, progress=progress)
    expected = forced.pop("expected_deviations")
    result.update(forced)
    spread = result["delta_top20_std_median"]
    rows, tilts = [], {}
    penalties: dict[float, Any] = {}
    for spec, dev in zip(specs, expected):
        row: dict[str, Any] = {**spec, "expected_deviations_digit": dev["digit"],
                               "expected_deviations_other": dev["other"]}
        tilted = spec["sampler"] in ("ads", "permutation")
        row["tilt_nats"] = spec["lam"] * spread if tilted and spread is not None else None
        if tilted:
            tilts[sampler_label(spec)] = row["tilt_nats"]
        if n_sampled > 0:
            penalty = None
            if _tilted(spec):
                if spec["eps"] not in penalties:
                    from harness_plugin import AntidistillationPenalty
                    from harness_plugin.vocab import real_vocab_size

                    penalties[spec["eps"]] = AntidistillationPenalty(proxy32, gradient, eps=spec["eps"],
                                                                     vocab_size=real_vocab_size(tokenizer))
                penalty = penalties[spec["eps"]]
            row.update(sampled_diagnostics(teacher, proxy32, tokenizer, traces[:n_sampled], gradient, spec,
                                           top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                           seed=seed, dataset=dataset, penalty=penalty, progress=progress))
        else:
            row.update({"accuracy": None, "deviated_share": None, "answer_survives": None, "n_sampled": 0})
        rows.append(row)
    if n_sampled > 0:
        from harness_plugin.answers import score

        subset = traces[:n_sampled]
        result["greedy_accuracy"] = sum(score(t["completion"], str(t["reference"]), dataset) for t in subset) / len(subset)
    result["samplers"] = rows
    result["tilt_nats"] = tilts
    result["settings"] = {"n_forced": n_forced, "n_sampled": n_sampled, "top_k": top_k, "top_p": top_p,
                          "max_new_tokens": max_new_tokens, "seed": seed, "delta_eps": DELTA_EPS,
                          "entropy_threshold_nats": ENTROPY_THRESHOLD, "permutation_draws": PERMUTATION_DRAWS,
                          "gradient_traces": gradient.metadata.get("num_traces"),
                          "gradient_tokens": gradient.metadata.get("num_tokens")}
    result["targets"] = _targets(result)
    return _plain(result)


def sampler_label(spec: Mapping[str, Any]) -> str:
    if spec["sampler"] == "temperature":
        return "greedy" if spec["tau"] == 0 else f"temperature tau={spec['tau']:g}"
    return f"{spec['sampler']} tau={spec['tau']:g} lam={spec['lam']:g} eps={spec['eps']:g}"


def _targets(result: Mapping[str, Any]) -> dict[str, Any]:
    targets = {}
    for key, threshold in TARGETS.items():
        value = result.get(key)
        targets[key] = {"target": f">= {threshold:g}", "value": value,
                        "pass": None if value is None else bool(value >= threshold)}
    return targets


def _plain(value: Any) -> Any:
    """JSON-safe: floats that are NaN/inf become None, tensors and numpy scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------- text report

def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _mark(target: Mapping[str, Any]) -> str:
    return "n/a" if target["pass"] is None else ("pass" if target["pass"] else "FAIL")


def format_diagnostics(d: Mapping[str, Any]) -> str:
    """A short report: one line per diagnostic, targets marked pass/FAIL, and a table of the samplers."""
    targets = d.get("targets", {})
    cosine_target = targets.get("split_half_cosine", {"pass": None, "target": ">= 0.8"})
    entropy_target = targets.get("other_positions_entropy_ge_0_3", {"pass": None, "target": ">= 0.3"})
    share = d.get("other_positions_entropy_ge_0_3")
    lines = [
        f"proxy gradient: |g| = {_fmt(d.get('grad_norm'), '.4g')} over {d.get('n_traces')} traces "
        f"({d.get('n_tokens')} completion tokens)",
        f"split-half cosine of g: {_fmt(d.get('split_half_cosine'))} (full-set estimate "
        f"{_fmt(d.get('split_half_cosine_expected_full'))}) [target {cosine_target['target']}: "
        f"{_mark(cosine_target)}]",
        f"proxy NLL on digit tokens: {_fmt(_pct(d.get('proxy_nll_digit_share')), '.1f')}% of the total; digits are "
        f"{_fmt(_pct(d.get('digit_position_share')), '.1f')}% of completion tokens; mean NLL digit "
        f"{_fmt(d.get('proxy_nll_digit_mean'))}, other {_fmt(d.get('proxy_nll_other_mean'))} nats",
        f"teacher entropy (tau=1, {d.get('n_forced')} traces): digit {_fmt(d.get('teacher_entropy_digit_mean'))}, "
        f"other {_fmt(d.get('teacher_entropy_other_mean'))} nats; other positions with entropy >= "
        f"{ENTROPY_THRESHOLD:g}: {_fmt(_pct(share), '.1f')}% [target >= {100 * TARGETS['other_positions_entropy_ge_0_3']:.0f}%: "
        f"{_mark(entropy_target)}]",
        f"delta spread (median std over the teacher's top-{d.get('settings', {}).get('top_k', 20)}): "
        f"{_fmt(d.get('delta_top20_std_median'), '.4g')} (digit {_fmt(d.get('delta_top20_std_median_digit'), '.4g')}, "
        f"other {_fmt(d.get('delta_top20_std_median_other'), '.4g')})",
    ]
    if d.get("greedy_accuracy") is not None:
        lines.append(f"greedy accuracy on the sampled prompts: {100 * d['greedy_accuracy']:.1f}%")
    rows = d.get("samplers", [])
    if rows:
        header = (f"{'sampler':<40} {'tilt':>7} {'dev/trace digit':>15} {'other':>7} {'accuracy':>8} "
                  f"{'deviated':>8} {'survives':>8} {'n':>4}")
        lines += ["", header]
        for row in rows:
            lines.append(
                f"{sampler_label(row):<40} {_fmt(row.get('tilt_nats'), '.3g'):>7} "
                f"{_fmt(row.get('expected_deviations_digit'), '.3f'):>15} "
                f"{_fmt(row.get('expected_deviations_other'), '.3f'):>7} {_fmt(_pct(row.get('accuracy')), '.1f'):>8} "
                f"{_fmt(_pct(row.get('deviated_share')), '.1f'):>8} {_fmt(_pct(row.get('answer_survives')), '.1f'):>8} "
                f"{row.get('n_sampled', 0):>4}")
        lines.append("dev/trace: expected deviations from the greedy token per trace (teacher-forced); tilt: "
                     "lam x delta spread, in nats; accuracy, deviated and survives in %")
    return "\n".join(lines)


def _pct(value: Any) -> float | None:
    return None if value is None else 100 * value


# ---------------------------------------------------------------------------------------------- run folders

def _run_config(run_dir: Path) -> Any:
    import yaml

    from .config import BenchConfig, ConfigError

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a benchmark run folder (no config.yaml): give the --output folder of "
                          "`antidistill bench run` (default runs/<preset>)")
    saved = yaml.safe_load(path.read_text()) or {}
    if not isinstance(saved, dict) or "preset" not in saved:
        raise ConfigError(f"{path} is not a saved benchmark config (no 'preset'): give a folder made by "
                          "`antidistill bench run`")
    # the saved, resolved settings over the current base and preset: settings added since then get defaults
    return BenchConfig.load(str(saved["preset"]), path)


def _run_models(config: Any) -> dict[str, Any]:
    """Model locations as `Workbench.world()` resolves them, without loading the data splits."""
    models = dict(config["models"])
    if config["dataset"] == "toy" and not all(models[role] for role in ("teacher", "proxy")):
        from .toy_world import build_toy_world

        world = build_toy_world(preset=config["toy_world"])
        built = {"teacher": world.teacher_dir, "proxy": world.proxy_dir, "student": world.student_dir}
        models.update({role: str(path) for role, path in built.items() if not models[role]})
    return models


def run_samplers(config: Any, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """The run's grid points as sampler dicts; calibrated points with their knobs from the run's calibration.json
    (left out while the run has not calibrated them yet)."""
    from .calibration import calibrated_entries, with_calibrated_knob

    calibrated = calibrated_entries(run_dir) if run_dir is not None else {}
    points = []
    for point in config.grid:
        if point.target is not None:
            entry = calibrated.get(point.name)
            if entry is None:
                continue
            point = with_calibrated_knob(point, entry)
        points.append({"sampler": point.short_sampler, "tau": point.tau, "lam": point.lam, "eps": point.eps})
    return points


def diagnose_run(run_dir: Path, samplers: list[dict] | None = None, **kw: Any) -> dict:
    """Diagnostics for a folder made by `antidistill bench run`, written to `run_dir/diagnostics.json`.

    Uses the run's greedy holdout traces and saved gradient; samplers default to the run's grid points, and
    top-p, token budget, batch size and seed to the run's generation settings (`kw` overrides any of them).
    """
    from harness_plugin.io import atomic_write_text, read_jsonl
    from harness_plugin.loading import load_model, load_tokenizer
    from harness_plugin.vocab import check_same_tokenizer

    from .config import ConfigError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder: give the --output folder of `antidistill bench run`")
    config = _run_config(run_dir)
    traces_path, gradient_dir = run_dir / "holdout_traces.jsonl", run_dir / "gradient"
    if not traces_path.is_file():
        raise ConfigError(f"{run_dir} has no holdout traces yet: run `antidistill bench run --output {run_dir} "
                          "--stop-after gradient` (with the run's preset and settings) first")
    if not (gradient_dir / "gradient.safetensors").is_file():
        raise ConfigError(f"{run_dir} has no proxy gradient yet: run `antidistill bench run --output {run_dir} "
                          "--stop-after gradient` (with the run's preset and settings) first")
    traces = read_jsonl(traces_path)
    if not traces:
        raise ConfigError(f"{traces_path} is empty: delete it and rerun `antidistill bench run --output {run_dir}`")
    models = _run_models(config)
    trust = bool(models["trust_remote_code"])
    tokenizer = load_tokenizer(models["teacher"], trust_remote_code=trust)
    check_same_tokenizer(tokenizer, load_tokenizer(models["proxy"], trust_remote_code=trust), models["teacher"],
                         models["proxy"])
    teacher = load_model(models["teacher"], dtype="float32", trust_remote_code=trust)
    proxy = load_model(models["proxy"], dtype="float32", trust_remote_code=trust)
    gradient = ProxyGradient.load(gradient_dir, proxy=proxy)
    generation = config["generation"]
    if generation["top_k"]:
        import warnings

        warnings.warn(f"the run samples with top_k={generation['top_k']}, which the diagnostics leave out (they use "
                      "top-p only)", stacklevel=2)
    settings: dict[str, Any] = {"top_p": generation["top_p"], "max_new_tokens": generation["max_new_tokens"],
                                "batch_size": generation["batch_size"], "seed": generation["seed"],
                                "dataset": config.answer_dataset}
    settings.update(kw)
    result = diagnose(teacher, proxy, tokenizer, traces, gradient,
                      samplers if samplers is not None else run_samplers(config, run_dir), **settings)
    result["run_dir"] = str(run_dir.resolve())
    atomic_write_text(run_dir / DIAGNOSTICS_FILE, json.dumps(result, indent=2) + "\n")
    return result
