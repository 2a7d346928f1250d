"""`antidistill bench perf`: what antidistillation sampling costs, against its measured floor and two baselines.

One run times teacher sampling (`plain`), one proxy copy alone (`proxy`: the floor's second term), our sampler
(`ads-fd`, its ablation `ads-fd-no-transpose`, `ads-head`, `ads-jvp`, `permutation`) and two baselines written
from the description of the paper's released code (`reference`: two proxy copies behind a KV-cache wrapper,
called one after the other; `nocache`: the same copies re-run over the whole prefix every step) for a grid of
batch sizes and lengths, on random-initialised models of realistic shape and on any checkpoints given. Heavy
imports happen in the handler, so `antidistill --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("plain", "proxy", "ads-fd", "ads-fd-no-transpose", "ads-head", "ads-jvp", "permutation", "reference",
           "nocache")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perf", help="benchmark the sampler's speed and memory against its measured floor and baselines",
        description="Time generation (tokens/s, wall and CPU seconds, peak memory) for every sampler and two "
                    "baselines of the paper's code, over batch sizes and lengths, on random-initialised models "
                    "(speed does not depend on the weights) and on checkpoints given with --teacher/--proxy. "
                    "Every cell also times the teacher alone (plain) and one proxy copy alone (proxy); a method's "
                    "floor_ratio is its time over t_plain + 2·t_proxy (fd, permutation, baselines) or "
                    "t_plain + t_proxy (head). The default grid is batch 1, 8, 32 x 64, 256, 1024 new tokens after "
                    "256-token prompts, 5 interleaved repeats; --quick runs a small grid in minutes on a CPU.")
    parser.add_argument("--quick", action="store_true",
                        help="small models and grid (batch 1, 8 x 32, 64 tokens, 64-token prompts, 3 repeats): "
                             "minutes on a laptop CPU")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="write a README-ready 'Performance' section (table, targets, machine) to this file")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                        help="default: all; plain and proxy (the floor's terms) always run")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--new-tokens", nargs="+", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed generations per row (median reported; rows are interleaved round by round; "
                             "default 5, quick 3)")
    parser.add_argument("--prompt-length", type=int, default=None,
                        help="random prompt tokens per sequence (default 256, as a system prompt + chat template "
                             "+ question; quick 64)")
    parser.add_argument("--shape", choices=("realistic", "small", "tiny", "7b-3b"), default=None,
                        help="random-model shapes (default: realistic; small with --quick; tiny is for tests; "
                             "7b-3b is the paper's pair, for a GPU)")
    parser.add_argument("--resident", choices=("all", "one"), default=None,
                        help="all: every method's proxy copies stay built and all methods of a cell are "
                             "interleaved (CPU default); one: methods run grouped by the copies they need, freed "
                             "between groups, so the device holds one method's copies at a time (CUDA default)")
    parser.add_argument("--fidelity-check", action=argparse.BooleanOptionalAction, default=None,
                        help="compare fd in the proxy dtype with fp32 jvp on a few prefixes at the start and warn "
                             "if |sin θ| > 0.1, naming the ε to use (default: on unless the proxy is float32)")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary of the random models")
    parser.add_argument("--no-random", action="store_true", help="only benchmark the checkpoints given")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (hub name or folder), with --proxy")
    parser.add_argument("--proxy", default=None, help="proxy checkpoint sharing the teacher's tokenizer")
    parser.add_argument("--gradient", type=Path, default=None,
                        help="proxy gradient folder (default: a gradient on random tokens; speed does not care)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default=None, help="teacher dtype (default: fp32 on CPU, bf16 on CUDA)")
    parser.add_argument("--proxy-dtype", default=None, help="proxy-copy dtype (default: fp32 on CPU, bf16 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--lam", type=float, default=1.0, help="λ (speed does not depend on it)")
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--eps", type=float, default=1e-2)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-nocache-tokens", type=int, default=None,
                        help="skip nocache rows beyond this many new tokens (its cost grows with the square of "
                             "the length; default 256, quick 64)")
    parser.add_argument("--max-nocache-batch", type=int, default=None,
                        help="skip nocache rows beyond this batch size (default 32, quick 1)")
    parser.add_argument("--max-jvp-tokens", type=int, default=None,
                        help="skip ads-jvp rows beyond this many new tokens (it re-runs the prefix every step; "
                             "default 64, quick 32)")
    parser.add_argument("--max-jvp-batch", type=int, default=None, help="skip ads-jvp rows beyond this batch "
                                                                        "(default 8, quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revision", default=None, help="hub revision of the checkpoints")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow model code from the hub to run (off by default: only for models you trust)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from .run import run_from_args

    return run_from_args(args)
