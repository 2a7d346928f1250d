"""Hostile input: nothing from model text ever runs, and every call returns in bounded time from any thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness_plugin.answers import Verdict, is_equivalent, judge_equivalence, score, shutdown, warm_up
from harness_plugin.answers.worker import WorkerError, WorkerPool, WorkerStartupError, get_pool

LIMIT_S = 1.0
SLACK_S = 2.5  # killing and reaping a worker on a loaded 2-core machine


def _hostile(marker: Path) -> list[str]:
    path = str(marker)
    return [
        f"__import__('os').system('touch {path}')",
        f"(lambda: __import__('os').system('touch {path}'))()",
        f"().__class__.__bases__[0].__subclasses__()[0].__init__.__globals__['open']('{path}', 'w')",
        f"eval(\"open('{path}', 'w')\")",
        f"\\boxed{{eval(\"open('{path}', 'w')\")}}",
        f"\\boxed{{exec(\"import os; os.system('touch {path}')\")}}",
        f"\\text{{__import__('os').system('touch {path}')}}",
        f"\\frac{{__import__('os')}}{{open('{path}','w')}}",
        f"Symbol('x').__class__.__init__.__globals__['__builtins__']['exec']('open(\"{path}\",\"w\")')",
        f"x = __import__('os').system('touch {path}')",
        f"(__import__('os'), open('{path}', 'w'))",
        f"\\{{__import__('os').system('touch {path}')\\}}",
        f"\\begin{{pmatrix}} __import__('os') & open('{path}','w') \\end{{pmatrix}}",
    ]


@pytest.fixture(scope="module", autouse=True)
def _worker_ready() -> None:
    warm_up()  # start-up time is not part of the per-call bound


def test_hostile_text_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for hostile in _hostile(marker):
        for reference in ("1", "x", hostile, "\\frac{1}{2}"):
            start = time.perf_counter()
            is_equivalent(hostile, reference)
            is_equivalent(reference, hostile)
            assert time.perf_counter() - start < 2 * (LIMIT_S + SLACK_S)
        for dataset in ("gsm8k", "math"):
            score(f"Reasoning...\n\\boxed{{{hostile}}}", "1", dataset)
            score(f"The answer is {hostile}\n\n**Final Answer**\n\\[\\boxed{{{hostile}", "1", dataset)
    assert not marker.exists()


def test_only_number_tokens_reach_sympys_string_parser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """latex2sympy2_extended calls sympy.Number(token) → sympify → parse_expr; only lexer number tokens get there."""
    import re

    import sympy.parsing.sympy_parser as sympy_parser

    from harness_plugin.answers import symbolic

    seen: list[str] = []
    original = sympy_parser.parse_expr

    def recording(text, *args, **kwargs):
        seen.append(text)
        return original(text, *args, **kwargs)

    monkeypatch.setattr(sympy_parser, "parse_expr", recording)
    symbolic.parse.cache_clear()
    for hostile in _hostile(tmp_path / "pwned"):
        symbolic.equal(hostile, "1.5e3 + 2\\sqrt{2} + 15\\%", 1e-6)
    symbolic.equal("1.5E3 + \\frac{3}{4} + 0.25", "1500.5 + 0.5", 1e-6)
    assert seen, "expected number tokens to reach sympify"
    assert all(re.fullmatch(r"\s*[0-9.]+(?:E[-+]?[0-9]+)?\s*", text) for text in seen), seen
    assert not (tmp_path / "pwned").exists()


BLOW_UPS = [
    "9^{9^{9^9}}",
    "(10^{100000})!",
    "1" * 100_000,
    "x" * 100_000,
    "{" * 5000 + "1" + "}" * 5000,
    "(" * 3000 + "1" + ")" * 3000,
    "\\sqrt{" * 2000 + "2" + "}" * 2000,
    "\\frac{1}{" * 500 + "2" + "}" * 500,
    "2^{2^{2^{2^{2^{2}}}}}",
    "10^{10^{10}}",
    ",".join(["1"] * 5000),
    "\\boxed{" * 10_000,
    # just under the input cap, so they reach the structural and symbolic stages
    "1" + " " * 3990 + "x",
    "\\{" + ",".join(["\\{" + ",".join(["\\{" + ",".join("123456789abc") + "\\}"] * 12) + "\\}"] * 3) + "\\}",
    "(" + ",".join(["(" + ",".join(["(" + ",".join(["x"] * 10) + ")"] * 10) + ")"] * 10) + ")",
    "\\pm" * 1300,
    "=" * 3990,
    "\\frac" * 790,
]


@pytest.mark.parametrize("answer", BLOW_UPS, ids=lambda text: text[:24])
def test_blow_ups_return_false_in_bounded_time(answer: str) -> None:
    start = time.perf_counter()
    assert not is_equivalent(answer, "5")
    assert not is_equivalent("5", answer)
    assert time.perf_counter() - start < 2 * (LIMIT_S + SLACK_S)


def test_nested_unordered_structures_have_a_work_budget() -> None:
    def nested(last: str) -> str:
        inner = ["\\{" + ",".join([*"123456789ab", last if i == 11 else "c"]) + "\\}" for i in range(12)]
        return "\\{" + ",".join(["\\{" + ",".join(inner) + "\\}"] * 3) + "\\}"

    start = time.perf_counter()
    assert not is_equivalent(nested("d"), nested("e"))
    assert is_equivalent(nested("d"), nested("d").replace("1,2", "2,1"))
    assert time.perf_counter() - start < 2.0


# Passes every size guard but is slow in sympy: only the wall-clock limit stops it.
SLOW = "(x+y+z+1)^{30}"
SLOW_REFERENCE = "(x+y+z)^{30}"  # sympy spends minutes simplifying the difference


def test_a_slow_comparison_is_cut_off_in_a_worker_thread_and_the_worker_replaced() -> None:
    pool = get_pool()
    pool.warm_up()
    before = set(pool.pids())
    results: dict[str, object] = {}

    def work() -> None:
        start = time.perf_counter()
        results["value"] = is_equivalent(SLOW, SLOW_REFERENCE, timeout=LIMIT_S)
        results["elapsed"] = time.perf_counter() - start

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert results["value"] is False
    assert results["elapsed"] < LIMIT_S + SLACK_S
    killed = before - set(pool.pids())
    assert killed, "the timed-out worker should have been removed from the pool"
    assert not any(_alive(pid) for pid in killed)
    # a replacement was started at once: ordinary symbolic work still succeeds
    assert is_equivalent("2\\sqrt{2}", "\\sqrt{8}")


def test_concurrent_calls_from_many_threads() -> None:
    cases = [
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}", True),
        ("2(x+1)", "2x+2", True),
        ("(1,2)", "(2,1)", False),
        ("3+4i", "4i+3", True),
        ("x^2", "x^3", False),
        ("0.5", "\\frac12", True),
        ("\\sqrt{12}", "2\\sqrt{3}", True),
        ("\\pi", "3.14", False),
    ]

    def check(case: tuple[str, str, bool]) -> tuple[bool, bool]:
        return is_equivalent(case[0], case[1]), case[2]

    with ThreadPoolExecutor(max_workers=4) as executor:
        outcomes = list(executor.map(check, cases))
    assert all(got == expected for got, expected in outcomes)


def test_a_comparison_cut_off_by_the_limit_is_undecided_not_different() -> None:
    assert judge_equivalence(SLOW, SLOW_REFERENCE, timeout=LIMIT_S) is Verdict.UNDECIDED
    assert judge_equivalence("2\\sqrt{2}", "\\sqrt{8}") is Verdict.EQUIVALENT
    assert judge_equivalence("x^2", "x^3") is Verdict.DIFFERENT


def test_no_call_under_load_exceeds_its_bound() -> None:
    """8 threads, slow and ordinary comparisons mixed, 2 workers: waiting for a worker counts against the limit,
    so every call returns within its timeout plus the cost of killing a worker (a bound, not a speed target)."""
    cases = [(SLOW, SLOW_REFERENCE), ("2(x+1)", "2x+2"), ("\\sqrt{12}", "2\\sqrt{3}"), ("x+1", "x+2")] * 4

    def timed(case: tuple[str, str]) -> tuple[float, Verdict]:
        start = time.perf_counter()
        verdict = judge_equivalence(*case, timeout=LIMIT_S)
        return time.perf_counter() - start, verdict

    with ThreadPoolExecutor(max_workers=8) as executor:
        outcomes = list(executor.map(timed, cases))
    slowest = max(elapsed for elapsed, _ in outcomes)
    assert slowest < LIMIT_S + SLACK_S, f"a call took {slowest:.2f} s"
    assert all(verdict is Verdict.UNDECIDED for (elapsed, verdict), case in zip(outcomes, cases) if case[0] == SLOW)
    assert not any(verdict is Verdict.EQUIVALENT for (_, verdict), case in zip(outcomes, cases) if case[1] == "x+2")


MARKER_MODULE = "import pathlib\npathlib.Path(__file__).with_suffix('.imported').touch()\n"


def test_workers_import_nothing_from_the_callers_folder(tmp_path: Path) -> None:
    """Modules named like the worker's libraries, placed in the caller's current folder, are never imported."""
    for name in ("math_verify", "sympy", "latex2sympy2_extended"):
        (tmp_path / f"{name}.py").write_text(MARKER_MODULE)
    script = (
        "import os, sys; os.chdir(sys.argv[1]); "
        "from harness_plugin.answers import is_equivalent; print(is_equivalent('2(x+1)', '2x+2'))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert not list(tmp_path.glob("*.imported")), "a worker imported a module from the caller's folder"


def test_a_worker_that_cannot_start_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broken installation must raise, not silently score every symbolic answer as wrong."""
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    pool = WorkerPool(size=1)
    try:
        with pytest.raises(WorkerStartupError, match="cannot start"):
            pool.compare([("x", "y")], 1e-6, timeout=1.0)
    finally:
        pool.close()


def test_shutdown_terminates_every_worker() -> None:
    pool = get_pool()
    pool.warm_up()
    pids = pool.pids()
    assert pids
    shutdown()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(WorkerError):
        pool.compare([("x", "x")], 1e-6, timeout=1.0)  # a closed pool refuses work; get_pool() makes a new one


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a reaped child is gone; a zombie counts as dead)."""
    status = Path(f"/proc/{pid}/status")
    if status.parent.parent.exists() and Path("/proc/self").exists():
        return status.exists() and "zombie" not in status.read_text()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
