"""The proxy gradient g = ∇ℓ(θ_P), computed once and saved for every later generation.

ℓ is the proxy's mean next-token NLL over all completion tokens of teacher traces (the total NLL divided by the
total number of supervised tokens, so the batch size does not change g). Under torch.distributed every rank
handles a shard, divides by the *global* token count and the shards are summed, so the saved g equals the
single-process g (the reference code divides it by the world size by mistake, which makes λ depend on GPU count).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import AntidistillError, GradientMismatchError
from .io import atomic_directory, sha256_of_records
from .names import LOSS_TOKENS
from .tokens import EncodedTrace, encode_trace

TENSORS_FILE = "gradient.safetensors"
METADATA_FILE = "gradient.json"
FORMAT_VERSION = 1
LOSS_CONVENTION = "sum of completion-token NLL / total completion tokens (prompt masked by token length, EOS supervised)"
_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed()[1] > 1:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def _model_identity(model: PreTrainedModel) -> tuple[str, str | None]:
    config = model.config
    return str(getattr(config, "_name_or_path", "") or type(model).__name__), getattr(config, "_commit_hash", None)


_FINGERPRINT_TENSORS = 32  # the first and the last this many parameters, by name
_FINGERPRINT_VALUES = 16  # evenly spaced values from each
# bf16 keeps about 3 significant digits: the same weights loaded in another dtype differ by about 0.4% per value,
# other weights (another checkpoint, a fine-tune) by tens of percent.
_FINGERPRINT_RTOL = 0.02


def weights_fingerprint(model: torch.nn.Module) -> list[list[float]]:
    """A few fixed weights from each of some parameters of `model`: enough to tell checkpoints of one shape apart.

    Why values, not a hash: the gradient is often computed on an fp32 proxy and used with a bf16 one; a hash
    would call them different, a relative comparison per tensor (`same_weights`) does not.
    """
    named = sorted((_strip_prefixes(n), p) for n, p in model.named_parameters())
    if len(named) > 2 * _FINGERPRINT_TENSORS:
        named = named[:_FINGERPRINT_TENSORS] + named[-_FINGERPRINT_TENSORS:]
    out: list[list[float]] = []
    with torch.no_grad():
        for _, param in named:
            flat = param.detach().reshape(-1)
            index = torch.linspace(0, flat.numel() - 1, min(_FINGERPRINT_VALUES, flat.numel())).long()
            out.append(flat[index.to(flat.device)].float().cpu().tolist())
    return out


def same_weights(recorded: Sequence[Sequence[float]], current: Sequence[Sequence[float]]) -> bool:
    """True when every tensor's sampled values agree within bf16 rounding, relative to that tensor's size.

    Per tensor, because norm weights near 1 would hide changed matrices near 0.02 in one overall comparison.
    """
    if len(recorded) != len(current):
        return False
    for old, new in zip(recorded, current):
        if len(old) != len(new):
            return False
        a, b = torch.tensor(list(old), dtype=torch.float64), torch.tensor(list(new), dtype=torch.float64)
        if not bool(torch.isfinite(b).all()) or float((a - b).norm()) > _FINGERPRINT_RTOL * float(a.norm()) + 1e-9:
            return False
    return True


def _supervised_ids(tokenizer: PreTrainedTokenizerBase, encoded: Sequence[EncodedTrace],
                    loss_tokens: str) -> set[int] | None:
    """The token ids ℓ is computed on (None: every completion token, the paper's `all`).

    `digits` keeps the completion tokens with a digit in them: on the toy world, ℓ over every token was mostly
    optional wording, and the tilt learnt to drop that wording (README, results on world v4).
    """
    if loss_tokens == "all":
        return None
    if loss_tokens != "digits":
        raise AntidistillError(f"loss_tokens must be one of {', '.join(LOSS_TOKENS)}, got {loss_tokens!r}")
    present = {i for t in encoded for i in t.input_ids[t.prompt_length:]}
    return {i for i in present if any(ch.isdigit() for ch in tokenizer.decode([i]))}


def _pad_batch(batch: Sequence[EncodedTrace], pad_id: int, keep: set[int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels with prompt, padding (and tokens not in `keep`) set to -100."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, trace in enumerate(batch):
        n = len(trace.input_ids)
        ids[row, :n] = torch.tensor(trace.input_ids)
        mask[row, :n] = 1
        labels[row, trace.prompt_length : n] = ids[row, trace.prompt_length : n]
        if keep is not None:
            for position in range(trace.prompt_length, n):
                if trace.input_ids[position] not in keep:
                    labels[row, position] = -100
    return ids, mask, labels


@dataclass
class ProxyGradient:
    """g = ∇ℓ(θ_P) by parameter name (fp32), with the metadata needed to trust it later."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    # The proxy the last check_matches passed for: loading with a proxy checks, and the penalty built from the
    # loaded object then finds it done instead of reading the weights again.
    _checked_for: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def norm(self) -> float:
        return float(self.metadata.get("norm") or _global_norm(self.tensors))

    @classmethod
    def compute(
        cls,
        proxy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        traces: Sequence[Mapping[str, str]],
        batch_size: int = 8,
        max_length: int | None = None,
        progress: bool = True,
        loss_tokens: str = "all",
    ) -> ProxyGradient:
        """Accumulate ∇ of the mean completion-token NLL over `traces` ({"prompt", "completion"} mappings).

        `loss_tokens="digits"` restricts ℓ to completion tokens with a digit in them (see `LOSS_TOKENS`).
        """
        if not traces:
            raise AntidistillError("no traces given: the proxy gradient needs teacher traces of a holdout split.")
        if batch_size < 1:
            raise AntidistillError(f"batch_size must be >= 1, got {batch_size}")
        for index, trace in enumerate(traces):
            if not isinstance(trace.get("prompt"), str) or not isinstance(trace.get("completion"), str):
                raise AntidistillError(f"trace {index} needs string fields 'prompt' and 'completion'")
        rank, world = _distributed()
        encoded = [encode_trace(tokenizer, t["prompt"], t["completion"], max_length=max_length) for t in traces]
        keep = _supervised_ids(tokenizer, encoded, loss_tokens)
        total_tokens = int(sum(t.completion_length for t in encoded)) if keep is None else sum(
            1 for t in encoded for i in t.input_ids[t.prompt_length:] if i in keep)
        if total_tokens == 0:
            raise AntidistillError(
                f"none of the {len(traces)} traces has a completion token to supervise (all completions empty or "
                f"truncated away, or none of loss_tokens={loss_tokens!r}): check the traces file and max_length."
            )
        model = proxy if next(proxy.parameters()).dtype == torch.float32 else copy.deepcopy(proxy).float()
        was_training = model.training
        model.eval()
        model.zero_grad(set_to_none=True)
        device = next(model.parameters()).device
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        shard = encoded[rank::world]
        batches = [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
        total_loss = torch.zeros((), dtype=torch.float64)
        for batch in tqdm(batches, desc="proxy gradient", unit="batch", disable=not progress or rank != 0):
            ids, mask, labels = (t.to(device) for t in _pad_batch(batch, pad_id, keep))
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum"
            )
            (nll / total_tokens).backward()
            total_loss += nll.detach().double().cpu()
        tensors: dict[str, torch.Tensor] = {}
        for name, parameter in model.named_parameters():
            grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            tensors[name] = _all_reduce_sum(grad.detach().float().clone()).cpu()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        loss = float(_all_reduce_sum(total_loss.to(device)).item()) / total_tokens
        name, revision = _model_identity(proxy)
        metadata = {
            "format_version": FORMAT_VERSION,
            "norm": _global_norm(tensors),
            "loss": loss,
            "loss_convention": LOSS_CONVENTION,
            "loss_tokens": loss_tokens,
            "num_tokens": total_tokens,
            "num_traces": len(traces),
            "traces_sha256": sha256_of_records([[t["prompt"], t["completion"]] for t in traces]),
            "proxy_name": name,
            "proxy_revision": revision,
            "proxy_class": type(proxy).__name__,
            "proxy_fingerprint": weights_fingerprint(proxy),
            "dtype": "float32",
            "world_size": world,
            "max_length": max_length,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return cls(tensors, metadata)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `gradient.safetensors` and `gradient.json` into `directory`, atomically."""
        with atomic_directory(directory) as tmp:
            save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp / TENSORS_FILE))
            (tmp / METADATA_FILE).write_text(json.dumps(self.metadata, indent=2) + "\n")
        return Path(directory)

    @staticmethod
    def check_files(directory: str | os.PathLike[str]) -> Path:
        """Raise `GradientMismatchError` unless `directory` holds both files of a saved gradient (cheap: no load)."""
        directory = Path(directory)
        missing = [name for name in (TENSORS_FILE, METADATA_FILE) if not (directory / name).is_file()]
        if missing:
            raise GradientMismatchError(
                f"no proxy gradient at {directory} (missing {', '.join(missing)}). Compute one with "
                "`antidistill gradient --proxy MODEL --traces TRACES.jsonl --output DIR`."
            )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], proxy: torch.nn.Module | None = None) -> ProxyGradient:
        """Load a saved gradient; with `proxy`, check that it was computed for that proxy.

        The norm is computed from the tensors, never taken from the JSON: a zeroed or NaN gradient whose file
        still records a finite norm would sample "antidistillation" traces with no tilt, or fail later with a
        misleading message.
        """
        directory = cls.check_files(directory)
        tensors_path, metadata_path = directory / TENSORS_FILE, directory / METADATA_FILE
        try:
            metadata = json.loads(metadata_path.read_text())
            if not isinstance(metadata, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as error:
            raise GradientMismatchError(f"{metadata_path} is not a gradient's metadata ({error}): recompute the "
                                        "gradient with `antidistill gradient`") from None
        try:
            tensors = {_strip_prefixes(k): v.float() for k, v in load_file(str(tensors_path)).items()}
        except Exception as error:  # safetensors raises its own error types for truncated or foreign files
            raise GradientMismatchError(f"{tensors_path} is not a readable safetensors file ({error}): recompute "
                                        "the gradient with `antidistill gradient`") from None
        bad = sorted(name for name, t in tensors.items() if not bool(torch.isfinite(t).all()))
        if bad:
            raise GradientMismatchError(f"the proxy gradient at {directory} has NaN or inf values in {len(bad)} "
                                        f"tensors (e.g. {bad[:3]}): recompute it")
        gradient = cls(tensors, {**metadata, "norm": _global_norm(tensors)})
        if proxy is not None:
            gradient.check_matches(proxy, source=str(directory))
        if gradient.norm == 0.0:
            raise GradientMismatchError(
                f"the proxy gradient at {directory} is zero: recompute it on other traces."
            )
        return gradient

    @staticmethod
    def is_saved_folder(path: Path) -> bool:
        """True for a folder holding only a saved gradient's files (an earlier `antidistill gradient` output)."""
        return path.is_dir() and not path.is_symlink() and {p.name for p in path.iterdir()} <= {
            TENSORS_FILE, METADATA_FILE} and (path / TENSORS_FILE).is_file()

    def check_matches(self, proxy: torch.nn.Module, source: str = "the gradient") -> None:
        """Raise `GradientMismatchError` unless every proxy parameter has a gradient of the same shape, and the
        proxy's weights are those the gradient was computed for (when the file records them; older files do not).
        Once per proxy object: a second call for the same proxy returns at once."""
        if self._checked_for is not None and self._checked_for() is proxy:
            return
        expected = {_strip_prefixes(n): tuple(p.shape) for n, p in proxy.named_parameters()}
        given = {n: tuple(t.shape) for n, t in self.tensors.items()}
        missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        wrong = sorted(n for n in set(expected) & set(given) if expected[n] != given[n])
        proxy_name = getattr(getattr(proxy, "config", None), "_name_or_path", type(proxy).__name__)
        if missing or extra or wrong:
            details = []
            if missing:
                details.append(f"{len(missing)} proxy parameters have no gradient (e.g. {missing[:3]})")
            if extra:
                details.append(f"{len(extra)} gradient tensors match no parameter (e.g. {extra[:3]})")
            if wrong:
                n = wrong[0]
                details.append(f"{len(wrong)} shapes differ (e.g. {n}: {given[n]} vs {expected[n]})")
            raise GradientMismatchError(
                f"{source} was computed for {self.metadata.get('proxy_name', 'another model')!r}, not for the proxy "
                f"{proxy_name!r}: {'; '.join(details)}. Recompute it for this proxy with `antidistill gradient`."
            )
        recorded = self.metadata.get("proxy_fingerprint")
        if recorded is not None and not same_weights(recorded, weights_fingerprint(proxy)):
            raise GradientMismatchError(
                f"{source} was computed for a proxy with other weights ({self.metadata.get('proxy_name')!r}) than "
                f"the proxy in use ({proxy_name!r}); the shapes match, the checkpoints do not. Recompute it for this "
                "proxy with `antidistill gradient`, or point to the proxy it was computed for."
            )
        self._checked_for = weakref.ref(proxy)


def _global_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors.values())))  # type: ignore[arg-type]
