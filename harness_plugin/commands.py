"""`antidistill gradient` and `antidistill generate`: the library's two command-line entry points."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import AntidistillError
from .names import LOSS_TOKENS, PENALTY_METHODS, SAMPLERS


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--revision", default=None, help="hub revision of the models")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow model code from the hub to run (off by default: only for models you trust)")


def register_gradient(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gradient", help="compute the proxy gradient g = ∇ℓ(θ_P) on teacher traces",
        description="Compute g, the gradient of the proxy's mean completion-token NLL on teacher traces of a "
                    "holdout split (fp32), and save it as safetensors + JSON metadata. Works under "
                    "`accelerate launch --num_processes N` (the result equals the single-process one).")
    parser.add_argument("--proxy", required=True, help="proxy model: hub name or local folder")
    parser.add_argument("--traces", required=True, type=Path,
                        help='jsonl, one {"prompt": ..., "completion": ...} per line; the prompt is the exact '
                             "model input (chat template applied)")
    parser.add_argument("--output", required=True, type=Path,
                        help="folder to write the gradient into: new, or an earlier gradient folder (replaced)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None, help="truncate traces to this many tokens")
    parser.add_argument("--loss-tokens", choices=LOSS_TOKENS, default="all",
                        help="completion tokens the proxy's NLL covers: all (the paper's, default) or digits only")
    _add_model_options(parser)
    parser.set_defaults(func=run_gradient)


def run_gradient(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .gradient import ProxyGradient
    from .io import check_output, read_jsonl
    from .loading import load_model, load_tokenizer

    traces = read_jsonl(args.traces)
    if not traces:
        raise AntidistillError(f"--traces {args.traces} holds no traces: give a jsonl of teacher traces")
    check_output(args.output, "--output", ProxyGradient.is_saved_folder)
    state = PartialState(cpu=args.device == "cpu")
    device = args.device or state.device
    tokenizer = load_tokenizer(args.proxy, args.revision, args.trust_remote_code)
    proxy = load_model(args.proxy, dtype="float32", device=device, revision=args.revision,
                       trust_remote_code=args.trust_remote_code)
    gradient = ProxyGradient.compute(proxy, tokenizer, traces, batch_size=args.batch_size,
                                     max_length=args.max_length, progress=state.is_main_process,
                                     loss_tokens=args.loss_tokens)
    if state.is_main_process:
        gradient.save(args.output)
        meta = gradient.metadata
        print(f"proxy gradient: ‖g‖ = {meta['norm']:.4g}, loss {meta['loss']:.4f} over {meta['num_tokens']} tokens "
              f"of {meta['num_traces']} traces -> {args.output.resolve()}")
    state.wait_for_everyone()
    return 0


def register_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="sample traces from a teacher (antidistillation, permutation or temperature)",
        description="Sample one completion per prompt. Each output line holds the prompt, the completion, its "
                    "token ids, the teacher's log-prob of every token and the sampler settings. λ is the paper's "
                    "λ: the reference code's λ_code equals τ·λ.")
    parser.add_argument("--teacher", required=True, help="teacher model: hub name or local folder")
    parser.add_argument("--proxy", default=None, help="proxy model sharing the teacher's tokenizer (ads, permutation)")
    parser.add_argument("--gradient", type=Path, default=None, help="folder written by `antidistill gradient`")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ads")
    parser.add_argument("--lam", type=float, default=0.0, help="λ, the penalty weight (default 0)")
    parser.add_argument("--eps", type=float, default=1e-2, help="finite-difference step ε (default 1e-2)")
    parser.add_argument("--tau", type=float, default=1.0, help="temperature τ; 0 = greedy (temperature only)")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--penalty", choices=PENALTY_METHODS, default="fd",
                        help="fd: two perturbed proxy copies with KV caches; jvp: exact forward-mode derivative "
                             "(slow); head: exact for the unembedding alone, one proxy forward (cheaper)")
    parser.add_argument("--proxy-dtype", default=None, help="float32 | bfloat16 | float16 (default: fp32 on CPU, "
                                                            "bf16 on CUDA)")
    parser.add_argument("--dtype", default=None, help="teacher dtype (default: fp32 on CPU, bf16 on CUDA)")
    parser.add_argument("--prompts", required=True, type=Path,
                        help='jsonl with "prompt" (exact model input) or "question" (wrapped in the teacher\'s '
                             "chat template) per line")
    parser.add_argument("--system", default=None, help="system prompt used with 'question' lines")
    parser.add_argument("--output", required=True, type=Path, help="jsonl file to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it is an existing file")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    _add_model_options(parser)
    parser.set_defaults(func=run_generate)


def record_prompt(tokenizer: Any, record: dict[str, Any], system: str | None = None) -> str:
    """The exact model input for a prompts-file line: its "prompt", or its "question" through `format_prompt`."""
    from .prompts import format_prompt

    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    question = record.get("question", record.get("problem"))
    if not isinstance(question, str):
        raise AntidistillError('each prompts line needs a "prompt" or a "question" string')
    return format_prompt(tokenizer, question, system)


def run_generate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .generation import generate
    from .gradient import ProxyGradient
    from .io import check_output, read_jsonl, write_jsonl
    from .loading import load_model, load_tokenizer
    from .sampling import SamplerConfig

    config = SamplerConfig(sampler=args.sampler, tau=args.tau, lam=args.lam, eps=args.eps, top_p=args.top_p,
                           top_k=args.top_k, penalty=args.penalty, seed=args.seed)
    records = read_jsonl(args.prompts)
    if not records:
        raise AntidistillError(f"--prompts {args.prompts} holds no prompts: give a jsonl with one per line")
    check_output(args.output, "--output", (lambda path: path.is_file()) if args.overwrite else None)
    if config.needs_penalty:
        if args.proxy is None or args.gradient is None:
            raise AntidistillError(f"--sampler {args.sampler} with --lam > 0 needs --proxy and --gradient "
                                   "(compute the gradient with `antidistill gradient`)")
        ProxyGradient.check_files(args.gradient)
    state = PartialState(cpu=args.device == "cpu")
    device = args.device or state.device
    tokenizer = load_tokenizer(args.teacher, args.revision, args.trust_remote_code)
    prompts = [record_prompt(tokenizer, r, args.system) for r in records]
    proxy = proxy_tokenizer = gradient = None
    if config.needs_penalty:
        proxy_tokenizer = load_tokenizer(args.proxy, args.revision, args.trust_remote_code)
        from .vocab import check_same_tokenizer

        check_same_tokenizer(tokenizer, proxy_tokenizer, args.teacher, args.proxy)
        proxy = load_model(args.proxy, dtype=args.proxy_dtype, device=device, revision=args.revision,
                           trust_remote_code=args.trust_remote_code)
        gradient = ProxyGradient.load(args.gradient, proxy=proxy)
    teacher = load_model(args.teacher, dtype=args.dtype, device=device, revision=args.revision,
                         trust_remote_code=args.trust_remote_code)
    indices = list(range(state.process_index, len(prompts), state.num_processes))
    traces = generate(teacher, tokenizer, [prompts[i] for i in indices],
                      replace(config, seed=config.seed + state.process_index), proxy=proxy, gradient=gradient,
                      max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, proxy_dtype=args.proxy_dtype,
                      progress=state.is_main_process)
    params = config.as_params()
    params["grad_norm"] = gradient.norm if gradient is not None else None
    rows = [(i, {**records[i], **t.to_dict(), "sampler_config": params}) for i, t in zip(indices, traces)]
    if state.num_processes > 1:
        rows = gather_object(rows)
    if state.is_main_process:
        write_jsonl(args.output, [row for _, row in sorted(rows, key=lambda item: item[0])])
        print(f"{len(rows)} traces ({config.sampler}, τ={config.tau}, λ={config.lam}) -> {args.output.resolve()}")
    state.wait_for_everyone()
    return 0
